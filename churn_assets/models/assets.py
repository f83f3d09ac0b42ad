from typing import Any

import dagster as dg

from churn_assets import scope
from churn_assets.deployment.assets import refuse_unknown_rollback
from churn_assets.io_managers import lazy_input
from churn_assets.metadata import table_metadata
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import STORAGE_RETRY, fail_fast_unless_transient

NUMERIC_META = (
    "roc_auc",
    "pr_auc",
    "f1",
    "precision",
    "recall",
    "brier",
    "log_loss",
    "rmse",
    "mae",
    "r2",
    "r2_gain_vs_naive",
    "rmse_gain_vs_naive",
    "cv_roc_auc_mean",
    "cv_roc_auc_sd",
)


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="models",
    kinds={"polars", "parquet"},
    pool=scope.pool("retraining"),
    ins={"raw_transactions": lazy_input()},
)
def training_set(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    customer_features,
    raw_customers,
    raw_transactions,
) -> dg.Output:
    """Labelled customers with a ``split`` column (train / validation / holdout),
    deterministic by seed. Snapshot data: split by a stable hash of ``customer_id``
    (a customer never changes split as the table grows). Transaction data:
    temporal validation — train on the cut-off one horizon earlier, validate and hold out
    on the later cut-off — whenever the history allows; the metadata says which ran. The
    transactions come as a lazy scan: only the columns the features use are read."""
    import polars as pl

    from churn_assets.lib.feature_sets import build_training_set, usable

    with fail_fast_unless_transient():
        refuse_unknown_rollback(context, platform)
        cfg = platform.dataset_config()
        customers, _ = usable(raw_customers)
        transactions, _ = usable(raw_transactions)
        frame, protocol = build_training_set(
            cfg,
            customer_features,
            customers if cfg.customers is not None else None,
            transactions if cfg.transactions is not None else None,
        )
    sizes = frame.group_by("split").agg(pl.len(), pl.col("churned").mean()).sort("split")
    return dg.Output(
        frame,
        metadata={
            **table_metadata(frame, preview_rows=5),
            "protocol": dg.MetadataValue.text(protocol["protocol"]),
            "protocol_description": dg.MetadataValue.text(protocol["description"]),
            "population": dg.MetadataValue.text(protocol["population"]),
            "splits": dg.MetadataValue.json(
                {
                    r["split"]: {"rows": r["len"], "churn_rate": r["churned"]}
                    for r in sizes.to_dicts()
                }
            ),
            "seed": dg.MetadataValue.int(cfg.seed),
            **{
                k: dg.MetadataValue.text(str(v))
                for k, v in protocol.items()
                if k.endswith("cutoff") and v
            },
        },
    )


def _not_applicable(reason: str) -> dg.Output[dict[str, Any]]:
    """A model set that does not apply to this data set (e.g. no value label)."""
    return dg.Output(
        {"kind": "regression", "applicable": False, "reason": reason},
        metadata={
            "status": dg.MetadataValue.text("not applicable"),
            "reason": dg.MetadataValue.text(reason),
        },
    )


def _train_model_set(
    context: dg.AssetExecutionContext, platform: ChurnPlatform, frame: Any, kind: str
) -> dg.Output[dict[str, Any]]:
    """Train one model set, log every candidate to MLflow, keep the files of the champion,
    the best simple candidate and (regression) the naive baseline for deployment."""
    from churn_assets.lib.deployment import sha256
    from churn_assets.lib.feature_sets import to_splits
    from churn_assets.lib.model_sets import train_model_set
    from churn_assets.lib.models.persistence import dumps_pipeline
    from churn_assets.lib.models.spec import feature_schema
    from churn_assets.lib.tracking import TrackingConfig, ensure_experiment, log_model_set

    cfg = platform.dataset_config()
    # fail before an expensive training when the tracking server is down
    tracking_cfg = TrackingConfig.from_settings(platform.settings(), cfg.name)
    ensure_experiment(tracking_cfg)
    splits = to_splits(frame)
    result, spec = train_model_set(kind, cfg, splits)
    tracking = log_model_set(
        result, tracking_cfg, dataset=cfg.name, tags={"dagster_run_id": context.run.run_id}
    )
    storage = platform.storage()
    roles = [("champion", result.champion), ("best_simple", result.best_simple)]
    if kind == "regression":
        roles.append(("naive", "naive_baseline"))
    holdout_size = None
    if kind == "classification":
        churned = splits["holdout"]["churned"]
        holdout_size = {"rows": int(len(churned)), "churned": int(churned.sum())}
    files = {}
    for role, name in roles:
        cand = result.get(name)
        data = dumps_pipeline(cand.pipeline)
        rel = f"models/{kind}/{context.run.run_id}/{role}-{name}.skops"
        files[role] = {
            "name": name,
            "url": storage.write_bytes(rel, data),
            "path": rel,
            "sha256": sha256(data),
            "metrics": cand.metrics,
            "threshold": cand.threshold,
            **({"holdout": holdout_size} if holdout_size else {}),
        }
    board = result.leaderboard()
    champ = result.champion_result
    selection = getattr(result, "selection", None) or {}
    value = {
        "kind": kind,
        "applicable": True,
        "champion": result.champion,
        "best_simple": result.best_simple,
        "primary_metric": result.primary_metric,
        "champion_metrics": champ.metrics,
        "champion_cv": champ.cv,
        **({"holdout": holdout_size} if holdout_size else {}),
        "threshold": champ.threshold,
        "best_simple_threshold": result.best_simple_result.threshold,
        "leaderboard": board.to_dict(orient="records"),
        "selection": selection,
        "files": files,
        "mlflow": tracking,
        "feature_spec": {"numeric": spec.numeric, "categorical": spec.categorical},
        "feature_schema": feature_schema(splits["train"], spec),
        "seed": cfg.seed,
    }
    metadata: dict[str, Any] = {
        "leaderboard": dg.MetadataValue.md(result.leaderboard_markdown()),
        "champion": dg.MetadataValue.text(result.champion),
        "best_simple": dg.MetadataValue.text(result.best_simple),
        "train_seconds": dg.MetadataValue.json(
            {c.name: round(c.train_seconds, 3) for c in result.candidates}
        ),
        "mlflow_parent_run_id": dg.MetadataValue.text(tracking["parent_run_id"]),
    }
    if selection:
        metadata["selection"] = dg.MetadataValue.json(selection)
    for k, v in {**champ.metrics, **champ.cv}.items():
        if k in NUMERIC_META and v == v:
            metadata[f"champion_{k}"] = dg.MetadataValue.float(float(v))
    if champ.threshold is not None:
        metadata["threshold"] = dg.MetadataValue.float(float(champ.threshold))
    if spec.left_out:
        metadata["features_left_out"] = dg.MetadataValue.json(spec.left_out)
        context.log.warning(
            "left out of the features (too few values to learn from): "
            + "; ".join(f"'{c}': {why}" for c, why in spec.left_out.items())[:500]
        )
    context.log.info(f"{kind} champion {result.champion}: {champ.metrics}")
    return dg.Output(value, metadata=metadata)


