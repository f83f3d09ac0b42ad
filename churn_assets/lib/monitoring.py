"""The drift report of a data set: current features and predictions vs the deployed
version's reference sample, stored as Parquet + HTML and logged to MLflow."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import DatasetConfig
from churn_assets.lib.settings import ChurnSettings
from churn_assets.lib.storage import Storage

PREDICTIONS = ["churn_probability", "expected_total_sales"]
#: The latest report's summary, at a fixed path the serving sidecar reads (drift gauges).
LATEST_SUMMARY = "monitoring/drift/latest.json"


def build_drift_report(
    storage: Storage,
    cfg: DatasetConfig,
    current_features: pl.DataFrame,
    settings: ChurnSettings,
    run_id: str,
) -> dict[str, Any]:
    """Compute drift against the deployed reference and store table + HTML report."""
    from churn_assets.lib.drift import DriftThresholds, compute_drift
    from churn_assets.lib.drift_report import render_html
    from churn_assets.lib.markdown import to_markdown
    from churn_assets.lib.scoring import load_deployed, score_frame

    if dep.read_current(storage) is None:
        return {
            "status": "no_deployment",
            "drifted": False,
            "message": "nothing is deployed yet: no reference to compare with",
        }
    deployed = load_deployed(storage)
    ref_file = deployed.manifest.get("reference", {}).get("file", "reference.parquet")
    reference = pl.read_parquet(
        io.BytesIO(dep.load_pipeline_bytes(storage, deployed.manifest, ref_file))
    )
    from churn_assets.lib.feature_sets import align_to

    scores = score_frame(deployed, current_features)
    predictions = [p for p in PREDICTIONS if p in reference.columns]
    if not deployed.has_value_model:
        predictions = [p for p in predictions if p != "expected_total_sales"]
    current = align_to(current_features, deployed.columns).join(
        scores.select("customer_id", *predictions), on="customer_id", how="left"
    )
    thresholds = DriftThresholds(**cfg.drift.model_dump())
    feats = deployed.manifest["features"]
    result = compute_drift(
        reference, current, feats["numeric"], feats["categorical"], predictions, thresholds
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"monitoring/drift/{stamp}-{run_id[:8]}"
    table_url = storage.write_parquet(f"{base}/drift.parquet", result.table)
    html = render_html(
        result,
        reference,
        current,
        title=f"Drift report — {cfg.name}",
        meta={"model version": deployed.version, "run": run_id, "created": stamp},
    )
    report_url = storage.write_bytes(f"{base}/report.html", html.encode())
    storage.write_json(
        LATEST_SUMMARY,
        {
            "drifted": bool(result.drifted),
            "share_drifted": float(result.share_drifted),
            "drifted_columns": list(result.drifted_columns),
            "prediction_drift": bool(result.prediction_drift),
            "model_version": deployed.version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "run_id": run_id,
            "report_url": report_url,
        },
    )
    mlflow_run_id = None
    try:
        from churn_assets.lib.tracking import TrackingConfig, log_file

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "drift_report.html"
            path.write_text(html)
            mlflow_run_id = log_file(
                TrackingConfig.from_settings(settings, cfg.name),
                str(path),
                "drift-report",
                {
                    "dataset": cfg.name,
                    "model_version": deployed.version,
                    "drifted": str(result.drifted),
                },
            )
    except Exception as e:  # tracking is secondary here: the report is stored anyway
        mlflow_run_id = f"not logged: {e}"
    shown = result.table.sort("drifted", "value", descending=[True, True]).head(30)
    return {
        "status": "ok",
        "drifted": result.drifted,
        "share_drifted": result.share_drifted,
        "drifted_columns": result.drifted_columns,
        "prediction_drift": result.prediction_drift,
        "model_version": deployed.version,
        "reference_rows": result.reference_rows,
        "current_rows": result.current_rows,
        "table_url": table_url,
        "report_url": report_url,
        "table_markdown": to_markdown(shown),
        "mlflow_run_id": mlflow_run_id,
        "created_at": stamp,
    }
