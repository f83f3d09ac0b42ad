"""Sensors that tell people: failed runs and failed asset checks → the alert webhook.

Both post a Slack-compatible message (run, step, asset, reason, link into the UI) to
``CHURN_ALERT_WEBHOOK_URL``, read at every evaluation; unset, they skip and say so. They are
run status sensors: Dagster keeps their cursor over finished runs (both storages, SQLite and
PostgreSQL), and like every such sensor they start with the runs that finish after their
first tick. The JSON failure records of ``run_failure_recorder`` (sensors.py) are kept either
way.
"""

from __future__ import annotations

import dagster as dg

from churn_assets import scope
from churn_assets.lib import notify
from churn_assets.scope import DATASET_TAG
from churn_assets.tick_errors import posting_errors

#: Seconds between evaluations: a failure is posted within about this long.
NOTIFY_INTERVAL_SECONDS = 15
#: At most this many failed checks of one run are posted one by one (the rest are counted).
MAX_CHECK_MESSAGES = 20
OFF = f"{notify.WEBHOOK_ENV} is not set: notifications are off"


def _step_assets(context: dg.RunFailureSensorContext) -> dict[str, list[str]] | None:
    """Step key → the asset keys its outputs materialize (from the run's execution plan);
    None when the plan is not available."""
    run = context.dagster_run
    if not run.execution_plan_snapshot_id:
        return None
    try:
        plan = context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    except Exception:  # the plan is a nicety: the message goes out without it
        return None
    out: dict[str, list[str]] = {}
    for step in plan.steps:
        keys = [
            o.properties.asset_key.to_user_string()
            for o in step.outputs
            if o.properties is not None and o.properties.asset_key is not None
        ]
        if keys:
            out[step.key] = keys
    return out


def run_failure_alert(context: dg.RunFailureSensorContext) -> notify.Alert:
    """The notification of a failed run: its failed steps, their assets and root causes."""
    from churn_assets.demo import root_cause_text

    run = context.dagster_run
    failures = [
        (e.step_key, root_cause_text(e.event_specific_data.error))
        for e in context.get_step_failure_events()
        if e.step_key and e.event_specific_data and e.event_specific_data.error
    ]
    step_assets = _step_assets(context)
    steps = tuple(step for step, _ in failures)
    # without the plan, an asset step's key is its asset's name; with it, an op has none
    assets = tuple(
        dict.fromkeys(
            a
            for step in steps
            for a in ([step] if step_assets is None else step_assets.get(step, []))
        )
    )
    if failures:
        reason = "\n".join(f"{step}: {cause}" for step, cause in failures)
    else:
        reason = context.failure_event.message or "the run failed before any step ran"
    details = {}
    # several data sets share one instance; a run launched in the UI or by `dagster asset
    # materialize` carries no tag, but this sensor watches its own code location's runs only
    details["Data set"] = run.tags.get(DATASET_TAG) or scope.DATASET
    if trigger := run.tags.get("churn/trigger"):
        details["Trigger"] = trigger
    checks = [
        f"{e.dagster_event.asset_check_evaluation_data.asset_key.to_user_string()} / "
        f"{e.dagster_event.asset_check_evaluation_data.check_name}"
        for e in failed_checks(context.instance, run.run_id)
    ]
    if checks:
        details["Failed checks"] = ", ".join(checks)
    return notify.Alert(
        title=f"Dagster run failed: {run.job_name}",
        reason=reason,
        link=notify.run_link(run.run_id),
        run_id=run.run_id,
        job=run.job_name,
        steps=steps,
        assets=assets,
        details=details,
    )


