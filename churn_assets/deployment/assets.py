from typing import Any

import dagster as dg

from churn_assets.metadata import table_metadata
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import STORAGE_RETRY


@dg.asset(
    retry_policy=STORAGE_RETRY, group_name="deployment", kinds={"s3", "mlflow"}, pool="retraining"
)
def deployed_model_version(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    classification_models: dict[str, Any],
    regression_models: dict[str, Any],
    training_set,
    current_features,
) -> dg.Output[dict[str, Any]]:
    """The deployed model version. The challengers (both champions) are compared with the
    deployed version on the same holdout; promoted when better on a primary metric and
    worse on none (or when nothing is deployed), otherwise the deployed version is kept
    and the materialization says so. A promotion writes ``vYYYYMMDD-HHMMSS/`` (models,
    fallbacks, reference sample, manifest with sha256 of every artifact) and then moves
    the ``current.json`` pointer, last and atomically; MLflow alias ``champion`` follows."""
    from churn_assets.lib.release import release
    from churn_assets.lib.tracking import TrackingConfig, set_champion_alias

    cfg = platform.dataset_config()
    storage = platform.storage()
    out = release(
        storage,
        dataset=cfg.name,
        classification=classification_models,
        regression=regression_models,
        training_set=training_set,
        tolerance=cfg.models.gate_tolerance,
        promote_ties=cfg.models.promote_ties,
        reference_features=current_features,
        lineage={
            "dagster_run_id": context.run.run_id,
            "training_set_rows": training_set.height,
            "features": storage.url("assets/customer_features.parquet"),
        },
    )
    decision = out["decision"]
    if out["promoted"]:
        tracking = TrackingConfig.from_settings(platform.settings(), cfg.name)
        for role in ("classifier", "regressor"):
            m = out["manifest"]["models"][role]
            set_champion_alias(tracking, m["registered_model"], m["registered_version"])
        context.log.info(f"promoted {out['version']}: {decision['reason']}")
    else:
        context.log.warning(f"kept {out['version']}: {decision['reason']}")
    value = {k: v for k, v in out.items() if k != "manifest"}
    return dg.Output(
        value,
        metadata={
            "version": dg.MetadataValue.text(str(out["version"])),
            "promoted": dg.MetadataValue.bool(out["promoted"]),
            "decision": dg.MetadataValue.text(decision["reason"]),
            "challenger": dg.MetadataValue.json(decision["challenger"]),
            "deployed_before": dg.MetadataValue.json(decision["deployed"] or {}),
            "pointer": dg.MetadataValue.path(storage.url("deployments/current.json")),
        },
    )


@dg.asset(retry_policy=STORAGE_RETRY, group_name="deployment", kinds={"polars", "parquet"})
def churn_scores(
    platform: ChurnPlatform, current_features, deployed_model_version: dict
) -> dg.Output:
    """Batch scores of every customer with the deployed version: churn probability, churn
    label at the stored threshold, expected total sales and the model version."""
    from churn_assets.lib.scoring import load_deployed, score_frame

    deployed = load_deployed(platform.storage())
    scores = score_frame(deployed, current_features)
    return dg.Output(
        scores,
        metadata={
            **table_metadata(scores),
            "model_version": dg.MetadataValue.text(deployed.version),
            "predicted_churn_rate": dg.MetadataValue.float(float(scores["churn_label"].mean())),
            "expected_total_sales_sum": dg.MetadataValue.float(
                float(scores["expected_total_sales"].sum())
            ),
        },
    )
