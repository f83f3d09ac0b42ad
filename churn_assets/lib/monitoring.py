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
#: Rows of the drift table shown in the asset's metadata (the stored table has them all).
SHOWN_ROWS = 30


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
        from churn_assets.lib.tracking import DRIFT_REPORT_RUN, TrackingConfig, log_file

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "drift_report.html"
            path.write_text(html)
            mlflow_run_id = log_file(
                TrackingConfig.from_settings(settings, cfg.name),
                str(path),
                DRIFT_REPORT_RUN,
                {
                    "dataset": cfg.name,
                    "model_version": deployed.version,
                    "drifted": str(result.drifted),
                },
            )
    except Exception as e:  # tracking is secondary here: the report is stored anyway
        mlflow_run_id = f"not logged: {e}"
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
        **presentation(result),
        "mlflow_run_id": mlflow_run_id,
        "created_at": stamp,
    }


def presentation(result: Any, limit: int = SHOWN_ROWS) -> dict[str, Any]:
    """What the drift assets show of a :class:`~churn_assets.lib.drift.DriftResult`:
    ``verdict_reasons``, ``share_threshold`` and ``table_markdown`` (:func:`table_markdown`)."""
    from churn_assets.lib.drift import verdict_reasons

    return {
        "verdict_reasons": verdict_reasons(result),
        "share_threshold": float(result.thresholds.share_drifted),
        "table_markdown": table_markdown(result.table, limit),
    }


def table_markdown(table: pl.DataFrame, limit: int = SHOWN_ROWS) -> str:
    """The drift table as markdown under a line saying what it shows: drifted columns
    first, then the prediction rows (always shown), then the other features, each group by
    ``vs_threshold`` (the measure over its threshold; categorical: the larger of L1 and JS
    over theirs, so PSI and L1 rows compare), at most ``limit`` rows."""
    from churn_assets.lib.markdown import to_markdown

    ordered = _ordered(table)
    is_prediction = pl.col("kind") == "prediction"
    n_predictions = ordered.filter(is_prediction).height
    keep = pl.int_range(pl.len()).over(is_prediction) < max(limit - n_predictions, 0)
    shown = ordered.filter(is_prediction | keep).drop("_order")
    total = table.height
    head = (
        f"All {total} columns"
        if shown.height == total
        else f"{shown.height} of {total} columns shown; the HTML report and the stored table "
        "have all"
    )
    note = (
        f"_{head}. Drifted first, then the model's predictions, then the other features, "
        "each by vs_threshold (the measure over its threshold; categorical: the larger of "
        "L1 and JS over theirs)._"
    )
    return f"{note}\n\n{to_markdown(shown)}"


def _ordered(table: pl.DataFrame) -> pl.DataFrame:
    """``table`` with ``vs_threshold`` after ``js_threshold``, in the order of
    :func:`table_markdown` (``_order`` is the sort key: a drifted column without a value,
    such as one side all missing, ranks first)."""

    def ratio(value: str, threshold: str) -> pl.Expr:
        v, t = pl.col(value), pl.col(threshold)
        return pl.when(t > 0).then(v / t).when(v > 0).then(float("inf")).otherwise(0.0)

    vs = pl.max_horizontal(ratio("value", "threshold"), ratio("js", "js_threshold"))
    order = vs.fill_null(pl.when(pl.col("drifted")).then(float("inf")).otherwise(-1.0))
    columns = list(table.columns)
    at = columns.index("js_threshold") + 1 if "js_threshold" in columns else len(columns)
    return (
        table.with_columns(vs.alias("vs_threshold"), order.alias("_order"))
        .select(*columns[:at], "vs_threshold", *columns[at:], "_order")
        .sort(
            ["drifted", pl.col("kind") == "prediction", "_order"],
            descending=True,
            maintain_order=True,
        )
    )


def drift_description(out: dict[str, Any], where: str = "") -> str:
    """The drift check's one line: the verdict and why, how many columns drifted against
    the share threshold, the first drifted columns."""
    columns = list(out["drifted_columns"])
    reasons = list(out.get("verdict_reasons") or [])
    verdict = "DRIFT" if out["drifted"] else "no drift"
    why = f" ({'; '.join(reasons)})" if reasons else ""
    share = f"{out['share_drifted']:.0%} of features"
    if out.get("share_threshold") is not None:
        share += f"; share threshold {out['share_threshold']:.0%}"
    named = f": {', '.join(columns[:10])}" if columns else ""
    more = f" and {len(columns) - 10} more" if len(columns) > 10 else ""
    return f"{verdict}{where}{why}: {len(columns)} drifted column(s) ({share}){named}{more}"
