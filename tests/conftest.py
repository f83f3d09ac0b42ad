"""Shared fixtures: isolated storage, real data sets, and real service processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import churn_assets  # noqa: F401  (first: sets OMP_WAIT_POLICY before any model library loads)
from tests import skip_guard

if TYPE_CHECKING:
    from tests.integration.conftest import DevPlatform

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        skip_guard.INI_NAME,
        "under CI=true, skipped/xfailed tests allowed to pass the run: 'node id | reason'",
        type="linelist",
        default=[],
    )


#: node id → reason of every skipped or xfailed test in this session
_SKIPPED: dict[str, str] = {}
_ALLOWED = pytest.StashKey[list[skip_guard.Allowed]]()


def pytest_configure(config: pytest.Config) -> None:
    _SKIPPED.clear()
    # a malformed allow-list fails at start-up, not after a long run
    config.stash[_ALLOWED] = skip_guard.parse_allow_list(config.getini(skip_guard.INI_NAME))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        why = f"xfail: {report.wasxfail}"
    elif isinstance(report.longrepr, tuple):
        why = str(report.longrepr[2]).removeprefix("Skipped: ")
    else:
        why = str(report.longrepr)
    _SKIPPED[skip_guard.plain_nodeid(report.nodeid)] = why


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, a skip or xfail outside the allow-list fails the run, by name (under
    xdist, in the controller, which receives every worker's reports)."""
    if not skip_guard.guard_active() or _xdist_worker(session.config):
        return
    bad = skip_guard.unexpected(_SKIPPED, session.config.stash[_ALLOWED])
    if not bad:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"CI=true: {len(bad)} test(s) skipped or xfailed outside {skip_guard.INI_NAME}:"]
    lines += [f"  {nodeid}: {why}" for nodeid, why in bad.items()]
    text = "\n".join(lines)
    if reporter is not None:
        reporter.write_sep("=", "skip guard", red=True, bold=True)
        reporter.write_line(text)
    else:
        print(text, file=sys.stderr)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def real_data_dir() -> Path:
    """The real public data sets (``$CHURN_REAL_DATA_DIR``, default ../shared/data)."""
    return Path(os.environ.get("CHURN_REAL_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers (any HTTP status) or fail."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except Exception as e:  # connection refused while starting
            last = e
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own storage root and no stray CHURN_* settings."""
    for key in list(os.environ):
        if key.startswith("CHURN_") and key != "CHURN_REAL_DATA_DIR":
            monkeypatch.delenv(key, raising=False)
    storage = tmp_path / "storage"
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    monkeypatch.setenv("CHURN_REAL_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    # mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ: a server a test
    # started (and stopped) must not be where the next test in this worker tracks
    if "MLFLOW_TRACKING_URI" in os.environ:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"])
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
    return storage


@pytest.fixture
def real_data() -> Path:
    """The real data folder; tests using it are skipped when it is absent."""
    d = real_data_dir()
    if not (d / "telco_customer_churn.csv").exists():
        pytest.skip(f"real data sets not found in {d} (set CHURN_REAL_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def moto_server():
    """A real S3-compatible HTTP server (moto_server) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch):
    """Credentials and endpoint for the moto server; returns a boto3 client factory."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CHURN_S3_ENDPOINT_URL", moto_server)

    def client():
        return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")

    return client


#: Stops the shared `churn dev` (see :func:`platform_dev`); closing it twice is harmless.
_SHARED_DEV = contextlib.ExitStack()


@pytest.fixture(scope="session")
def platform_dev() -> Iterator[DevPlatform]:
    """The one shared `churn dev` of the session (see ``tests/integration/conftest.py``). It
    stops after the last test that uses it (:func:`pytest_runtest_teardown`), so its daemon
    and sidecar do not load the machine under the tests after it."""
    from tests.integration.conftest import Webhook, own_tmp, running_dev

    with _SHARED_DEV:
        hook = _SHARED_DEV.enter_context(contextlib.closing(Webhook()))
        tmp = _SHARED_DEV.enter_context(own_tmp("churn-dev-"))
        yield _SHARED_DEV.enter_context(running_dev(tmp, webhook=hook))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared `churn dev` once no later test of the session uses it."""
    if "platform_dev" not in getattr(item, "fixturenames", ()):
        return
    items = item.session.items
    later = items[items.index(item) + 1 :] if item in items else []
    if not any("platform_dev" in getattr(i, "fixturenames", ()) for i in later):
        _SHARED_DEV.close()


#: Under pytest-xdist (``make test`` runs two workers with ``--dist loadgroup``): the group of
#: the tests that share the one `churn dev`, and the work units sent out first, longest first,
#: so that both workers end at about the same time. Everything else keeps collection order.
SHARED_DEV_GROUP = "shared-dev"
FIRST_GROUPS = (
    SHARED_DEV_GROUP,
    "tests/integration/test_production_stack.py",
    "tests/integration/test_demo_cli.py",
    "tests/integration/test_self_retraining.py",
    "serving",
    "tests/integration/test_per_step_s3.py",
)


def _xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process (not in the controller or a plain run)."""
    return hasattr(config, "workerinput")


def xdist_group_of(item: pytest.Item) -> str:
    """The xdist work unit of a test: the tests of the shared `churn dev` together, the
    sidecar tests (one trained ``deployment`` per session) together, otherwise the module
    (its module-scoped fixtures are built once)."""
    if "platform_dev" in item.fixturenames:
        return SHARED_DEV_GROUP
    module = item.nodeid.split("::", 1)[0]
    if module.startswith("tests/serving/"):
        return "serving"
    return module


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (in a worker)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its :func:`xdist_group_of`; on an xdist worker, order the long groups
    first (the controller sends work units in this order)."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))
    if _xdist_worker(config):

        def rank(item: pytest.Item) -> int:
            group = xdist_group_of(item)
            return FIRST_GROUPS.index(group) if group in FIRST_GROUPS else len(FIRST_GROUPS)

        items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(scope="session", autouse=True)
def start_shared_platform_early(request: pytest.FixtureRequest) -> None:
    """Start the shared `churn dev` with the session's first test when a later test uses it:
    its start, ingestion and first deployment (minutes on 2 cores, mostly waiting for
    processes and sensor ticks) then overlap the tests before it instead of delaying the
    first test that needs it. A failed start is not this test's failure: the error is cached
    by the fixture and reported by the tests that use the platform."""
    if _xdist_worker(request.config):  # its group is sent first; its worker starts it
        return
    if not any("platform_dev" in item.fixturenames for item in request.session.items):
        return
    with contextlib.suppress(Exception):  # re-raised where the platform is used
        request.getfixturevalue("platform_dev")
