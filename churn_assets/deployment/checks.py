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


@dg.asset_check(asset=deployed_model_version, blocking=True)
def served_graphs_match_pipelines(
    platform: ChurnPlatform, deployed_model_version: dict[str, Any]
) -> dg.AssetCheckResult:
    """Every model of the deployed version answers like its pipeline: its ONNX graph agrees
    again with the stored pipeline on the version's verification rows (reference sample plus
    probes: missing numerics, unseen categories, extreme values) within 1e-6 with identical
    labels, or the manifest records that the pipeline serves it and why."""
    from churn_assets.lib import deployment as dep
    from churn_assets.lib.onnx_export import check_version

    version = deployed_model_version.get("version")
    if not version:
        return dg.AssetCheckResult(passed=False, description="nothing is deployed")
    storage = platform.storage()
    result = check_version(storage, dep.read_manifest(storage, version))
    served = {role: r.get("serves") for role, r in result["roles"].items()}
    notes = [
        f"{role}: {r['serves']}"
        + _parity(r)
        + (f" ({r['reason']})" if r["serves"] == "pipeline" else "")
        for role, r in result["roles"].items()
    ]
    return dg.AssetCheckResult(
        passed=result["passed"],
        description=f"{version}: " + "; ".join(result["problems"] or notes),
        metadata={"version": version, "served_by": served},
    )


def _parity(r: dict[str, Any]) -> str:
    """How close the graph came: probabilities absolutely, values relative to themselves."""
    if r.get("max_rel_diff") is not None:
        return f" (max relative Δ {r['max_rel_diff']:.2g})"
    if r.get("max_abs_diff") is not None:
        return f" (max |Δ| {r['max_abs_diff']:.2g})"
    return ""
