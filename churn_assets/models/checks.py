from typing import Any

import dagster as dg

from churn_assets.models.assets import classification_models, regression_models
from churn_assets.resources import ChurnPlatform


@dg.asset_check(asset=classification_models, blocking=True)
def churn_champion_above_floor(
    platform: ChurnPlatform, classification_models: dict[str, Any]
) -> dg.AssetCheckResult:
    """Refuses a churn champion whose holdout ROC-AUC is below the data set's floor
    (``models.min_roc_auc``, default 0.70): nothing is deployed from this run."""
    floor = platform.dataset_config().models.min_roc_auc
    auc = float(classification_models["champion_metrics"]["roc_auc"])
    return dg.AssetCheckResult(
        passed=auc >= floor,
        description=f"{classification_models['champion']} holdout ROC-AUC {auc:.4f} "
        f"{'≥' if auc >= floor else '<'} floor {floor:.2f}",
        metadata={"roc_auc": auc, "floor": floor},
    )


@dg.asset_check(asset=regression_models, blocking=True)
def value_champion_beats_naive(
    platform: ChurnPlatform, regression_models: dict[str, Any]
) -> dg.AssetCheckResult:
    """Refuses a value champion that does not beat the naive baseline (past spend scaled
    to the horizon) on R² over the same holdout (``models.value_must_beat_naive``)."""
    required = platform.dataset_config().models.value_must_beat_naive
    gain = float(regression_models["champion_metrics"].get("r2_gain_vs_naive", 0.0))
    ok = gain > 0 or not required
    return dg.AssetCheckResult(
        passed=ok,
        description=f"{regression_models['champion']} R² gain over naive {gain:+.4f}"
        + ("" if required else " (not required by this data set)"),
        metadata={"r2_gain_vs_naive": gain, "r2": regression_models["champion_metrics"]["r2"]},
    )
