"""A pointer moved outside a run (``churn rollback``) recorded in the Dagster instance, so
that what follows the deployed version there follows it too: ``churn_scores`` re-scores
(its eager condition sees ``deployed_model_version`` updated)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

#: The asset whose materialization says "the deployed version changed".
DEPLOYED = "deployed_model_version"


def deployment_key(dataset: str, default_dataset: str) -> dg.AssetKey:
    """``deployed_model_version``'s key for ``dataset``: plain in the default code location
    (the one serving ``default_dataset``), under the data set's prefix in its own location
    (``telco/deployed_model_version``, see :mod:`churn_assets.scope`)."""
    return dg.AssetKey([DEPLOYED] if dataset == default_dataset else [dataset, DEPLOYED])


def rollback_materialization(key: dg.AssetKey, version: str, how: str) -> dg.AssetMaterialization:
    """The materialization that records a rollback to ``version`` (``how``: by what)."""
    return dg.AssetMaterialization(
        asset_key=key,
        description=f"deployed version is now {version} ({how}); churn_scores follows it",
        metadata={"version": version, "rolled_back": True, "by": how},
    )


def report_rollback(home: Path, key: dg.AssetKey, version: str, how: str) -> str:
    """Record the rollback in the instance at ``home`` (``$DAGSTER_HOME``); returns what
    was done, for the operator."""
    if not (home / "dagster.yaml").exists():
        return (
            f"no Dagster instance at {home} (set DAGSTER_HOME): churn_scores re-scores with "
            "the next landing or retraining run"
        )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(rollback_materialization(key, version, how))
    return f"recorded in the Dagster instance: churn_scores re-scores with {version}"
