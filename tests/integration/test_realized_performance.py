"""Realized performance with the real graph on a small synthetic data set, time passing
simulated: the history lands without its last 90 days, the graph trains, deploys and scores
at that cut-off; then the rest lands, and realized_performance measures the scores against
what the customers did. A degraded snapshot then fails the check, and the realized sensor
requests a retraining run with the reason."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from churn_assets import scope
from churn_assets.lib import deployment as dep
from churn_assets.lib import realized as rz
from churn_assets.lib.datasets import BUILTIN_DIR
from churn_assets.lib.generator import generate
from churn_assets.lib.storage import Storage
from tests.integration.conftest import BIN, Deployed, dev_environment, dry_run

pytestmark = pytest.mark.integration

#: The cheapest model set that still deploys: one classifier, naive baseline and ridge.
FAST_MODELS = {
    "classification_candidates": ["logistic_regression"],
    "regression_candidates": ["naive_baseline", "ridge"],
    "cv_folds": 0,
}
HORIZON = 90
FIRST_RUN = [
    "raw_customers",
    "raw_transactions",
    "customer_features",
    "current_features",
    "training_set",
    "classification_models",
    "regression_models",
    "deployed_model_version",
    "churn_scores",
    "realized_performance",
]


def definitions(config: str) -> dg.Definitions:
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    return build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, selection: list[str]):
    from churn_assets.partitions import run_in_process

    job = defs.resolve_implicit_global_asset_job_def()
    result = run_in_process(
        job, instance, defs.resources["platform"], [dg.AssetKey(k) for k in selection]
    )
    assert result.success, [
        str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure
    ]
    return result


def materialization(result, key: str) -> dg.AssetMaterialization:
    (mat,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(key)
    ]
    return mat


def check_of(result) -> dg.AssetCheckEvaluation:
    (check,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "realized_roc_auc_holds"
    ]
    return check


def sensor_tick(instance: dg.DagsterInstance, cursor: str | None = None):
    from churn_assets.sensors import realized_performance_sensor

    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return realized_performance_sensor.evaluate_tick(context), context.cursor


def test_scores_meet_their_outcomes_after_the_horizon(isolated_env: Path, tmp_path: Path):
    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = FAST_MODELS
    config = tmp_path / "synthetic.yaml"
    config.write_text(yaml.safe_dump(cfg))
    stage, landing = tmp_path / "stage", isolated_env / "landing" / "synthetic"
    history = generate(str(stage), customers=1500, days=360, seed=7)
    cutoff = history.end - dt.timedelta(days=HORIZON)
    rz.land_window(str(stage), str(landing), end=cutoff)
    defs, instance = definitions(str(config)), dg.DagsterInstance.ephemeral()

    # 1. train, deploy and score with data up to the cut-off only: nothing to measure yet
    first = materialize(defs, instance, FIRST_RUN)
    scores = materialization(first, "churn_scores")
    assert scores.metadata["cutoff"].value == cutoff.isoformat()
    version = scores.metadata["model_version"].value
    storage = Storage(str(isolated_env / "synthetic"))
    assert [(r.version, r.cutoff) for r in rz.list_snapshots(storage)] == [(version, cutoff)]
    waiting = materialization(first, "realized_performance").metadata
    assert waiting["status"].value == "waiting"
    assert waiting["snapshots_pending"].value == 1
    assert check_of(first).passed  # nothing to judge is not a failure

    # 2. the horizon passes: the customers' behaviour lands, the snapshot is measured
    rz.land_window(str(stage), str(landing), start=cutoff, batch_name="batch-0001")
    second = materialize(defs, instance, ["raw_customers", "raw_transactions"] + FIRST_RUN[-1:])
    meta = materialization(second, "realized_performance").metadata
    assert meta["status"].value == "ok" and meta["model_version"].value == version
    assert meta["cutoff"].value == cutoff.isoformat() and meta["snapshots_evaluated"].value == 1
    for key in (
        "realized_roc_auc",
        "realized_pr_auc",
        "realized_brier",
        "realized_calibration_error",
        "observed_churn_rate",
        "expected_churn_rate",
        "realized_value_mae",
        "realized_value_r2",
        "deployed_roc_auc",
        "deployed_pr_auc",
        "deployed_brier",
        "deployed_value_r2",
        "roc_auc_drop",
    ):
        assert isinstance(meta[key], dg.FloatMetadataValue), key
    assert 0.8 < meta["realized_roc_auc"].value <= 1.0  # an out-of-time model that works
    assert abs(meta["roc_auc_drop"].value) < 0.05
    assert 0 < meta["positives"].value < meta["n"].value
    assert meta["retraining_requested"].value is False
    check = check_of(second)
    assert check.passed and "holds" in check.description
    assert check.severity == dg.AssetCheckSeverity.WARN
    result, cursor = sensor_tick(instance)
    assert not result.run_requests and "no retraining needed" in result.skip_message

    # 3. the same snapshot, as a model gone bad would have scored it: the check fails and the
    #    sensor asks for retraining, once, with the reason
    snap = storage.read_parquet(rz.snapshot_path(version, cutoff))
    storage.write_parquet(
        rz.snapshot_path(version, cutoff),
        snap.with_columns((1.0 - snap["churn_probability"]).alias("churn_probability")),
    )
    third = materialize(defs, instance, ["realized_performance"])
    check = check_of(third)
    assert not check.passed and "below the floor 0.70" in check.description
    assert materialization(third, "realized_performance").metadata["verdict"].value == "degraded"
    # a landing run of the data set still writing: the retraining waits for the verdict
    # after it (it started anyway, training without that file); a retraining already on its
    # way retrains on the same data: no second one
    for job in ("ingest_features_drift", "retraining"):
        busy = DagsterRun(
            job_name=job, run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED,
            tags=scope.dataset_tags(),
        )  # fmt: skip
        instance.add_run(busy)
        result, cursor = sensor_tick(instance, cursor)
        assert not result.run_requests and busy.run_id in result.skip_message, job
        instance.delete_run(busy.run_id)
        third = materialize(defs, instance, ["realized_performance"])  # judged again
    result, cursor = sensor_tick(instance, cursor)
    (request,) = result.run_requests
    assert request.job_name in (None, "retraining")
    assert request.run_key == f"realized-{version}-{cutoff.isoformat()}"
    assert request.tags["churn/trigger"] == "realized_performance"
    assert "below the floor 0.70" in request.tags["churn/reason"]


def test_snapshot_data_sets_are_not_applicable(real_data: Path):
    defs, instance = definitions("telco"), dg.DagsterInstance.ephemeral()
    result = materialize(defs, instance, ["raw_customers", "raw_transactions"] + FIRST_RUN[-1:])
    meta = materialization(result, "realized_performance").metadata
    assert meta["status"].value == "not_applicable"
    assert "no time axis" in meta["message"].value
    assert meta["retraining_requested"].value is False
    assert check_of(result).passed
    result, _ = sensor_tick(instance)
    assert not result.run_requests


def test_snapshots_and_report_on_s3_storage(s3_env):
    """The same files on S3-compatible storage (a real moto_server), as in the compose
    stack: snapshots written and listed, the stored scoring cut-off, the report."""
    from tests.monitoring.test_realized import CUTOFF, deploy, population, scores, tx

    s3_env().create_bucket(Bucket="churn-realized")
    storage = Storage(
        "s3://churn-realized/storage/synthetic",
        {"client_kwargs": {"endpoint_url": os.environ["CHURN_S3_ENDPOINT_URL"]}},
    )
    transactions, proba = population()
    deploy(storage, "v1", roc_auc=0.95)
    url = rz.write_snapshot(
        storage, scores(proba, "v1"), version="v1", cutoff=CUTOFF, threshold=0.5, horizon_days=30
    )
    assert url == "s3://churn-realized/storage/synthetic/scores/v1/2024-06-01.parquet"
    assert [(r.version, r.cutoff) for r in rz.list_snapshots(storage)] == [("v1", CUTOFF)]
    storage.write_parquet("assets/raw_transactions.parquet", tx([("a", "2024-07-09 10:00", 1)]))
    assert rz.stored_scoring_cutoff(storage) == dt.date(2024, 7, 10)
    report = rz.evaluate_snapshots(storage, transactions, 30, floor=0.7)
    assert report["status"] == "ok" and report["latest"]["realized"]["roc_auc"] == 1.0


@pytest.mark.timeout(2400)
def test_the_ui_shows_realized_performance_after_the_horizon(deployed_dev: Deployed):
    """The README's walk-through on the shared `churn dev`, which was seeded with
    ``churn seed --hold-back-days 90``: the first version was trained, deployed and scored at
    the cut-off 90 days before the end of the history. ``churn seed --land-held-back`` lands
    the rest; the landing sensor's run measures that scoring snapshot against what the
    customers then did, and the UI shows the realized figures next to the deployment-time
    ones. A stationary history neither drifts nor degrades, so nothing retrains. Timeout
    2400 s: the first test to use the shared platform waits for its first deployment."""
    dev = deployed_dev.dev
    assert deployed_dev.bootstrap_status == "SUCCESS", dev.tail()
    store = Storage(str(dev.storage / "synthetic"))
    version = dep.read_current(store)["version"]
    cutoff = rz.stored_scoring_cutoff(store)
    assert [(s.version, s.cutoff) for s in rz.list_snapshots(store)] == [(version, cutoff)]
    held = json.loads((dev.storage / "held-back" / "synthetic" / "held-back.json").read_text())
    assert held["cutoff"] == cutoff.isoformat()

    landing_runs = {r["runId"] for r in dev.runs("churn/trigger", "landing")}
    retraining_runs = {r["runId"] for r in dev.runs("churn/trigger", "drift")}
    env = dev_environment(dev.storage.parent, dev.storage, dev.serving_port)
    out = subprocess.run(
        [str(BIN / "churn"), "seed", "--land-held-back"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "landed the held-back" in out.stdout, out.stderr

    def new_landing_run() -> list[dict[str, Any]]:
        return [r for r in dev.runs("churn/trigger", "landing") if r["runId"] not in landing_runs]

    # one run per new landing file, the last of a sensor tick the whole landing job
    def measured() -> list[dict[str, Any]]:
        runs = {r["runId"] for r in new_landing_run()}
        return [m for r, m in dev.materializations("realized_performance", 5) if r in runs]

    found = dev.wait(measured, 600, "realized_performance of a landing run of the held back days")
    for run in new_landing_run():
        status = dev.wait(lambda r=run: dev.finished(r["runId"]), 600, "the landing runs to end")
        assert status == "SUCCESS", dev.tail()
    assert found, dev.tail()
    meta = found[0]
    assert meta["status"] == "ok" and meta["verdict"] == "holds", meta
    assert meta["model_version"] == version and meta["cutoff"] == cutoff.isoformat(), meta
    assert meta["snapshots_evaluated"] == 1, meta
    # the scores at the cut-off meet the customers' behaviour over the horizon after it
    assert 0.8 < meta["realized_roc_auc"] <= 1.0, meta
    assert meta["deployed_roc_auc"] > 0.8 and abs(meta["roc_auc_drop"]) < 0.05, meta
    assert 0 < meta["positives"] < meta["n"], meta
    for key in ("realized_pr_auc", "realized_brier", "realized_value_mae", "realized_value_r2"):
        assert isinstance(meta[key], float), (key, meta)
    assert meta["retraining_requested"] is False, meta
    print(
        f"\nrealized at {cutoff} ({version}): ROC-AUC {meta['realized_roc_auc']:.4f} "
        f"(deployed {meta['deployed_roc_auc']:.4f}), PR-AUC {meta['realized_pr_auc']:.4f}, "
        f"Brier {meta['realized_brier']:.4f}, value R² {meta['realized_value_r2']:.4f}"
    )
    # the realized sensor, evaluated now, requests nothing; no drift retraining started
    again = dry_run(dev, "sensor", "realized_performance_sensor")
    assert again["runRequests"] == [], again
    assert {r["runId"] for r in dev.runs("churn/trigger", "drift")} == retraining_runs
