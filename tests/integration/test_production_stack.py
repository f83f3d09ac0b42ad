"""The production stack's services as real processes: Dagster on PostgreSQL
(deploy/dagster.production.yaml), S3 (moto_server in place of MinIO), an MLflow server on
PostgreSQL with S3 artifacts, and the serving sidecar reading S3.

The happy path materializes the whole graph once (module fixture); then faults, in order:
PostgreSQL restarted between runs, the MLflow server down, S3 down for longer than the retry
budget, and a short S3 outage that the assets' retry policy rides out.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from churn_assets.lib import deployment as dep
from tests.conftest import BIN, free_port
from tests.integration.production import (
    BUCKET,
    DAGSTER_DB,
    Outcome,
    Process,
    Stack,
    TcpGate,
    list_keys,
    production_stack,
    restore,
    snapshot,
)

pytestmark = pytest.mark.integration

GRAPH = {
    "raw_customers",
    "raw_transactions",
    "customer_features",
    "current_features",
    "training_set",
    "classification_models",
    "regression_models",
    "deployed_model_version",
    "churn_scores",
    "drift_report",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """PostgreSQL, moto_server and mlflow server running, data seeded, env applied."""
    mp = pytest.MonkeyPatch()
    try:
        with production_stack(tmp_path_factory.mktemp("production")) as st:
            for k, v in st.env.items():
                mp.setenv(k, v)
            yield st
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def first_run(stack: Stack) -> Outcome:
    """The whole graph materialized once on the production instance."""
    run = stack.materialize()
    assert run.success, run.failure_text()
    return run


@pytest.fixture
def env(stack: Stack, isolated_env, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The stack's environment again (conftest's ``isolated_env`` resets CHURN_* per test)."""
    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    return stack


def _pointer(stack: Stack) -> dict:
    pointer = dep.read_current(stack.storage())
    assert pointer is not None
    return pointer


# ----------------------------------------------------------------------------- happy path


def test_run_and_events_are_in_postgres(env: Stack, first_run: Outcome):
    rows = env.sql("SELECT status FROM runs WHERE run_id = %s", (first_run.run_id,))
    assert rows == [("SUCCESS",)]
    keys = env.sql(
        "SELECT DISTINCT asset_key FROM event_logs "
        "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (first_run.run_id,),
    )
    assert {json.loads(k)[0] for (k,) in keys} == GRAPH
    assert env.sql("SELECT current_database()") == [(DAGSTER_DB,)]


def test_assets_and_deployment_are_in_s3(env: Stack, first_run: Outcome):
    keys = set(list_keys(env.s3(), BUCKET, "storage/synthetic/"))
    for asset in ("raw_customers", "customer_features", "training_set", "churn_scores"):
        assert f"storage/synthetic/assets/{asset}.parquet" in keys
    assert "storage/synthetic/deployments/current.json" in keys
    pointer = _pointer(env)
    manifest = f"storage/synthetic/deployments/versions/{pointer['version']}/manifest.json"
    assert manifest in keys
    assert dep.verify_version(env.storage(), pointer["version"]) == []


def test_mlflow_server_has_runs_aliases_and_s3_artifacts(env: Stack, first_run: Outcome):
    client = env.mlflow_client()
    exp = client.get_experiment_by_name("churn-synthetic")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=200)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    for name in ("churn-classifier", "clv-regressor"):
        assert client.get_model_version_by_alias(name, "champion")
        assert client.get_model_version_by_alias(name, "challenger")
    # the code gives each experiment an artifact location under the storage root
    assert exp.artifact_location == f"s3://{BUCKET}/storage/mlflow/artifacts/synthetic"
    artifacts = list_keys(env.s3(), BUCKET, "storage/mlflow/artifacts/synthetic/")
    assert any(k.endswith("leaderboard.csv") for k in artifacts)
    assert any(k.endswith(".skops") or k.endswith("MLmodel") for k in artifacts)


