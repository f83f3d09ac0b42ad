"""Realized model performance: the scores of past scoring runs against what the customers
then did, once the label horizon has passed (framework-free logic in lib/realized.py)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from churn_assets.io_managers import lazy_input
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import STORAGE_RETRY, fail_fast_unless_transient

REALIZED_CHECK = "realized_roc_auc_holds"
#: Headline figures of the latest evaluated snapshot, as numeric metadata (UI plots).
_REALIZED_FLOATS = {
    "realized_roc_auc": "roc_auc",
    "realized_pr_auc": "pr_auc",
    "realized_brier": "brier",
    "realized_calibration_error": "calibration_error",
    "observed_churn_rate": "observed_churn_rate",
    "expected_churn_rate": "expected_churn_rate",
    "realized_value_mae": "value_mae",
    "realized_value_r2": "value_r2",
}
_DEPLOYED_FLOATS = {
    "deployed_roc_auc": "roc_auc",
    "deployed_pr_auc": "pr_auc",
    "deployed_brier": "brier",
    "deployed_value_mae": "value_mae",
    "deployed_value_r2": "value_r2",
}


class RealizedConfig(dg.Config):
    """``margin``: the allowed drop of realized ROC-AUC below the deployment-time one;
    unset means ``CHURN_REALIZED_MARGIN`` (default 0.05)."""

    margin: float | None = Field(default=None, ge=0, le=1)


def realized_metadata(out: dict[str, Any]) -> dict[str, Any]:
    """Materialization metadata of a realized-performance report: the latest evaluated
    snapshot's figures as floats (plotted over time by the UI), its deployment-time ones
    beside them, the verdict, and markdown tables of every snapshot and of the deciles."""
    from churn_assets.lib.markdown import to_markdown
    from churn_assets.lib.realized import deciles_frame, summary_rows

    meta: dict[str, Any] = {
        "status": out["status"],
        "message": out["message"],
        "retraining_requested": dg.MetadataValue.bool(bool(out.get("retraining_requested"))),
    }
    if out["status"] == "not_applicable":
        return meta
    meta["snapshots_evaluated"] = dg.MetadataValue.int(len(out.get("snapshots", [])))
    meta["snapshots_pending"] = dg.MetadataValue.int(len(out.get("pending", [])))
    if out.get("observed_until"):
        meta["observed_until"] = out["observed_until"]
    if out.get("pending"):
        meta["pending"] = dg.MetadataValue.json(out["pending"][-20:])
    if out["status"] != "ok":
        return meta
    latest = out["latest"]
    realized, deployed = latest["realized"], latest["deployment"]
    verdict = out["verdict"]
    meta |= {
        "model_version": latest["version"],
        "cutoff": latest["cutoff"],
        "horizon_end": latest["horizon_end"],
        "verdict": "holds" if verdict["passed"] else "degraded",
        "verdict_reason": verdict["reason"],
        "n": dg.MetadataValue.int(int(realized["n"])),
        "positives": dg.MetadataValue.int(int(realized["positives"])),
    }
    for key, name in _REALIZED_FLOATS.items():
        if realized.get(name) is not None:
            meta[key] = dg.MetadataValue.float(float(realized[name]))
    for key, name in _DEPLOYED_FLOATS.items():
        if deployed.get(name) is not None:
            meta[key] = dg.MetadataValue.float(float(deployed[name]))
    if realized.get("roc_auc") is not None and deployed.get("roc_auc") is not None:
        drop = float(deployed["roc_auc"]) - float(realized["roc_auc"])
        meta["roc_auc_drop"] = dg.MetadataValue.float(drop)
    meta["snapshots"] = dg.MetadataValue.md(to_markdown(summary_rows(out)))
    meta["deciles"] = dg.MetadataValue.md(to_markdown(deciles_frame(latest)))
    meta["snapshot_file"] = dg.MetadataValue.path(latest["snapshot"])
    return meta


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="monitoring",
    deps=["churn_scores"],
    kinds={"polars"},
    # a lazy scan: while no snapshot's horizon has passed only the timestamps are read
    ins={"raw_transactions": lazy_input()},
    check_specs=[
        dg.AssetCheckSpec(
            REALIZED_CHECK,
            asset="realized_performance",
            description="Fails when the realized ROC-AUC of the latest evaluated scoring "
            "snapshot is below the data set's floor (models.min_roc_auc) or more than "
            "CHURN_REALIZED_MARGIN (default 0.05) below the version's deployment-time "
            "holdout ROC-AUC; the failure requests a retraining run (realized sensor).",
        )
    ],
)
def realized_performance(
    context: dg.AssetExecutionContext,
    config: RealizedConfig,
    platform: ChurnPlatform,
    raw_transactions,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """How the deployed models did in reality. Every scoring run of ``churn_scores`` keeps
    a snapshot (``scores/<version>/<cut-off>.parquet``); once the raw transactions cover a
    snapshot's cut-off plus the data set's ``horizon_days``, its scores are joined with what
    the customers then did (the training label definitions: churned = no purchase in the
    horizon, total sales = net spend in it) and measured per model version: n and churned
    customers, ROC-AUC, PR-AUC, Brier, expected vs observed churn rate by decile, MAE and R²
    of expected_total_sales, next to the same figures at deployment time (the version's
    holdout, from its manifest). Headline figures are those of the latest evaluated
    snapshot, as numeric metadata the UI plots over time. Snapshots not yet evaluable are
    listed as pending; data sets whose churn label is a column are "not applicable" (a
    snapshot has no time axis, and purchases beside one do not say what the column will)."""
    from churn_assets.lib.feature_sets import usable
    from churn_assets.lib.realized import evaluate_snapshots

    with fail_fast_unless_transient():
        cfg = platform.dataset_config()
        margin = platform.settings().realized_margin if config.margin is None else config.margin
        if cfg.transactions is None:
            out: dict[str, Any] = {
                "status": "not_applicable",
                "message": f"data set '{cfg.name}' has no transactions (labels from columns): "
                "there is no time axis along which outcomes arrive after a scoring run",
                "retraining_requested": False,
            }
        elif cfg.labels.source != "transactions":
            # what the customers then did would be judged as "no purchase in the horizon",
            # a label the models never learned (theirs is the churn column)
            out = {
                "status": "not_applicable",
                "message": f"data set '{cfg.name}' takes its churn label from the column "
                f"{cfg.labels.churned_column!r}, not from purchases: its transactions cannot "
                "tell what that column will say after a scoring run",
                "retraining_requested": False,
            }
        else:
            transactions, _ = usable(raw_transactions)
            out = evaluate_snapshots(
                platform.storage(),
                transactions,
                cfg.labels.horizon_days,
                floor=cfg.models.min_roc_auc,
                margin=margin,
                exit_events=tuple(cfg.transactions.exit_events) if cfg.transactions else (),
            )
    context.log.info(out["message"])
    yield dg.Output(out, metadata=realized_metadata(out))
    if out["status"] != "ok":
        yield dg.AssetCheckResult(
            check_name=REALIZED_CHECK,
            passed=True,
            description=f"nothing to judge: {out['message']}",
            metadata={"status": out["status"]},
        )
        return
    verdict = out["verdict"]
    check_meta: dict[str, Any] = {
        "model_version": verdict["version"],
        "cutoff": verdict["cutoff"],
        "floor": dg.MetadataValue.float(float(verdict["floor"])),
        "margin": dg.MetadataValue.float(float(verdict["margin"])),
        "retraining_requested": dg.MetadataValue.bool(bool(out["retraining_requested"])),
    }
    for key in ("realized_roc_auc", "deployed_roc_auc"):
        if verdict.get(key) is not None:
            check_meta[key] = dg.MetadataValue.float(float(verdict[key]))
    yield dg.AssetCheckResult(
        check_name=REALIZED_CHECK,
        passed=bool(verdict["passed"]),
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{verdict['version']} at {verdict['cutoff']}: {verdict['reason']}",
        metadata=check_meta,
    )
