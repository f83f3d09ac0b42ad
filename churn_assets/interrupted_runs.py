"""Runs left in progress by processes that no longer exist: marked failed when the
processes that execute runs start again.

Dagster's ``DefaultRunLauncher`` runs each run as a child process of the code server that
loaded its code, and cannot tell the daemon when that process is gone: a run whose code
server was killed (a container restarted, the machine rebooted, ``churn dev`` killed)
stays STARTED and, holding its data set's retraining pool, keeps every later retraining run
queued until run monitoring's ``max_runtime_seconds``. When that code server starts again,
no run of its code location can be executing, so its runs still shown in progress are
failed with the reason (``churn dev`` for the whole local instance; compose's
``code-location`` container for its own location, through ``churn fail-interrupted-runs``).
"""

from __future__ import annotations


def fail_interrupted_runs(
    location: str | None = None, when: str = "`churn dev` started again"
) -> list[str]:
    """Mark failed (canceled, for one being canceled) every run the instance still shows
    in progress, of code location ``location`` only when given, and free its concurrency
    slots; ``when`` completes the message ("marked failed when ..."). Call it only when no
    such run can be executing. Returns their run ids."""
    import dagster as dg

    in_progress = [
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    failed = []
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=in_progress)):
            origin = run.remote_job_origin
            if location is not None and (origin is None or origin.location_name != location):
                continue
            canceling = run.status == dg.DagsterRunStatus.CANCELING
            message = (
                "the platform stopped while this run was in progress (its processes were "
                "killed or the machine restarted); marked "
                + ("canceled" if canceling else "failed")
                + f" when {when}. Its outputs up to the last successful step are kept; the "
                "daemon's run retries launch a landing or retraining run again (twice at "
                "most) once the code server answers (if it stays down for minutes: the "
                "landing sensor asks again for its files, the hourly schedule retrains), any "
                "other: launch it again to finish."
            )
            if canceling:
                instance.report_run_canceled(run, message)
            else:
                instance.report_run_failed(run, message)
            storage = instance.event_log_storage
            if storage.supports_global_concurrency_limits:
                storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
    return failed


def say_failed(run_ids: list[str]) -> None:
    """Print which runs :func:`fail_interrupted_runs` marked failed (nothing for none)."""
    if run_ids:
        print(
            f"{len(run_ids)} run(s) left in progress when the platform last stopped, marked "
            f"failed: {', '.join(run_ids)}",
            flush=True,
        )