def test_sidecar_predicts_from_s3(env: Stack, first_run: Outcome, tmp_path):
    try:
        import churn_serving.server  # noqa: F401
    except ImportError as e:
        pytest.skip(f"sidecar not available: {e}")
    current = first_run.result.output_for_node("current_features")
    customer = str(current["customer_id"][0])
    port = free_port()
    sidecar = Process(
        "churn-serving",
        [str(BIN / "churn"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        {**os.environ, "CHURN_SERVING_POLL_SECONDS": "1"},
        tmp_path,
    )
    sidecar.start()
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/ready", sidecar)
        body = json.dumps({"records": [{"customer_id": customer}]}).encode()
        req = urllib.request.Request(
            f"{base}/predict", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        text = json.dumps(answer)
        assert customer in text and "churn_probability" in text, answer
        assert _pointer(env)["version"] in text
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'churn_serving_requests_total{endpoint="/predict"' in metrics
    finally:
        sidecar.stop()


def _wait_ready(url: str, proc: Process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.running():
            raise AssertionError(f"sidecar exited:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = e.read().decode(errors="replace")
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready within {timeout} s: {last}\n{proc.tail()}")


# ---------------------------------------------------------------------------------- faults


def test_postgres_restart_between_runs(env: Stack, first_run: Outcome):
    import dagster as dg

    with dg.DagsterInstance.get() as long_lived:  # like the webserver's and daemon's
        env.pg.ctl("restart")
        env.pg.wait_ready()
        run = env.materialize(["current_features"])
        assert run.success, run.failure_text()
        assert env.sql("SELECT status FROM runs WHERE run_id = %s", (run.run_id,)) == [("SUCCESS",)]
        # an instance opened before the restart reconnects too
        assert long_lived.get_run_by_id(run.run_id).is_success


def test_mlflow_down_fails_with_clear_error_and_keeps_pointer(env: Stack, first_run: Outcome):
    before = _pointer(env)
    env.mlflow.stop()
    try:
        run = env.materialize(["classification_models"])
    finally:
        env.mlflow.start()
    assert not run.success
    text = run.failure_text()
    assert f"MLflow tracking at {env.mlflow.uri} is unreachable" in text, text
    # the retry policy tried again before giving up
    assert len(run.of_type("STEP_UP_FOR_RETRY")) == 3
    assert _pointer(env) == before
    assert env.mlflow_client().get_experiment_by_name("churn-synthetic") is not None


def test_s3_down_fails_clearly_and_pointer_stays_complete(env: Stack, first_run: Outcome):
    s3 = env.s3()
    objects = snapshot(s3, BUCKET)
    before = _pointer(env)
    env.moto.stop()
    try:
        run = env.materialize(["deployed_model_version", "churn_scores"])
    finally:
        env.moto.start()  # same port: moto starts empty, the snapshot goes back in
        restore(s3, BUCKET, objects)
    assert not run.success
    text = run.failure_text()
    assert env.moto.endpoint.removeprefix("http://") in text, text
    current = _pointer(env)
    assert current == before
    assert dep.verify_version(env.storage(), current["version"]) == []
    again = env.materialize(["deployed_model_version", "churn_scores"])
    assert again.success, again.failure_text()
    current = _pointer(env)
    assert dep.verify_version(env.storage(), current["version"]) == []


def test_short_s3_outage_is_retried(env: Stack, first_run: Outcome, monkeypatch):
    gate = TcpGate(env.moto.port)
    monkeypatch.setenv("CHURN_S3_ENDPOINT_URL", gate.endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", gate.endpoint)
    (last_event,) = env.sql("SELECT coalesce(max(id), 0) FROM event_logs")[0]
    outcome: list[Outcome | BaseException] = []

    def run() -> None:
        try:
            outcome.append(env.materialize(["deployed_model_version", "churn_scores"]))
        except BaseException as e:  # reported by the main thread
            outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()  # the gate is closed: every S3 request is refused
    try:
        deadline = time.monotonic() + 120
        while not env.sql(
            "SELECT 1 FROM event_logs WHERE id > %s AND dagster_event_type = 'STEP_UP_FOR_RETRY'",
            (last_event,),
        ):
            assert worker.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.2)
        gate.open()  # S3 is back after the first failed attempt
        worker.join(timeout=180)
    finally:
        gate.close()
    assert not worker.is_alive()
    result = outcome[0]
    assert isinstance(result, Outcome), result
    assert result.success, result.failure_text()
    assert result.of_type("STEP_RESTARTED")
    assert dep.verify_version(env.storage(), _pointer(env)["version"]) == []
