from typing import Any

import dagster as dg

from churn_assets.models.assets import classification_models, regression_models, training_set
from churn_assets.resources import ChurnPlatform


@dg.asset_check(asset=classification_models)
def churn_champion_above_floor(
    platform: ChurnPlatform, classification_models: dict[str, Any]
) -> dg.AssetCheckResult:
    """Warns when this run's churn champion has a holdout ROC-AUC below the data set's
    floor (``models.min_roc_auc``, default 0.70). Such a challenger is never deployed:
    ``deployed_model_version`` keeps the deployed model (or deploys the best candidate that
    passes) and its own blocking check guards what is served."""
    from churn_assets.lib.release import GateSettings, passes_floor

    floor = platform.dataset_config().models.min_roc_auc
    auc = float(classification_models["champion_metrics"]["roc_auc"])
    entry = {
        "name": classification_models["champion"],
        "metrics": classification_models["champion_metrics"],
        "holdout": classification_models.get("holdout"),
    }
    settings = GateSettings.from_models(platform.dataset_config().models)
    ok, why = passes_floor("classifier", entry, settings)
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.WARN,
        description=why.replace(" ROC-AUC ", " holdout ROC-AUC ", 1),
        metadata={"roc_auc": auc, "floor": floor, **(entry["holdout"] or {})},
    )


@dg.asset_check(asset=regression_models)
def value_champion_beats_naive(
    platform: ChurnPlatform, regression_models: dict[str, Any]
) -> dg.AssetCheckResult:
    """Warns when this run's value champion does not beat the naive baseline (past spend
    scaled to the horizon) on holdout R² (``models.value_must_beat_naive``). Such a
    challenger is never deployed: the deployed value model is kept, or the naive baseline
    serves. Passes with "not applicable" for data sets without a value label."""
    if not regression_models.get("applicable", True):
        return dg.AssetCheckResult(passed=True, description=regression_models["reason"])
    required = platform.dataset_config().models.value_must_beat_naive
    champion = regression_models["champion"]
    gain = float(regression_models["champion_metrics"].get("r2_gain_vs_naive", 0.0))
    ok = gain > 0 or champion == "naive_baseline" or not required
    note = " (the naive baseline itself)" if champion == "naive_baseline" else ""
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{champion} R² gain over naive {gain:+.4f}{note}"
        + ("" if required else " (not required by this data set)"),
        metadata={"r2_gain_vs_naive": gain, "r2": regression_models["champion_metrics"]["r2"]},
    )


#: A value model explaining this much of the label on the holdout computes it from the
#: features rather than forecasting it: future spend is never that predictable (the shipped
#: transaction data sets reach R² 0.66-0.90).
VALUE_LABEL_R2 = 0.98


@dg.asset_check(asset=regression_models)
def value_label_is_not_a_function_of_features(
    regression_models: dict[str, Any],
) -> dg.AssetCheckResult:
    """Warns when the value champion explains nearly all of the value label on the
    holdout (R² ≥ 0.98): the label is then (almost) computed from the features, like a
    snapshot's charges to date (Telco's ``TotalCharges`` ≈ ``tenure`` × ``MonthlyCharges``),
    so the value model reports what customers have paid, not a forecast of what they will
    spend. A value label should be spend after the snapshot or cut-off."""
    if not regression_models.get("applicable", True):
        return dg.AssetCheckResult(passed=True, description=regression_models["reason"])
    champion = regression_models["champion"]
    r2 = float(regression_models["champion_metrics"]["r2"])
    ok = r2 < VALUE_LABEL_R2
    text = f"{champion} holdout R² {r2:.4f}"
    if not ok:
        text += (
            f" ≥ {VALUE_LABEL_R2}: the value label is almost a function of the features (a "
            "total to date, e.g. tenure × monthly charges), so expected_total_sales restates "
            "past spend rather than forecasting it; label spend after the cut-off instead"
        )
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.WARN,
        description=text,
        metadata={"r2": r2, "limit": VALUE_LABEL_R2},
    )


@dg.asset_check(asset=training_set)
def no_single_feature_leak(training_set: Any) -> dg.AssetCheckResult:
    """Warns when one feature alone predicts churn almost perfectly (out-of-fold ROC-AUC
    ≥ 0.99 on the training rows, or on the validation and holdout rows, which a temporal
    split takes at a later cut-off): nearly always a value recorded after the outcome (a
    churn value or reason beside the label, a status as of the export), which makes the
    model perfect on paper and useless in service. Lists each feature's ROC-AUC alone (the
    higher of the two), highest first."""
    import polars as pl

    from churn_assets.lib.datasets import BEHAVIOUR_COLUMNS, BEHAVIOUR_PREFIXES
    from churn_assets.lib.leakage import LEAK_ROC_AUC, leaking_columns
    from churn_assets.lib.models.spec import DEFAULT_EXCLUDE

    train = training_set.filter(pl.col("split") == "train")
    skip = {*DEFAULT_EXCLUDE, "split"}
    columns = [
        c
        for c, t in train.schema.items()
        if c not in skip and (t.is_numeric() or t in (pl.String, pl.Boolean, pl.Categorical))
    ]
    leaks, ranked = leaking_columns(train, train["churned"].to_numpy().astype(int), columns)
    later = training_set.filter(pl.col("split") != "train")
    if later.height and later["churned"].n_unique() == 2:
        # a temporal split trains on an earlier cut-off: a value recorded at the export (a
        # status "inactive") leaks at the evaluation cut-off, not at the earlier one
        more, again = leaking_columns(later, later["churned"].to_numpy().astype(int), columns)
        ranked = dict(
            sorted(
                ((c, max(a, again.get(c, 0.0))) for c, a in ranked.items()), key=lambda kv: -kv[1]
            )
        )
        leaks = {c: a for c, a in ranked.items() if c in leaks or c in more}
    top = list(ranked.items())[:10]
    shown = ", ".join(f"{c} {a:.3f}" for c, a in top[:3])
    if leaks:
        named = ", ".join(f"'{c}' (ROC-AUC {a:.3f})" for c, a in leaks.items())
        behaviour = [c for c in leaks if c in BEHAVIOUR_COLUMNS or c.startswith(BEHAVIOUR_PREFIXES)]
        description = f"{named} alone predict(s) churn almost perfectly: " + (
            "a feature of the lines before the cut-off, so the table likely holds customers "
            "who had left already (a cancellation among their lines, long inactivity), whose "
            "churn is no prediction; leave them out: labels.active_within_days leaves out "
            "the long inactive, and transactions.exit_events (the event that means a "
            "customer left, e.g. 'Cancellation Confirmation') those who cancelled"
            if behaviour
            else "a value recorded after the outcome leaks the label; leave it out of the "
            "data set config unless it is known before"
        )
    else:
        description = (
            f"no feature predicts churn almost perfectly alone (highest ROC-AUC alone: {shown})"
        )
    return dg.AssetCheckResult(
        passed=not leaks,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "threshold": LEAK_ROC_AUC,
            "roc_auc_alone": dg.MetadataValue.json({c: round(a, 4) for c, a in top}),
            "rows": training_set.height,
        },
    )
