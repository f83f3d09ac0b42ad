"""The hourly retraining schedule and the daily retention schedule."""

import dagster as dg

from churn_assets.jobs import retention_job, retraining_job

DEFAULT_CRON = "0 * * * *"


def retraining_schedule(cron: str = DEFAULT_CRON) -> dg.ScheduleDefinition:
    """Retrain both model sets and gate a deployment on ``cron`` (default hourly)."""
    return dg.ScheduleDefinition(
        name="hourly_retraining",
        job=retraining_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retraining run on '{cron}' (CHURN_RETRAINING_CRON); it queues behind "
        "any retraining run already in progress.",
        tags={"churn/trigger": "schedule"},
    )


RETENTION_CRON = "30 3 * * *"

retention_schedule = dg.ScheduleDefinition(
    name="daily_retention",
    job=retention_job,
    cron_schedule=RETENTION_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prunes old versions, reports, quarantine batches, inference-log days and "
    "MLflow runs every night (counts from CHURN_RETENTION_*).",
    tags={"churn/trigger": "schedule"},
)
