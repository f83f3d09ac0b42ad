"""Served-traffic drift: an inference log written by the sidecar's own logger, measured
against a deployed version's reference sample (framework-free), and the Dagster asset."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.served_drift import (
    NO_TRAFFIC,
    SERVED_SUMMARY,
    ServedWindow,
    build_served_drift_report,
    read_window,
)
from churn_assets.lib.storage import Storage
from churn_serving.drift_status import SERVED_PREFIX, DriftStatus
from churn_serving.inference_log import InferenceLogger

NUMERIC = ("tenure_days", "spend_90d")
CATEGORICAL = ("plan",)
VERSION = "v20260101-000000"
PLANS = np.array(["basic", "plus", "pro"])
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def population(n: int, seed: int, shift: float = 0.0, plans: tuple = (0.5, 0.3, 0.2)) -> dict:
    """Features and churn probabilities; ``shift`` moves the numeric features and scores."""
    rng = np.random.default_rng(seed)
    return {
        "tenure_days": rng.gamma(2.0, 200.0, n) * (1 + shift),
        "spend_90d": rng.lognormal(4.0, 1.0, n) + 200 * shift,
        "plan": rng.choice(PLANS, n, p=plans),
        "churn_probability": np.clip(rng.beta(2, 5, n) + shift / 2, 0, 1),
    }


def deploy(storage: Storage, n: int = 3000) -> None:
    """A deployed version with only what drift needs: manifest and reference sample."""
    ref = population(n, seed=1)
    buf = io.BytesIO()
    pl.DataFrame({**ref, "expected_total_sales": np.full(n, 50.0)}).write_parquet(buf)
    manifest = {
        "features": {"numeric": list(NUMERIC), "categorical": list(CATEGORICAL)},
        "models": {"classifier": {"threshold": 0.5}},  # churn only: no value predictions
        "reference": {"file": "reference.parquet"},
    }
    dep.write_version(storage, VERSION, {"reference.parquet": buf.getvalue()}, manifest)
    dep.set_current(storage, VERSION, "test")


def serve(
    storage: Storage, pop: dict, at: dt.datetime, version: str = VERSION, batch: int = 250
) -> int:
    """Log ``pop`` through the sidecar's inference logger, as requests of ``batch`` records."""
    logger = InferenceLogger(storage, flush_records=10**9)
    n = len(pop["plan"])
    for i, start in enumerate(range(0, n, batch)):
        sl = slice(start, start + batch)
        k = len(pop["plan"][sl])
        proba = pop["churn_probability"][sl]
        logger.submit(
            numeric=NUMERIC,
            categorical=CATEGORICAL,
            logged_at=at.timestamp() + i,
            request_id=f"r{i}",
            model_version=version,
            customer_id=[f"c{start + j}" for j in range(k)],
            unseen_categories=None,
            is_lookup=np.zeros(k, dtype=np.int8),
            churn_probability=proba,
            churn_label=(proba >= 0.5).astype(np.int8),
            threshold=np.full(k, 0.5),
            expected_total_sales=np.zeros(k),
            churn_level=np.zeros(k, dtype=np.int8),
            sales_level=np.full(k, 4, dtype=np.int8),
            num=np.column_stack([pop[c][sl] for c in NUMERIC]),
            cat=np.column_stack([pop[c][sl] for c in CATEGORICAL]).astype(object),
        )
    return logger.flush()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(str(tmp_path / "synthetic"))
    deploy(s)
    return s


def report(storage: Storage, **window: int) -> dict:
    cfg = load_dataset_config("synthetic")
    return build_served_drift_report(storage, cfg, ServedWindow(**window), "run-0001", now=NOW)


def test_traffic_like_the_reference_does_not_drift(storage: Storage):
    assert serve(storage, population(2000, seed=2), NOW - dt.timedelta(days=1)) == 2000
    out = report(storage)
    assert out["status"] == "ok" and out["current_rows"] == 2000
    assert not out["drifted"] and out["result"].drifted_columns == []
    table = out["result"].table
    # the churn-only version: features and churn probability, no value prediction
    assert sorted(table["column"]) == ["churn_probability", "plan", "spend_90d", "tenure_days"]
    assert table["value"].max() < 0.1
    summary = storage.read_json(SERVED_SUMMARY)
    assert summary["status"] == "ok" and summary["drifted"] is False
    assert summary["current_rows"] == 2000 and summary["model_version"] == VERSION
    assert storage.exists(out["report_url"].removeprefix(storage.root + "/"))


