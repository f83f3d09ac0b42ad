"""The one Dagster ``Definitions`` of the churn platform (loaded by workspace.yaml)."""

import dagster as dg

from churn_assets import scope
from churn_assets.alert_sensors import check_failure_notifier, run_failure_notifier
from churn_assets.automation import churn_automation
from churn_assets.deployment import assets as deployment_assets
from churn_assets.deployment import checks as deployment_checks
from churn_assets.features import assets as feature_assets
from churn_assets.features import checks as feature_checks
from churn_assets.freshness import stale_deployment_notifier
from churn_assets.io_managers import ChurnIOManager
from churn_assets.jobs import (
    OP_RESULTS,
    customers_landing_job,
    forkserver_executor,
    ingest_and_features_job,
    monitoring_job,
    retention_job,
    retraining_job,
    rollback_deployment_job,
    transactions_landing_job,
)
from churn_assets.models import assets as model_assets
from churn_assets.models import checks as model_checks
from churn_assets.monitoring import assets as monitoring_assets
from churn_assets.monitoring import realized as realized_monitoring
from churn_assets.monitoring import served as served_monitoring
from churn_assets.monitoring.served import served_drift_job, served_drift_schedule
from churn_assets.raw import assets as raw_assets
from churn_assets.resources import ChurnPlatform
from churn_assets.schedules import retention_schedule, retraining_cron, retraining_schedule
from churn_assets.sensors import (
    drift_sensor,
    landing_zone_sensor,
    realized_performance_sensor,
    run_failure_recorder,
    scores_follow_deployment,
)


def build_definitions(
    platform: ChurnPlatform | None = None, io_manager: ChurnIOManager | None = None
) -> dg.Definitions:
    """Definitions with the given resources (default: everything from the environment).

    Asset keys carry this code location's prefix, if any (:mod:`churn_assets.scope`: one
    location per data set, :mod:`churn_assets.locations`).

    The retraining cron is the one setting read when the code location loads
    (``CHURN_RETRAINING_CRON``, default hourly): a schedule's cron is part of its definition.
    """
    return dg.Definitions(
        assets=dg.load_assets_from_modules(
            [
                raw_assets,
                feature_assets,
                model_assets,
                deployment_assets,
                monitoring_assets,
                served_monitoring,
                realized_monitoring,
            ],
            key_prefix=scope.PREFIX,
        ),
        asset_checks=dg.load_asset_checks_from_modules(
            [feature_checks, model_checks, deployment_checks], asset_key_prefix=scope.PREFIX
        ),
        jobs=[
            ingest_and_features_job,
            monitoring_job,
            customers_landing_job,
            transactions_landing_job,
            retraining_job,
            rollback_deployment_job,
            retention_job,
            served_drift_job,
        ],
        schedules=[
            retraining_schedule(retraining_cron()),
            retention_schedule,
            served_drift_schedule,
        ],
        sensors=[
            churn_automation,
            landing_zone_sensor,
            scores_follow_deployment,
            drift_sensor,
            realized_performance_sensor,
            run_failure_recorder,
            run_failure_notifier,
            check_failure_notifier,
            stale_deployment_notifier,
        ],
        executor=forkserver_executor,
        resources={
            "platform": platform or ChurnPlatform(),
            "io_manager": io_manager or ChurnIOManager(),
            OP_RESULTS: dg.mem_io_manager,
        },
    )


defs = build_definitions()
