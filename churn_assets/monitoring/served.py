"""Drift of the traffic the sidecar served, with its own daily job (not the landing runs)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from churn_assets import scope
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import STORAGE_RETRY, fail_fast_unless_transient

SERVED_DRIFT_CHECK = "served_drift_within_thresholds"
#: Once a day, after the nightly retention (03:30) has pruned old inference-log days.
SERVED_DRIFT_CRON = "0 4 * * *"


class ServedDriftConfig(dg.Config):
    """Unset fields come from ``CHURN_SERVED_DRIFT_WINDOW_DAYS`` (7) and
    ``CHURN_SERVED_DRIFT_MIN_ROWS`` (200)."""

    window_days: int | None = Field(default=None, ge=1)
    min_rows: int | None = Field(default=None, ge=1)


def _metadata(out: dict[str, Any]) -> dict[str, Any]:
    window = f"{out.get('window_start', '')} → {out.get('window_end', '')}"
    if out["status"] != "ok":
        return {
            "status": out["status"],
            "drifted": False,
            "message": out["message"],
            "served_records": dg.MetadataValue.int(int(out.get("current_rows", 0))),
            "window": window,
        }
    result = out["result"]
    return {
        "status": "ok",
        "drifted": bool(result.drifted),
        "verdict": "DRIFT" if result.drifted else "no drift",
        "verdict_reasons": dg.MetadataValue.json(out["verdict_reasons"]),
        "share_drifted": dg.MetadataValue.float(float(result.share_drifted)),
        "drifted_columns": dg.MetadataValue.json(list(result.drifted_columns)),
        "prediction_drift": bool(result.prediction_drift),
        "model_version": out["model_version"],
        "served_records": dg.MetadataValue.int(int(out["current_rows"])),
        "prediction_records": dg.MetadataValue.int(int(out["prediction_rows"])),
        "model_versions_served": dg.MetadataValue.json(out["model_versions"]),
        "churn_levels": dg.MetadataValue.json(out["churn_levels"]),
        "window": window,
        "features": dg.MetadataValue.md(out["table_markdown"]),
        "report": dg.MetadataValue.path(out["report_url"]),
        "table": dg.MetadataValue.path(out["table_url"]),
    }


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="monitoring",
    deps=["deployed_model_version"],
    kinds={"polars", "html"},
    check_specs=[
        dg.AssetCheckSpec(
            SERVED_DRIFT_CHECK,
            asset="served_drift_report",
            description="Warns when the features the sidecar received, or its predictions, "
            "drift past the data set's thresholds over the recent window.",
        )
    ],
)
def served_drift_report(
    context: dg.AssetExecutionContext, config: ServedDriftConfig, platform: ChurnPlatform
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Drift of what the sidecar actually saw: the features and predictions in its inference
    log over the last days (default 7) against the deployed version's reference sample, with
    the batch drift report's math and thresholds. Features count every served record;
    predictions only those the deployed version answered. Too few records is the status "no
    served traffic" (never a failure). The summary is written to
    ``monitoring/drift/served-latest.json``, which the sidecar exports as
    ``churn_served_drift_*`` gauges."""
    from churn_assets.lib.monitoring import drift_description
    from churn_assets.lib.served_drift import ServedWindow, build_served_drift_report

    with fail_fast_unless_transient():
        window = ServedWindow.from_env(days=config.window_days, min_rows=config.min_rows)
        out = build_served_drift_report(
            platform.storage(), platform.dataset_config(), window, context.run.run_id
        )
    metadata = _metadata(out)
    stored = {k: v for k, v in out.items() if k != "result"}
    if out["status"] != "ok":
        context.log.info(out["message"])
        yield dg.Output(stored, metadata=metadata)
        yield dg.AssetCheckResult(
            check_name=SERVED_DRIFT_CHECK, passed=True, description=out["message"]
        )
        return
    result = out["result"]
    stored.update(
        share_drifted=result.share_drifted,
        drifted_columns=result.drifted_columns,
        prediction_drift=result.prediction_drift,
    )
    yield dg.Output(stored, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=SERVED_DRIFT_CHECK,
        passed=not result.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=drift_description(stored, f" in {out['current_rows']} served record(s)"),
    )


served_drift_job = dg.define_asset_job(
    "served_drift",
    selection=dg.AssetSelection.assets(scope.key("served_drift_report")),
    description="Drift of the sidecar's served traffic (inference log) against the deployed "
    "reference.",
    executor_def=dg.in_process_executor,
    tags=scope.dataset_tags(),
)

served_drift_schedule = dg.ScheduleDefinition(
    name="daily_served_drift",
    job=served_drift_job,
    cron_schedule=SERVED_DRIFT_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Measures the served traffic's drift once a day over the recent window "
    "(CHURN_SERVED_DRIFT_WINDOW_DAYS).",
    tags={"churn/trigger": "schedule"},
)