def test_shifted_traffic_drifts_in_features_and_predictions(storage: Storage):
    shifted = population(2000, seed=3, shift=0.8, plans=(0.1, 0.2, 0.7))
    serve(storage, shifted, NOW - dt.timedelta(hours=3))
    out = report(storage)
    assert out["drifted"] and out["result"].prediction_drift
    assert set(out["result"].drifted_columns) == {
        "tenure_days",
        "spend_90d",
        "plan",
        "churn_probability",
    }
    summary = storage.read_json(SERVED_SUMMARY)
    assert summary["drifted"] is True and summary["share_drifted"] == 1.0


def test_a_missing_category_in_the_log_is_null_as_in_the_reference(tmp_path: Path):
    """The sidecar logs a missing category as "__missing__"; the reference holds nulls.
    Traffic with the reference's share of missing plans does not drift in ``plan``."""
    from churn_serving.schema import MISSING_CATEGORY

    def holes(n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).random(n) < 0.2

    s = Storage(str(tmp_path / "synthetic"))
    ref = population(3000, seed=1)
    plan = [None if hole else v for v, hole in zip(ref["plan"], holes(3000, 11), strict=True)]
    buf = io.BytesIO()
    frame = {**ref, "plan": plan, "expected_total_sales": np.full(3000, 50.0)}
    pl.DataFrame(frame).write_parquet(buf)
    manifest = {
        "features": {"numeric": list(NUMERIC), "categorical": list(CATEGORICAL)},
        "models": {"classifier": {"threshold": 0.5}},
        "reference": {"file": "reference.parquet"},
    }
    dep.write_version(s, VERSION, {"reference.parquet": buf.getvalue()}, manifest)
    dep.set_current(s, VERSION, "test")
    traffic = population(2000, seed=2)
    logged = np.where(holes(2000, 12), MISSING_CATEGORY, traffic["plan"])
    serve(s, {**traffic, "plan": logged}, NOW - dt.timedelta(days=1))

    out = report(s)

    assert "plan" not in out["result"].drifted_columns
    plan = out["result"].table.filter(pl.col("column") == "plan")
    assert plan["value"][0] < 0.1


def test_predictions_of_another_version_are_not_compared(storage: Storage):
    serve(storage, population(1500, seed=4), NOW - dt.timedelta(hours=5))
    other = population(1500, seed=5)
    other["churn_probability"] = np.full(1500, 0.99)  # an old version's very different scores
    serve(storage, other, NOW - dt.timedelta(hours=2), version="v20251201-000000")
    out = report(storage)
    assert out["current_rows"] == 3000 and out["prediction_rows"] == 1500
    assert out["model_versions"] == {VERSION: 1500, "v20251201-000000": 1500}
    assert not out["drifted"] and not out["result"].prediction_drift


def test_no_inference_log_is_no_served_traffic(storage: Storage):
    out = report(storage)
    assert out["status"] == NO_TRAFFIC and out["current_rows"] == 0 and not out["drifted"]
    assert "no served traffic" in out["message"]
    assert storage.read_json(SERVED_SUMMARY)["status"] == NO_TRAFFIC


def test_too_few_or_too_old_records_are_no_served_traffic(storage: Storage):
    serve(storage, population(50, seed=6), NOW - dt.timedelta(hours=1))
    serve(storage, population(3000, seed=7), NOW - dt.timedelta(days=8))  # outside 7 days
    out = report(storage, min_rows=100)
    assert out["status"] == NO_TRAFFIC and out["current_rows"] == 50
    assert report(storage, days=9, min_rows=100)["current_rows"] == 3050


def test_the_window_keeps_the_newest_records_up_to_max_rows(storage: Storage):
    serve(storage, population(1000, seed=8), NOW - dt.timedelta(days=2))
    serve(storage, population(1000, seed=9), NOW - dt.timedelta(hours=1))
    log = read_window(storage, NOW - dt.timedelta(days=7), NOW, max_rows=1000)
    assert log.height == 1000
    assert log["logged_at"].min() >= NOW - dt.timedelta(hours=1)


def test_nothing_deployed_is_a_status(tmp_path: Path):
    cfg = load_dataset_config("synthetic")
    out = build_served_drift_report(Storage(str(tmp_path)), cfg, ServedWindow(), "r", now=NOW)
    assert out["status"] == "no_deployment" and not out["drifted"]


def test_the_sidecar_exports_the_served_summary(storage: Storage):
    from churn_serving.metrics import ServingMetrics

    metrics = ServingMetrics()
    status = DriftStatus(storage, metrics.registry, summary=SERVED_SUMMARY, prefix=SERVED_PREFIX)
    report(storage)  # no traffic yet: records and timestamp, no verdict
    status.refresh()
    assert metrics.registry.get_sample_value("churn_served_drift_records") == 0
    assert (
        metrics.registry.get_sample_value("churn_served_drift_detected", {"model_version": VERSION})
        is None
    )
    serve(storage, population(2000, seed=3, shift=0.8), NOW - dt.timedelta(hours=1))
    report(storage)
    status.refresh()
    detected = {"model_version": VERSION}
    assert metrics.registry.get_sample_value("churn_served_drift_detected", detected) == 1.0
    assert metrics.registry.get_sample_value("churn_served_drift_records") == 2000
    # the batch report's gauges are another collector's: untouched here
    assert metrics.registry.get_sample_value("churn_drift_detected", detected) is None


