"""`churn seed` (--if-empty, --drift, --force) and the seeding step of `churn dev`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from churn_assets.cli import main

SMALL = ["--customers", "300", "--days", "120"]


@pytest.fixture
def landing(isolated_env: Path) -> Path:
    return isolated_env / "landing" / "synthetic"


def files(landing: Path) -> dict[str, str]:
    """Relative path → sha256 of every data file in the landing zone (not the dot file
    recording what the base data was seeded with, which nothing ingests)."""
    return {
        str(p.relative_to(landing)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(landing.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def seed(*args: str):
    return CliRunner().invoke(main, ["seed", *args], catch_exceptions=False)


def test_seed_writes_customers_and_transactions(landing):
    done = seed(*SMALL)
    assert done.exit_code == 0, done.output
    assert set(files(landing)) == {
        "customers/batch-0000.parquet",
        "transactions/batch-0000-part-00000.parquet",
    }
    assert "wrote 300 customers" in done.output


def test_seed_refuses_to_overwrite(landing):
    seed(*SMALL)
    before = files(landing)
    done = seed(*SMALL, "--seed", "7")
    assert done.exit_code != 0
    assert "already has data: use --force" in done.output
    assert files(landing) == before


def test_if_empty_seeds_an_empty_zone_and_leaves_a_full_one(landing):
    done = seed(*SMALL, "--if-empty")
    assert done.exit_code == 0 and "wrote 300 customers" in done.output
    before = files(landing)
    done = seed(*SMALL, "--if-empty", "--seed", "7")
    assert done.exit_code == 0
    assert "already has data: nothing to do" in done.output
    assert files(landing) == before


def test_drift_adds_numbered_batches_beside_the_data(landing):
    seed(*SMALL)
    before = files(landing)
    for _ in range(2):
        done = seed(*SMALL, "--drift")
        assert done.exit_code == 0 and "drifted" in done.output, done.output
    after = files(landing)
    assert {k: after[k] for k in before} == before  # the first batch is untouched
    added = sorted(set(after) - set(before))
    assert added == [
        "customers/drift-0001.parquet",
        "customers/drift-0002.parquet",
        "transactions/drift-0001-part-00000.parquet",
        "transactions/drift-0002-part-00000.parquet",
    ]


def test_a_drift_batch_after_one_was_removed_is_a_new_one(landing):
    """The next name was the count of batches present plus one: with drift-0001 removed,
    a new batch was named drift-0002 and written over the batch of that name (the same
    data, seeded by the name), so nothing new landed while the command said it wrote a
    batch. It takes the number after the highest now, and says which."""
    seed(*SMALL)
    for _ in range(2):
        seed(*SMALL, "--drift")
    for p in landing.glob("*/drift-0001*"):
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in landing.glob("*/drift-0002*")}
    done = seed(*SMALL, "--drift")
    assert done.exit_code == 0, done.output
    assert {p: p.stat().st_mtime_ns for p in landing.glob("*/drift-0002*")} == kept
    assert sorted(k for k in files(landing) if "drift" in k) == [
        "customers/drift-0002.parquet",
        "customers/drift-0003.parquet",
        "transactions/drift-0002-part-00000.parquet",
        "transactions/drift-0003-part-00000.parquet",
    ]
    assert "as batch drift-0003" in done.output
    assert not list(landing.glob(".*.claim"))  # each claim given back


def test_two_drift_batches_seeded_at_once_are_two_batches(landing):
    """Two `churn seed --drift` started together both counted the same batches and wrote
    the same name: one batch landed, and both said they wrote one. Each claims its name
    first: two batches, each named in its command's output."""
    import subprocess
    import sys

    seed(*SMALL)
    churn = str(Path(sys.executable).parent / "churn")
    started = [
        subprocess.Popen([churn, "seed", "--drift"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    said = [p.communicate(timeout=300)[0] for p in started]
    assert [p.returncode for p in started] == [0, 0], said
    assert sorted(k for k in files(landing) if k.startswith("customers/drift")) == [
        "customers/drift-0001.parquet",
        "customers/drift-0002.parquet",
    ]
    named = sorted(line.rsplit(" as batch ", 1)[-1].strip() for line in said)
    assert named == ["drift-0001", "drift-0002"], said


def test_a_drift_batch_takes_the_base_data_parameters_and_refuses_others(landing):
    """A drift batch written with another seed than the base data revived its churned
    customers (after a few, the training set had 4 churned customers of 2,855) and one
    with other counts added customers nobody landed; it now takes the base's values."""
    seed(*SMALL, "--seed", "7")
    before = files(landing)
    refused = CliRunner().invoke(main, ["seed", "--drift", "--seed", "8"])
    assert refused.exit_code == 2
    assert "written with --customers 300 --days 120 --seed 7" in refused.output
    assert "(leave out --seed to take them)" in refused.output
    assert files(landing) == before

    done = seed("--drift")  # no values given: the base's
    assert done.exit_code == 0, done.output
    assert "wrote 75 customers" in done.output and "seed 7, drifted" in done.output
    same = seed("--drift", "--seed", "7", "--customers", "300")  # the base's, given
    assert same.exit_code == 0 and "seed 7, drifted" in same.output


def test_force_replaces_everything(landing):
    seed(*SMALL)
    seed(*SMALL, "--drift")
    before = files(landing)
    done = seed(*SMALL, "--force", "--seed", "7")
    assert done.exit_code == 0, done.output
    after = files(landing)
    assert set(after) == {
        "customers/batch-0000.parquet",
        "transactions/batch-0000-part-00000.parquet",
    }  # the drifted batch is gone
    assert after["customers/batch-0000.parquet"] != before["customers/batch-0000.parquet"]


@pytest.fixture
def started(monkeypatch) -> list[int]:
    """`churn dev` with its processes replaced by a recorder of the requested port."""
    import churn_assets.devserver

    calls: list[int] = []

    def run_dev(port: int = 3000, root=None) -> int:
        calls.append(port)
        return 0

    monkeypatch.setattr(churn_assets.devserver, "run_dev", run_dev)
    return calls


def test_dev_seeds_an_empty_landing_zone_first(landing, started):
    done = CliRunner().invoke(main, ["dev", "--port", "3999"])
    assert done.exit_code == 0, done.output
    assert started == [3999]
    assert "seeding the landing zone" in done.output
    customers = pl.read_parquet(landing / "customers" / "batch-0000.parquet")
    assert customers.height == 10_000  # the documented default data set


def test_dev_leaves_existing_data_and_honours_no_seed(landing, isolated_env, started, monkeypatch):
    seed(*SMALL)
    before = files(landing)
    done = CliRunner().invoke(main, ["dev"])
    assert done.exit_code == 0 and "seeding" not in done.output
    assert files(landing) == before

    other = isolated_env.parent / "other"
    monkeypatch.setenv("CHURN_STORAGE_URL", str(other))
    done = CliRunner().invoke(main, ["dev", "--no-seed"])
    assert done.exit_code == 0 and not (other / "landing").exists()
    assert started == [3000, 3000]


def test_hold_back_lands_the_history_without_its_last_days_then_the_rest(
    landing, isolated_env: Path
):
    done = seed(*SMALL, "--hold-back-days", "30")
    assert done.exit_code == 0, done.output
    assert "held back" in done.output
    first = pl.read_parquet(landing / "transactions" / "batch-0000.parquet")
    full_end = first["timestamp"].max()
    held = isolated_env / "held-back" / "synthetic"
    assert (held / "held-back.json").exists()
    done = seed("--land-held-back")
    assert done.exit_code == 0, done.output
    later = pl.read_parquet(landing / "transactions" / "batch-0001.parquet")
    assert later.height > 0 and later["timestamp"].min() > full_end  # only the later days
    # together they are the whole generated history, nothing twice
    whole = pl.concat([first, later])
    assert whole.height == whole.unique().height
    assert not held.exists()
    again = seed("--land-held-back")
    assert again.exit_code != 0 and "nothing is held back" in again.output


def test_hold_back_must_leave_some_history(landing):
    done = seed(*SMALL, "--hold-back-days", "120")
    assert done.exit_code != 0 and "below --days" in done.output
    assert not landing.exists() or not files(landing)


def test_a_wrong_setting_ends_in_one_line_naming_it(monkeypatch):
    """An unknown data set or an unreachable storage endpoint: the command ends with one
    line naming the setting to fix, not a traceback (CHURN_DEBUG=1 shows it)."""
    from click.testing import CliRunner

    from churn_assets.cli import main

    monkeypatch.setenv("CHURN_DATASET", "nope")
    result = CliRunner().invoke(main, ["rollback"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown data set 'nope'")
    assert result.output.rstrip().endswith("(CHURN_DATASET=nope)")
    assert "Traceback" not in result.output
    monkeypatch.setenv("CHURN_DEBUG", "1")
    result = CliRunner().invoke(main, ["rollback"])
    assert result.exception is not None and type(result.exception).__name__ == "DatasetConfigError"


def test_an_unknown_dataset_option_is_named_and_demo_says_which_setting(monkeypatch):
    """``--dataset nope``: the line named ``CHURN_DATASET=synthetic``, a setting the user
    never made, and ``churn demo`` named none and ignored ``CHURN_DEBUG=1``; the line now
    names the option (or the variable) and ``churn demo`` shows the traceback in debug."""
    from click.testing import CliRunner

    from churn_assets.cli import main

    monkeypatch.delenv("CHURN_DEBUG", raising=False)
    monkeypatch.delenv("CHURN_DATASET", raising=False)
    for args in (["rollback", "--dataset", "nope"], ["demo", "--dataset", "nope"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.startswith("Error: unknown data set 'nope'"), result.output
        assert result.output.rstrip().endswith("(--dataset nope)"), result.output
    monkeypatch.setenv("CHURN_DATASET", "nope")
    result = CliRunner().invoke(main, ["demo"])
    assert result.output.rstrip().endswith("(CHURN_DATASET=nope)"), result.output
    monkeypatch.setenv("CHURN_DEBUG", "1")
    result = CliRunner().invoke(main, ["demo"])
    assert type(result.exception).__name__ == "DatasetConfigError"


def test_a_storage_path_under_a_file_ends_in_one_line_naming_the_paths(tmp_path, monkeypatch):
    """``CHURN_LANDING_URL`` (or the storage, or ``DAGSTER_HOME``) under a regular file: one
    line naming the error and the path settings, not a traceback."""
    from click.testing import CliRunner

    from churn_assets.cli import main

    (tmp_path / "afile").write_text("")
    monkeypatch.delenv("CHURN_DEBUG", raising=False)
    monkeypatch.setenv("CHURN_LANDING_URL", str(tmp_path / "afile" / "landing"))
    result = CliRunner().invoke(main, ["seed", "--customers", "100", "--days", "120"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: NotADirectoryError: ")
    assert f"CHURN_LANDING_URL={tmp_path / 'afile' / 'landing'}" in result.output
    assert "Traceback" not in result.output


def test_a_mistyped_storage_url_or_setting_ends_in_one_line(tmp_path, monkeypatch):
    """``s3:/bucket`` became a local folder named ``s3:`` under the working directory, and a
    wrong-case ``CHURN_ENV`` a traceback naming a Python field: one line naming the
    variable and its value instead, and nothing written. An empty storage URL is the
    default, and ``file:///abs`` the local path."""
    from click.testing import CliRunner

    from churn_assets.cli import main
    from churn_assets.lib.settings import ChurnSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHURN_DEBUG", raising=False)
    monkeypatch.delenv("CHURN_LANDING_URL", raising=False)
    said = {}
    wrong = (
        ("CHURN_STORAGE_URL", "s3:/bucket"),
        ("CHURN_ENV", "Local"),
        ("CHURN_MLFLOW_NAMESPACE", "Prod EU"),  # would start MLflow names
    )
    for name, value in wrong:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            result = CliRunner().invoke(main, ["seed", "--customers", "100", "--days", "120"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        said[name] = result.output
    assert said["CHURN_STORAGE_URL"].startswith(
        "Error: CHURN_STORAGE_URL='s3:/bucket' looks like a URL missing a slash: write s3://"
    )
    assert said["CHURN_ENV"].startswith("Error: CHURN_ENV='Local': Input should be 'local'")
    assert said["CHURN_MLFLOW_NAMESPACE"].startswith(
        "Error: CHURN_MLFLOW_NAMESPACE='Prod EU': it takes a short name of lower-case letters"
    )
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("CHURN_STORAGE_URL", "")
    assert ChurnSettings().resolved_storage_url == str(tmp_path / ".churn" / "storage")
    monkeypatch.setenv("CHURN_STORAGE_URL", f"file://{tmp_path}/st/")
    assert ChurnSettings().resolved_storage_url == str(tmp_path / "st")


def test_an_unknown_served_data_set_ends_in_one_line(tmp_path):
    """``CHURN_SERVING_DATASETS`` naming a data set that does not exist: ``churn serve``
    and ``churn-serve`` exit 1 with one line naming the setting, not a traceback."""
    import os
    import subprocess

    from tests.conftest import BIN, free_port

    env = {
        **os.environ,
        "CHURN_SERVING_DATASETS": "telco,nope",
        "CHURN_STORAGE_URL": str(tmp_path),
        "CHURN_SERVING_PORT": str(free_port()),
    }
    env.pop("CHURN_DEBUG", None)
    for argv in ([str(BIN / "churn"), "serve"], [str(BIN / "churn-serve")]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if "unknown data sets" in line]
        assert lines and "CHURN_SERVING_DATASETS names unknown data sets ['nope']" in lines[0]


def test_a_taken_port_is_said_before_anything_loads(tmp_path):
    """``churn serve`` / ``churn-serve`` on a port another program holds: exit 1 at once
    with one line naming the port and how to move it (uvicorn said only "[Errno 98]" after
    every data set had loaded)."""
    import os
    import socket
    import subprocess

    from tests.conftest import BIN

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "CHURN_STORAGE_URL": str(tmp_path), "CHURN_SERVING_PORT": str(port)}
        env.pop("CHURN_DEBUG", None)
        for argv in ([str(BIN / "churn"), "serve"], [str(BIN / "churn-serve")]):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1, done.stderr
            assert "Traceback" not in done.stderr
            assert (
                f"nothing started: port {port} on 127.0.0.1 (the prediction sidecar) is taken"
                in done.stderr
            )
            assert "--port <other> (or CHURN_SERVING_PORT)" in done.stderr


def test_a_damaged_pointer_is_named_in_the_error(tmp_path):
    """A half-written current.json: reading it names the file, not only the JSON position."""
    from churn_assets.lib import deployment as dep
    from churn_assets.lib.storage import Storage

    storage = Storage(str(tmp_path))
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "current.json").write_text('{"version": "v2026')
    with pytest.raises(ValueError, match=r"current\.json is not valid JSON \(damaged\?\)"):
        dep.read_current(storage)


def test_an_unreachable_tracking_server_is_said_before_the_demo_runs(tmp_path):
    """``MLFLOW_TRACKING_URI`` naming a server that does not answer: ``churn demo --json``
    said so only from the first model set, after ingestion and the training set, as the
    raw MlflowException; now at once, naming the settings, and nothing is written."""
    import json
    import os
    import subprocess

    from tests.conftest import BIN, free_port

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "CHURN_STORAGE_URL": str(tmp_path / "storage"),
    }
    done = subprocess.run(
        [str(BIN / "churn"), "demo", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode != 0 and report["success"] is False
    assert report["error"].startswith("TrackingUnavailableError: MLflow tracking at http")
    assert "MLFLOW_TRACKING_URI" in report["error"]
    assert not (tmp_path / "storage" / "synthetic" / "assets").exists()
