"""The one Dagster ``Definitions`` of the churn platform (loaded by workspace.yaml)."""

import dagster as dg

from churn_assets.deployment import assets as deployment_assets
from churn_assets.features import assets as feature_assets
from churn_assets.features.checks import customer_features_valid
from churn_assets.io_managers import ChurnIOManager
from churn_assets.jobs import ingest_and_features_job, retraining_job, rollback_deployment_job
from churn_assets.models import assets as model_assets
from churn_assets.models.checks import churn_champion_above_floor, value_champion_beats_naive
from churn_assets.raw import assets as raw_assets
from churn_assets.resources import ChurnPlatform


def build_definitions(
    platform: ChurnPlatform | None = None, io_manager: ChurnIOManager | None = None
) -> dg.Definitions:
    """Definitions with the given resources (default: everything from the environment)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(
            [raw_assets, feature_assets, model_assets, deployment_assets]
        ),
        asset_checks=[
            customer_features_valid,
            churn_champion_above_floor,
            value_champion_beats_naive,
        ],
        jobs=[ingest_and_features_job, retraining_job, rollback_deployment_job],
        resources={
            "platform": platform or ChurnPlatform(),
            "io_manager": io_manager or ChurnIOManager(),
        },
    )


defs = build_definitions()
