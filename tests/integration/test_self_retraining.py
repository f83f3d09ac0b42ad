"""The platform retrains itself, on a real `dagster dev` (webserver + daemon) driven over
GraphQL: a first version is deployed, a drifted batch lands in the landing zone, and —
touching nothing else — ingestion, a drift report with drift, a retraining run and a new
deployed version follow. Two retraining runs never overlap."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import BUILTIN_DIR
from churn_assets.lib.generator import generate
from churn_assets.lib.storage import Storage
from tests.conftest import BIN, REPO, free_port, wait_http

pytestmark = pytest.mark.integration

RUNS = """
query Runs($tag: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $tag, value: $value}]}) {
    ... on Runs { results { runId jobName status startTime endTime } }
  }
}
"""
ALL_RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status startTime endTime
  tags { key value } } } } }
"""


def _runs(client, tag: str, value: str) -> list[dict]:
    data = client._execute(RUNS, {"tag": tag, "value": value})
    return data["runsOrError"]["results"]


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def _finished(client, run_id: str) -> str | None:
    status = client.get_run_status(run_id).value
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


@pytest.fixture(scope="module")
def platform_dev(tmp_path_factory):
    """One `churn dev` (dagster dev: webserver + daemon) for the whole module."""
    tmp = tmp_path_factory.mktemp("dev")
    storage = tmp / "storage"
    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = {
        "classification_candidates": ["logistic_regression", "lightgbm"],
        "regression_candidates": ["naive_baseline", "ridge"],
        "cv_folds": 2,
        "promote_ties": True,
        "gate_tolerance": 0.05,
    }
    config = tmp / "synthetic.yaml"
    config.write_text(yaml.safe_dump(cfg))
    landing = storage / "landing" / "synthetic"
    generate(str(landing), customers=1500, days=360, seed=7)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "CHURN_STORAGE_URL": str(storage),
        "CHURN_DATASET": str(config),
        "CHURN_LANDING_SENSOR_SECONDS": "5",
        "CHURN_RETRAINING_CRON": "0 0 1 1 *",
        "CHURN_SERVING_PORT": str(free_port()),
    }
    log = tmp / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "churn"), "dev", "--port", str(port), "--no-seed"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/server_info", timeout=120)
            yield port, landing, storage, log, proc, int(env["CHURN_SERVING_PORT"])
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def test_drift_in_landing_zone_leads_to_a_new_version(platform_dev):
    from dagster_graphql import DagsterGraphQLClient

    port, landing, storage, log, _, serving_port = platform_dev
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    store = Storage(str(storage / "synthetic"))
    nodes = client._execute("{ assetNodes { assetKey { path } } }")["assetNodes"]
    assert {"raw_customers", "customer_features", "deployed_model_version", "drift_report"} <= {
        "/".join(n["assetKey"]["path"]) for n in nodes
    }

    # the landing sensor ingests the seeded files on its own, and with nothing deployed
    # the drift sensor starts the first retraining run: the first version deploys itself
    boot = _wait(lambda: _runs(client, "churn/trigger", "bootstrap"), 400, "bootstrap", log)
    assert (
        _wait(lambda: _finished(client, boot[0]["runId"]), 600, "first deployment", log)
        == "SUCCESS"
    )
    v1 = dep.read_current(store)["version"]

    # a drifted batch lands; nothing else is touched from here on
    landed = time.monotonic()
    generate(str(landing), customers=1500, days=360, seed=7, drift=True, batch_name="drift-0001")

    def drift_runs():
        return [r for r in _runs(client, "churn/trigger", "drift") if r["status"] == "SUCCESS"]

    done = _wait(drift_runs, 900, "a successful retraining run started by drift", log)
    v2 = dep.read_current(store)["version"]
    assert v2 != v1
    # the sidecar started by `churn dev` follows the pointer (admin reload is off: it polls)
    import httpx

    def served() -> str | None:
        try:
            info = httpx.get(f"http://127.0.0.1:{serving_port}/model-info", timeout=5).json()
        except httpx.HTTPError:
            return None
        return info.get("version") if info.get("version") == v2 else None

    _wait(served, 120, f"the sidecar serving {v2}", log)
    seconds = time.monotonic() - landed
    report = json.loads((storage / "synthetic" / "assets" / "drift_report.json").read_text())
    assert report["drifted"] is True and report["model_version"] == v1
    print(f"\nfile landing → new deployed version: {seconds:.0f} s ({done[0]['runId']})")
    (storage / "landing_to_version_seconds.txt").write_text(f"{seconds:.1f}\n")


def test_two_retraining_runs_never_overlap(platform_dev):
    from dagster_graphql import DagsterGraphQLClient

    port, _, _, log, _, _ = platform_dev
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    a = client.submit_job_execution("retraining")
    b = client.submit_job_execution("retraining")
    for run_id in (a, b):
        assert _wait(lambda r=run_id: _finished(client, r), 900, "retraining", log) == "SUCCESS"
    runs = {r["runId"]: r for r in client._execute(ALL_RUNS)["runsOrError"]["results"]}
    first_run, second_run = sorted((runs[a], runs[b]), key=lambda r: r["startTime"])
    assert first_run["endTime"] <= second_run["startTime"]


def test_sigterm_stops_every_process(platform_dev):
    port, _, _, _, proc, serving_port = platform_dev
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    left = subprocess.run(["pgrep", "-f", f"-p {port}"], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"processes left behind: {left.stdout}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", serving_port), timeout=2)
