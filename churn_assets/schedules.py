"""The hourly retraining schedule and the daily retention schedule."""

import os

import dagster as dg

from churn_assets import scope
from churn_assets.jobs import LANDING_JOB_NAMES, retention_job, retraining_job
from churn_assets.tick_errors import posting_errors
from churn_assets.training_state import (
    TRAINING_INPUTS,
    failing_on_the_same_data,
    landing_on_its_way,
    last_completed_training_record,
    latest_inputs,
    retraining_on_its_way,
    training_mark,
)

DEFAULT_CRON = "0 * * * *"


def retraining_cron() -> str:
    """``CHURN_RETRAINING_CRON`` (default hourly), checked: a cron Dagster cannot read, or
    one that never fires (``0 0 31 2 *``), is a setting error naming the variable instead of
    a code location that fails to load with croniter's message."""
    import time

    from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

    from churn_assets.lib.settings import SettingError

    cron = (os.environ.get("CHURN_RETRAINING_CRON") or "").strip() or DEFAULT_CRON
    problem = None if is_valid_cron_string(cron) else "not a cron string Dagster reads"
    if problem is None:
        try:
            next(cron_string_iterator(time.time(), cron, "UTC"))
        except Exception as e:  # croniter: a date that never comes
            problem = f"it never fires ({e})"
    if problem:
        raise SettingError(
            f"CHURN_RETRAINING_CRON={cron!r}: {problem}; it takes five fields, minute hour "
            f"day-of-month month day-of-week (unset: {DEFAULT_CRON!r}, hourly)"
        )
    return cron


def retraining_schedule(cron: str = DEFAULT_CRON) -> dg.ScheduleDefinition:
    """Retrain both model sets and gate a deployment on ``cron`` (default hourly), when the
    training set's inputs changed since the last completed training."""

    @dg.schedule(
        name="hourly_retraining",
        job=retraining_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retraining run on '{cron}' (CHURN_RETRAINING_CRON) when new data "
        f"arrived since the last completed training ({', '.join(TRAINING_INPUTS)} "
        "materialized, by another run, after it started), no retraining run that will "
        "train on that data is already queued or in progress, and no landing run of the "
        "data set queued or started in the last CHURN_LANDING_WAIT_SECONDS (default 2 h) "
        "is still writing the raw tables; otherwise the tick is skipped with the reason.",
    )
    @posting_errors("hourly_retraining", "no retraining is started on new data", "Schedule")
    def hourly_retraining(context: dg.ScheduleEvaluationContext):
        from churn_assets.lib.retraining_policy import scheduled_retraining

        instance = context.instance
        trained = last_completed_training_record(instance)
        verdict = scheduled_retraining(
            latest_inputs(instance, trained), training_mark(instance, trained)
        )
        if not verdict.due:
            return dg.SkipReason(verdict.reason)
        busy = (
            failing_on_the_same_data(instance, retraining_job.name)
            or retraining_on_its_way(instance, retraining_job.name)
            or landing_on_its_way(instance, LANDING_JOB_NAMES)
        )
        if busy:
            return dg.SkipReason(busy)
        tick = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"schedule-{tick.isoformat()}" if tick else None,
            tags={
                "churn/trigger": "schedule",
                "churn/reason": verdict.reason[:200],
                **scope.dataset_tags(),
            },
        )

    return hourly_retraining


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
