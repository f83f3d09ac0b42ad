"""The platform retrains itself, on a real `churn dev` (webserver + daemon + sidecar) driven
over GraphQL, with the shipped default configuration (model set, gate, drift thresholds; see
``conftest.py`` for the two test settings and why): a first version deploys itself, a drifted
batch lands in the landing zone, and — touching nothing else — ingestion, a drift report
with drift and a successful retraining run follow, ending in a promotion or a kept version
whose reason the deployment's materialization states. Two retraining runs never overlap.
SIGTERM stops every process of `churn dev`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.generator import generate
from churn_assets.lib.storage import Storage
from tests.integration.conftest import (
    Deployed,
    DevPlatform,
    dev_environment,
    dry_run,
    own_tmp,
    running_dev,
)

pytestmark = pytest.mark.integration

ALL_RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status startTime endTime
  tags { key value } } } } }
"""


def deployment_of_run(dev: DevPlatform, run_id: str) -> dict:
    """The metadata of the `deployed_model_version` materialization of ``run_id``."""
    (meta,) = [m for run, m in dev.materializations("deployed_model_version", 50) if run == run_id]
    return meta


def served_version(dev: DevPlatform) -> str | None:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{dev.serving_port}/model-info", timeout=5).json()[
            "version"
        ]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


@pytest.mark.timeout(2400)
def test_drift_in_landing_zone_leads_to_a_decided_retraining(deployed_dev: Deployed):
    """Timeout 2400 s: the first test to use the shared platform waits for its first
    deployment (start, ingestion, a default model set) before its own retraining run."""
    dev = deployed_dev.dev
    store = Storage(str(dev.storage / "synthetic"))
    nodes = dev.query("{ assetNodes { assetKey { path } } }")["assetNodes"]
    assert {"raw_customers", "customer_features", "deployed_model_version", "drift_report"} <= {
        "/".join(n["assetKey"]["path"]) for n in nodes
    }

    # the landing sensor ingested the seeded files on its own, and with nothing deployed
    # the drift sensor started the first retraining run: the first version deployed itself
    assert deployed_dev.bootstrap_status == "SUCCESS", dev.tail()
    first = deployment_of_run(dev, deployed_dev.bootstrap_run["runId"])
    assert first["promoted"] is True and first["decision"], first
    v1 = dep.read_current(store)["version"]
    assert first["version"] == v1

    # a drifted batch lands; nothing else is touched from here on
    landed = time.monotonic()
    generate(str(dev.landing), customers=1500, days=360, seed=7, drift=True, batch_name="drift-1")
    run = dev.wait(lambda: dev.runs("churn/trigger", "drift"), 300, "a retraining run by drift")[0]
    status = dev.wait(lambda: dev.finished(run["runId"]), 900, "the retraining run to end")
    assert status == "SUCCESS", dev.tail()
    seconds = time.monotonic() - landed

    report = json.loads((dev.storage / "synthetic" / "assets" / "drift_report.json").read_text())
    assert report["drifted"] is True and report["model_version"] == v1

    # the run ends in a promotion or a kept version, and says which and why
    decided = deployment_of_run(dev, run["runId"])
    assert isinstance(decided["promoted"], bool), decided
    assert isinstance(decided["decision"], str) and len(decided["decision"]) > 10, decided
    current = dep.read_current(store)["version"]
    assert decided["version"] == current
    if decided["promoted"]:
        assert current != v1
    else:
        assert current == v1
    # the sidecar started by `churn dev` follows the pointer (admin reload is off: it polls)
    dev.wait(lambda: served_version(dev) == current, 120, f"the sidecar serving {current}")
    verb = "promoted" if decided["promoted"] else "kept"
    print(f"\nfile landing → {verb} {current} in {seconds:.0f} s: {decided['decision']}")

    # that drifted batch led to exactly one retraining: the drift sensor, evaluated again on
    # the same report, names the episode as handled; the hourly schedule, with no data
    # since that training, retrains nothing
    assert len(dev.runs("churn/trigger", "drift")) == 1
    again = dry_run(dev, "sensor", "drift_sensor")
    assert again["runRequests"] == [] and "already requested a retraining" in str(
        again["skipReason"]
    ), again
    hourly = dry_run(dev, "schedule", "hourly_retraining")
    assert hourly["runRequests"] == [], hourly
    assert str(hourly["skipReason"]).startswith("no new data since the last completed training")


FRESHNESS = """
{ assetNodes { assetKey { path }
    internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy {
      failWindowSeconds warnWindowSeconds } }
    freshnessStatusInfo { freshnessStatus }
    automationCondition { label } } }
"""


