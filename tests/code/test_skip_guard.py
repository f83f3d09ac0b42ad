"""The skip guard: under CI=true a skip or xfail outside the allow-list fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import skip_guard
from tests.conftest import REPO

PROBE = """
import pytest

def test_passes():
    assert 1 + 1 == 2

def test_needs_a_service():
    pytest.skip("service absent")

@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert False
"""


def run_probe(
    tmp_path: Path, ci: str | None, allowed: list[str], workers: int = 0
) -> subprocess.CompletedProcess:
    """Run pytest on PROBE with the platform's hooks, ``CI`` and an allow-list (with
    ``workers``, in pytest-xdist workers as ``make test`` runs it)."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    ini = "\n    ".join(allowed)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nci_allowed_skips =\n    {ini}\n")
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # third-party plugins cost seconds each
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
        + (["-p", "xdist", "-n", str(workers), "--dist", "loadgroup"] if workers else [])
        + ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_ci_fails_on_skips_and_names_them(tmp_path):
    done = run_probe(tmp_path, "true", [])
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "1 passed, 1 skipped, 1 xfailed" in done.stdout
    assert "2 test(s) skipped or xfailed outside ci_allowed_skips" in done.stdout
    assert "test_probe.py::test_needs_a_service: service absent" in done.stdout
    assert "test_probe.py::test_known_bug: xfail: known bug" in done.stdout


def test_ci_fails_on_skips_in_xdist_workers(tmp_path):
    """The skips of every worker reach the controller, which fails the run once."""
    done = run_probe(tmp_path, "true", [], workers=2)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "1 passed, 1 skipped, 1 xfailed" in done.stdout
    assert done.stdout.count("2 test(s) skipped or xfailed outside ci_allowed_skips") == 1
    assert "test_probe.py::test_needs_a_service: service absent" in done.stdout


def test_group_suffix_is_not_part_of_the_node_id():
    assert skip_guard.plain_nodeid("t.py::test_a@tests/t.py") == "t.py::test_a"
    assert skip_guard.plain_nodeid("t.py::test_a[x@y]@shared-dev") == "t.py::test_a[x@y]"
    assert skip_guard.plain_nodeid("t.py::test_a[x@y]") == "t.py::test_a[x@y]"
    assert skip_guard.plain_nodeid("t.py::test_a") == "t.py::test_a"


def test_outside_ci_skips_pass(tmp_path):
    done = run_probe(tmp_path, None, [])
    assert done.returncode == pytest.ExitCode.OK, done.stdout
    assert "skip guard" not in done.stdout


def test_allow_list_entries_pass_on_ci(tmp_path):
    allowed = ["*::test_needs_a_service | needs the service", "*::test_known_bug | upstream"]
    done = run_probe(tmp_path, "true", allowed)
    assert done.returncode == pytest.ExitCode.OK, done.stdout


def test_partial_allow_list_names_only_the_rest(tmp_path):
    done = run_probe(tmp_path, "true", ["*::test_known_bug | upstream"])
    assert done.returncode == pytest.ExitCode.TESTS_FAILED
    assert "1 test(s) skipped or xfailed" in done.stdout
    assert "test_needs_a_service" in done.stdout.split("skip guard")[-1]
    assert "test_known_bug" not in done.stdout.split("skip guard")[-1]


def test_entry_without_reason_is_rejected(tmp_path):
    done = run_probe(tmp_path, "true", ["*::test_known_bug"])
    assert done.returncode != pytest.ExitCode.OK
    assert "needs 'node id | reason'" in done.stdout + done.stderr


def test_parse_and_match():
    entries = skip_guard.parse_allow_list(["tests/a.py::* | all of a"])
    assert entries == [skip_guard.Allowed("tests/a.py::*", "all of a")]
    assert skip_guard.unexpected({"tests/a.py::t": "x", "tests/b.py::t": "y"}, entries) == {
        "tests/b.py::t": "y"
    }
    assert skip_guard.guard_active({"CI": "true"}) and not skip_guard.guard_active({})


def test_shipped_allow_list_gives_reasons():
    import tomllib

    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    for entry in skip_guard.parse_allow_list(ini[skip_guard.INI_NAME]):
        assert len(entry.reason) > 10, entry
