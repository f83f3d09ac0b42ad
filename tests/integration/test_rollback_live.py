"""A rollback holds on a real `churn dev`: rolled back from the UI's way (a materialization of
`deployed_model_version` with config ``rollback_to``, in the retraining pool), the version
stays deployed and pinned through the run the hourly schedule launches, the scores and the
sidecar follow it, and ``unpin`` turns promotion back on without moving it."""

from __future__ import annotations

import subprocess

import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage
from tests.conftest import BIN
from tests.integration.conftest import Deployed, DevPlatform, dev_environment, dry_run
from tests.integration.test_self_retraining import LAUNCH, deployment_of_run, served_version

pytestmark = pytest.mark.integration


def launch(dev: DevPlatform, assets: list[str] | None, config: dict | None, tags: dict) -> str:
    """Launch the `retraining` job (or a subset of it) with run config and tags over GraphQL."""
    selector = {
        "repositoryLocationName": "churn_assets",
        "repositoryName": "__repository__",
        "jobName": "retraining",
    }
    if assets:
        selector["assetSelection"] = [{"path": [a]} for a in assets]
    params = {
        "selector": selector,
        "runConfigData": config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    out = dev.query(LAUNCH, {"params": params})["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    return out["run"]["runId"]


def finished_ok(dev: DevPlatform, run_id: str, what: str) -> None:
    status = dev.wait(lambda: dev.finished(run_id), 900, what)
    assert status == "SUCCESS", dev.tail()


@pytest.mark.timeout(2400)
def test_a_rollback_holds_through_the_scheduled_retraining(deployed_dev: Deployed):
    """Timeout 2400 s: when this test runs first it waits for the shared platform's first
    deployment."""
    dev = deployed_dev.dev
    assert deployed_dev.bootstrap_status == "SUCCESS", dev.tail()
    store = Storage(str(dev.storage / "synthetic"))
    good = dep.read_current(store)["version"]

    # a newer version is deployed (a copy of the current one: what matters is the pointer)
    manifest = dep.read_manifest(store, good)
    newer = dep.new_version(store)
    artifacts = {n: store.read_bytes(f"{dep.version_dir(good)}/{n}") for n in manifest["artifacts"]}
    body = {k: v for k, v in manifest.items() if k not in ("version", "artifacts")}
    dep.write_version(store, newer, artifacts, body)
    dep.set_current(store, newer, reason="a newer version")
    dev.wait(lambda: served_version(dev) == newer, 120, f"the sidecar serving {newer}")

    # roll back as the UI does: materialize deployed_model_version with rollback_to
    config = {"ops": {"deployed_model_version": {"config": {"rollback_to": "previous"}}}}
    rollback = launch(dev, ["deployed_model_version"], config, {"churn/trigger": "rollback"})
    finished_ok(dev, rollback, "the rollback run")
    pointer = dep.read_current(store)
    assert pointer["version"] == good and pointer["pinned"] == good, pointer
    rolled = deployment_of_run(dev, rollback)
    assert rolled["version"] == good and "pinned" in rolled["decision"], rolled
    dev.wait(lambda: served_version(dev) == good, 120, f"the sidecar serving {good} again")

    # the next scheduled retraining: the schedule evaluates, and the run it launches (the
    # whole retraining job, tagged as the schedule tags it) trains but does not promote
    tick = dry_run(dev, "schedule", "hourly_retraining")
    assert tick["runRequests"] or tick["skipReason"], tick
    scheduled = launch(dev, None, None, {"churn/trigger": "schedule"})
    finished_ok(dev, scheduled, "the scheduled retraining run")
    kept = deployment_of_run(dev, scheduled)
    assert kept["promoted"] is False and kept["version"] == good, kept
    assert "pinned" in kept["decision"], kept
    pointer = dep.read_current(store)
    assert pointer["version"] == good and pointer["pinned"] == good, pointer
    assert served_version(dev) == good

    # the scores follow the pinned version (automation after each deployment materialization)
    def scored_with_good() -> bool:
        latest = dev.materializations("churn_scores", 1)
        return bool(latest) and latest[0][1].get("model_version") == good

    dev.wait(scored_with_good, 180, f"churn_scores scored with {good}")

    # unpin: promotion is on again, the deployed version does not move
    env = dev_environment(dev.home.parent, dev.storage, dev.serving_port)
    out = subprocess.run([str(BIN / "churn"), "unpin"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"{good} stays deployed" in out.stdout
    pointer = dep.read_current(store)
    assert pointer["version"] == good and pointer.get("pinned") is None, pointer