@pytest.mark.timeout(2400)
def test_the_ui_shows_freshness_and_automation(deployed_dev: Deployed):
    """Timeout 2400 s: when this test runs alone it waits for the shared platform's first
    deployment. The four assets with freshness policies show their windows in the UI, and
    Dagster's freshness evaluation calls the just-deployed version and its scores fresh;
    ``churn_scores`` shows its automation condition."""
    from churn_assets import freshness
    from churn_assets.lib.freshness import deployment_window, retraining_window

    dev = deployed_dev.dev
    # the windows the platform derives from its settings: the synthetic data set's horizon
    # and the test platform's cron (once a year, see conftest.py)
    cron = dev_environment(dev.home, dev.storage, 0)["CHURN_RETRAINING_CRON"]
    deployment = deployment_window(
        freshness.DATA_WINDOW, retraining_window(freshness.cron_interval(cron))
    )

    def nodes() -> dict[str, dict]:
        found = dev.query(FRESHNESS)["assetNodes"]
        return {"/".join(n["assetKey"]["path"]): n for n in found}

    windows = {
        "raw_transactions": freshness.DATA_WINDOW,
        "current_features": freshness.DATA_WINDOW,
        "deployed_model_version": deployment,
        "churn_scores": deployment,
    }
    shown = nodes()
    for key, window in windows.items():
        policy = shown[key]["internalFreshnessPolicy"]
        assert policy == {
            "failWindowSeconds": window.fail.total_seconds(),
            "warnWindowSeconds": window.warn.total_seconds(),
        }, (key, policy)
    assert shown["training_set"]["internalFreshnessPolicy"] is None
    assert shown["churn_scores"]["automationCondition"]["label"] == "eager"

    def fresh() -> bool:
        now = nodes()
        return all(
            (now[k]["freshnessStatusInfo"] or {}).get("freshnessStatus") == "HEALTHY"
            for k in ("deployed_model_version", "churn_scores")
        )

    dev.wait(fresh, 120, "the deployment's freshness to show as healthy")


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def launch_retraining(dev: DevPlatform, assets: list[str]) -> str:
    """Launch the `retraining` job on ``assets`` (a subset of it) over GraphQL."""
    selector = {
        "repositoryLocationName": "churn_assets",
        "repositoryName": "__repository__",
        "jobName": "retraining",
        "assetSelection": [{"path": [a]} for a in assets],
    }
    out = dev.query(LAUNCH, {"params": {"selector": selector}})["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    return out["run"]["runId"]


@pytest.mark.timeout(2400)
def test_two_retraining_runs_never_overlap(deployed_dev: Deployed):
    """Timeout 2400 s: when this test runs alone it waits for the shared platform's first
    deployment. Each run is the `retraining` job on its first asset, `training_set`: it holds
    the same "retraining" pool as the whole job (the pool is what keeps runs apart), at a
    fraction of the cost of training two default model sets."""
    dev = deployed_dev.dev
    a = launch_retraining(dev, ["training_set"])
    b = launch_retraining(dev, ["training_set"])
    for run_id in (a, b):
        assert dev.wait(lambda r=run_id: dev.finished(r), 900, "retraining") == "SUCCESS"
    runs = {r["runId"]: r for r in dev.query(ALL_RUNS)["runsOrError"]["results"]}
    first_run, second_run = sorted((runs[a], runs[b]), key=lambda r: r["startTime"])
    assert first_run["jobName"] == second_run["jobName"] == "retraining"
    assert first_run["endTime"] <= second_run["startTime"]


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process started for the `churn dev` whose DAGSTER_HOME is ``home``
    (webserver, daemon, code servers, run workers, sidecar all inherit it)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("DAGSTER_HOME") == str(home) and p.status() != "zombie":
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.timeout(600)
def test_sigterm_stops_every_process():
    """Its own `churn dev` (not the shared one): stopping it must not end other tests'
    platform. Nothing is seeded, so it only starts the processes. Timeout 600 s: starting
    and stopping the processes on a busy 2-core machine."""
    with own_tmp("churn-sigterm-") as tmp, running_dev(tmp, seed=False) as dev:
        dev.wait(lambda: _answers(dev.serving_port), 60, "the sidecar to listen")
        started = processes_of(dev.home)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "dagster" in names and "serve" in names, names
        os.killpg(dev.proc.pid, signal.SIGTERM)
        assert dev.proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 5
        while processes_of(dev.home) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [" ".join(p.cmdline()) for p in processes_of(dev.home)]
        assert left == [], f"processes left behind: {left}"
        for port in (dev.port, dev.serving_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
