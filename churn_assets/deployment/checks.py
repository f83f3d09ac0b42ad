from typing import Any

import dagster as dg

from churn_assets.deployment.assets import deployed_model_version
from churn_assets.resources import ChurnPlatform


@dg.asset_check(asset=deployed_model_version, blocking=True)
def served_models_above_floors(
    platform: ChurnPlatform, deployed_model_version: dict[str, Any]
) -> dg.AssetCheckResult:
    """Nothing below the floors is served: the deployed version's churn model has a holdout
    ROC-AUC at or above ``models.min_roc_auc`` and its value model (if any) beats the naive
    baseline or is the naive baseline. Blocks scoring when nothing can be served."""
    from churn_assets.lib import deployment as dep
    from churn_assets.lib.release import GateSettings, passes_floor

    cfg = platform.dataset_config()
    version = deployed_model_version.get("version")
    if not version:
        return dg.AssetCheckResult(
            passed=False,
            description="nothing is deployed: " + deployed_model_version["decision"]["reason"],
        )
    manifest = dep.read_manifest(platform.storage(), version)
    settings = GateSettings.from_models(cfg.models)
    problems, notes = [], []
    for role in ("classifier", "regressor"):
        entry = manifest["models"].get(role)
        if entry is None:
            if role == "classifier":
                problems.append("no churn model")
            continue
        ok, why = passes_floor(role, {"name": entry["candidate"], **entry}, settings)
        (notes if ok else problems).append(f"{role}: {why}")
    return dg.AssetCheckResult(
        passed=not problems,
        description=f"{version}: " + "; ".join(problems or notes),
        metadata={"version": version, "value_model": "regressor" in manifest["models"]},
    )