# ------------------------------------------------------------------------ the Dagster asset


def materialize(storage_root: Path, **config: int) -> dg.ExecuteInProcessResult:
    from churn_assets.monitoring.served import served_drift_report
    from churn_assets.resources import ChurnPlatform

    return dg.materialize(
        [served_drift_report],
        resources={"platform": ChurnPlatform(storage_url=str(storage_root), dataset="synthetic")},
        run_config={"ops": {"served_drift_report": {"config": config}}} if config else None,
        raise_on_error=True,
    )


def check_of(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_the_asset_without_traffic_succeeds_with_its_status(storage: Storage, tmp_path: Path):
    result = materialize(tmp_path)
    assert result.success
    meta = result.asset_materializations_for_node("served_drift_report")[0].metadata
    assert meta["status"].value == NO_TRAFFIC and meta["served_records"].value == 0
    assert check_of(result).passed


def test_the_asset_warns_on_drifted_traffic(storage: Storage, tmp_path: Path):
    serve(
        storage,
        population(2000, seed=3, shift=0.8),
        dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30),
    )
    result = materialize(tmp_path, min_rows=500)
    meta = result.asset_materializations_for_node("served_drift_report")[0].metadata
    assert meta["verdict"].value == "DRIFT" and meta["served_records"].value == 2000
    assert set(meta["drifted_columns"].value) >= {"tenure_days", "churn_probability"}
    evaluation = check_of(result)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    summary = json.loads((tmp_path / "synthetic" / SERVED_SUMMARY).read_text())
    assert summary["drifted"] is True


def test_landing_runs_leave_served_drift_out():
    from churn_assets.definitions import defs

    repo = defs.get_repository_def()
    assert "served_drift_report" not in repo.get_job("ingest_features_drift").graph.node_dict
    assert "drift_report" in repo.get_job("ingest_features_drift").graph.node_dict
    assert list(repo.get_job("served_drift").graph.node_dict) == ["served_drift_report"]
    assert repo.get_schedule_def("daily_served_drift").job_name == "served_drift"
    # the labelled training table reads the whole history: the retraining run builds it
    for landing in (
        "ingest_features_drift",
        "customers_features_drift",
        "transactions_features_drift",
    ):
        nodes = repo.get_job(landing).graph.node_dict
        assert "customer_features" not in nodes and "current_features" in nodes
    assert "raw_customers" not in repo.get_job("transactions_features_drift").graph.node_dict
    assert "customer_features" in repo.get_job("retraining").graph.node_dict


def test_retention_keeps_the_newest_served_reports_and_the_batch_ones_apart(storage: Storage):
    from churn_assets.lib.retention import RetentionPolicy, plan

    serve(storage, population(500, seed=2), NOW - dt.timedelta(hours=4))
    for hours in (3, 2, 1):
        build_served_drift_report(
            storage,
            load_dataset_config("synthetic"),
            ServedWindow(),
            f"run-{hours}",
            now=NOW - dt.timedelta(hours=hours) + dt.timedelta(minutes=5),
        )
    storage.write_json("monitoring/drift/20260310T000000Z-batch/x.json", {})
    served = sorted(storage.list_files("monitoring/served_drift", "*/report.html"))
    assert len(served) == 3
    deleted = plan(storage, RetentionPolicy(drift_reports=1))["drift_reports"]
    # the two older served reports go; the only batch report stays (counted on its own)
    assert deleted == [path.rsplit("/", 1)[0] for path in served[:2]]
    assert storage.exists(SERVED_SUMMARY)


def test_a_bad_window_in_the_launchpad_fails_at_once_naming_it(tmp_path: Path):
    """``window_days: -3`` was retried three times and ended in "Exceeded max_retries of
    3"; now the step fails once, naming the field and what it takes."""
    from churn_assets.monitoring.served import served_drift_report
    from churn_assets.resources import ChurnPlatform

    result = dg.materialize(
        [served_drift_report],
        resources={"platform": ChurnPlatform(storage_url=str(tmp_path), dataset="synthetic")},
        run_config={"ops": {"served_drift_report": {"config": {"window_days": -3}}}},
        raise_on_error=False,
    )
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in kinds and "STEP_FAILURE" in kinds
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    said = str(failure.event_specific_data.error.to_string())
    assert "window_days" in said and "greater than or equal to 1" in said