@dg.run_failure_sensor(
    minimum_interval_seconds=NOTIFY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run (job, failed steps, their assets, root causes, a link "
    "to the run) to the Slack-compatible webhook CHURN_ALERT_WEBHOOK_URL; skips when unset.",
)
@posting_errors("run_failure_notifier", "failed runs are not posted")
def run_failure_notifier(context: dg.RunFailureSensorContext):
    url = notify.webhook_url()
    run = context.dagster_run
    if url is None:
        context.log.info(f"run {run.run_id} failed; {OFF}")
        return dg.SkipReason(OFF)
    retried = _retried_by_the_daemon(context)
    if retried:  # an interrupted run the daemon launches again: no failure to act on yet
        context.log.info(f"run {run.run_id} not posted: {retried}")
        return dg.SkipReason(retried)
    status = notify.post_alert(url, run_failure_alert(context))
    context.log.info(f"run {run.run_id} ({run.job_name}) failure posted (HTTP {status})")
    return None


def _retried_by_the_daemon(context: dg.RunFailureSensorContext) -> str | None:
    """Why a failed run will be launched again by the daemon's run retries (no step failed:
    the run was interrupted, e.g. by a platform restart, and retries are left), or None.
    Only runs failed by a step, or out of retries, are posted."""
    run = context.dagster_run
    # the instance's verdict, set as the run failed and turned to "false" when the daemon
    # could not launch the retry (the code server not up yet after a restart): such a run
    # is never launched again, and skipping it lost its failure without a word
    verdict = run.tags.get("dagster/will_retry")
    if verdict == "false":
        return None
    if context.get_step_failure_events() and verdict != "true":
        return None
    try:
        allowed = int(run.tags.get("dagster/max_retries", "0"))
        done = int(run.tags.get("dagster/retry_number", "0"))
    except ValueError:
        return None
    if done >= allowed:
        return None
    return (
        f"interrupted before any step failed; the daemon launches it again (retry {done + 1} "
        f"of {allowed}), and a failure of that run is posted"
    )


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    """The run's asset check evaluations that did not pass, in order."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return [
        e
        for e in entries
        if e.dagster_event is not None
        and e.dagster_event.asset_check_evaluation_data is not None
        and not e.dagster_event.asset_check_evaluation_data.passed
    ]


def check_failure_alert(entry: dg.EventLogEntry, job: str | None = None) -> notify.Alert:
    """The notification of one failed asset check evaluation."""
    evaluation = entry.dagster_event.asset_check_evaluation_data
    asset = evaluation.asset_key.to_user_string()
    reason = evaluation.description or "; ".join(
        f"{k}: {getattr(v, 'value', v)}" for k, v in list(evaluation.metadata.items())[:8]
    )
    details = {"Check": evaluation.check_name}
    if evaluation.partition:
        details["Partition"] = evaluation.partition
    details["Run page"] = notify.run_link(entry.run_id)
    return notify.Alert(
        title=f"Asset check failed: {asset} / {evaluation.check_name}",
        reason=reason or "the check did not pass (no description)",
        link=notify.asset_link(asset, view="checks"),
        severity="error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning",
        run_id=entry.run_id,
        job=job,
        steps=(entry.step_key,) if entry.step_key else (),
        assets=(asset,),
        details=details,
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=NOTIFY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed asset check (ERROR and WARN: data quality, model floors, "
    "drift) of a successful run to the Slack-compatible webhook CHURN_ALERT_WEBHOOK_URL, one "
    "message per check; skips when unset. Failed checks of failed runs are listed in the "
    "run_failure_notifier's message.",
)
@posting_errors("check_failure_notifier", "failed asset checks are not posted")
def check_failure_notifier(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    failed = failed_checks(context.instance, run.run_id)
    if not failed:
        return dg.SkipReason(f"run {run.run_id}: every asset check passed")
    url = notify.webhook_url()
    if url is None:
        context.log.info(f"run {run.run_id}: {len(failed)} failed check(s) not posted; {OFF}")
        return dg.SkipReason(OFF)
    for entry in failed[:MAX_CHECK_MESSAGES]:
        notify.post_alert(url, check_failure_alert(entry, run.job_name))
    more = len(failed) - MAX_CHECK_MESSAGES
    if more > 0:
        notify.post_alert(
            url,
            notify.Alert(
                title=f"{more} more asset checks failed in run {run.run_id}",
                reason=", ".join(
                    e.dagster_event.asset_check_evaluation_data.check_name
                    for e in failed[MAX_CHECK_MESSAGES:]
                ),
                link=notify.run_link(run.run_id),
                severity="warning",
                run_id=run.run_id,
                job=run.job_name,
            ),
        )
    context.log.info(f"run {run.run_id}: posted {len(failed)} failed check(s)")
    return None