#: Pod resources of a training step when steps run as their own Kubernetes pods
#: (``k8s_job_executor`` of dagster-k8s); other executors ignore the tag. With the
#: ``K8sRunLauncher`` alone (one pod per run) the run pod's size in deploy/k8s/values.yaml
#: applies instead.
TRAINING_STEP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "2", "memory": "2Gi"},
                "limits": {"memory": "6Gi"},
            }
        }
    }
}


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="models",
    kinds={"sklearn", "mlflow"},
    pool=scope.pool("retraining"),
    op_tags=TRAINING_STEP_TAGS,
)
def classification_models(
    context: dg.AssetExecutionContext, platform: ChurnPlatform, training_set
) -> dg.Output[dict[str, Any]]:
    """The churn classification model set: logistic regression, random forest, extra
    trees, HistGradientBoosting, XGBoost, LightGBM and an ensemble of the best, each one
    scikit-learn Pipeline with its preprocessing. Every candidate is screened on
    validation, the best three are cross-validated, and the champion is the best on the mean
    of validation and CV; it is refitted on train + validation before the holdout. Decision
    threshold = max F1 on validation. The ``selection`` metadata says how it was chosen.
    Every candidate is a nested MLflow run; deployment registers the champion when it
    promotes it."""
    with fail_fast_unless_transient():
        return _train_model_set(context, platform, training_set, "classification")


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="models",
    kinds={"sklearn", "mlflow"},
    pool=scope.pool("retraining"),
    op_tags=TRAINING_STEP_TAGS,
)
def regression_models(
    context: dg.AssetExecutionContext, platform: ChurnPlatform, training_set
) -> dg.Output[dict[str, Any]]:
    """The customer-value (``total_sales``) model set: a naive baseline (past spend scaled
    to the horizon), ridge, polynomial ridge, random forest, HistGradientBoosting, XGBoost,
    LightGBM and heavy-tail variants (Tweedie, log target). The champion is the naive
    baseline, replaced by ridge when ridge beats it on validation, replaced by a more complex
    finalist only when it is confidently better on validation (paired bootstrap) and beats
    the step below it in CV; it is then blended with the naive forecast at the weight whose
    out-of-fold gain is confidently best (the naive forecast when no weight's gain is
    confidently positive) and refitted on train + validation. Holdout RMSE, MAE, R²
    and the gain over the naive baseline. A data set without a value label (a churn-only snapshot)
    materializes this asset as "not applicable": only the churn model is deployed."""
    with fail_fast_unless_transient():
        cfg = platform.dataset_config()
        if not cfg.has_value_label:
            why = (
                "its transactions are activity events without money: activity_only"
                if cfg.transactions is not None and cfg.transactions.activity_only
                else "labels.total_sales_column is not set"
            )
            reason = (
                f"not applicable: data set {cfg.name!r} has no value label ({why}), so only "
                "the churn model is trained"
            )
            context.log.info(reason)
            return _not_applicable(reason)
        negative = int((training_set["total_sales"] < 0).sum())
        if negative:  # credit balances, net refunds: a value model forecasts spend >= 0
            source = cfg.labels.total_sales_column or "the transactions' amounts"
            reason = (
                f"not applicable: {negative:,} customer(s) have a negative value label "
                f"(total_sales, from {source}); a value model forecasts spend of 0 or more: "
                "floor refunds before landing, or leave the value label out; only the churn "
                "model is trained"
            )
            context.log.warning(reason)
            return _not_applicable(reason)
        values = training_set["total_sales"].drop_nulls().unique()
        if values.len() == 1:  # every customer the same: nothing to learn, R² undefined
            reason = (
                f"not applicable: the value label (total_sales) is {values[0]:g} for every "
                "customer in the training set, so there is nothing to learn; only the churn "
                "model is trained"
            )
            context.log.warning(reason)
            return _not_applicable(reason)
        return _train_model_set(context, platform, training_set, "regression")
