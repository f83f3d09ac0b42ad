"""What the event log says about training: when the training set's inputs last changed and
when a retraining last completed (read by the retraining schedule and the stale-deployment
sensor)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import dagster as dg

from churn_assets import scope

#: What the training set is built from: a retraining is due when one of them changed.
TRAINING_INPUTS = ("raw_customers", "raw_transactions", "customer_features")
TRAINING_SET = scope.key("training_set")
#: Run statuses of a run still on its way (queued, starting or running).
PENDING = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)
DEPLOYMENT = scope.key("deployed_model_version")


def latest_time(
    instance: dg.DagsterInstance, key: str, exclude_run: str | None = None
) -> float | None:
    """When ``key`` was last materialized with data (epoch seconds; None: never), leaving
    out run ``exclude_run``. A raw table's materialization with no usable row (a file
    refused whole, a copy set aside) is no new data: it started a retraining on the same
    data."""
    records = instance.fetch_materializations(scope.key(key), limit=21).records
    records = [r for r in records if r.run_id != exclude_run][:20]
    for record in records:
        if _brings_data(record):
            return record.timestamp
    return records[-1].timestamp if records else None


def _brings_data(record: dg.EventLogRecord) -> bool:
    """False for a materialization whose metadata says it holds no usable row, or the same
    table as already stored (``unchanged``: a file ingested again as it was)."""
    mat = record.asset_materialization
    metadata = mat.metadata if mat else {}
    unchanged = metadata.get("unchanged")
    if unchanged is not None and getattr(unchanged, "value", unchanged) is True:
        return False
    usable = metadata.get("usable_rows")
    return usable is None or getattr(usable, "value", usable) != 0


def latest_inputs(
    instance: dg.DagsterInstance, trained: dg.EventLogRecord | None = None
) -> dict[str, float | None]:
    """Each training input → when it was last materialized with data, leaving out the
    training run ``trained`` belongs to (the ``customer_features`` it built)."""
    run = trained.run_id if trained else None
    return {key: latest_time(instance, key, exclude_run=run) for key in TRAINING_INPUTS}


def last_completed_training_record(
    instance: dg.DagsterInstance, scan: int = 20
) -> dg.EventLogRecord | None:
    """The newest ``training_set`` materialization of a run that succeeded and judged the
    models it trained (materialized ``deployed_model_version`` too). A run that built the
    training set and then failed does not count, nor one that built it alone (the training
    set materialized by hand): no model was trained or judged on the new data."""
    judged = {r.run_id for r in instance.fetch_materializations(DEPLOYMENT, limit=scan).records}
    for record in instance.fetch_materializations(TRAINING_SET, limit=scan).records:
        if record.run_id not in judged:
            continue
        run = instance.get_run_by_id(record.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
            return record
    return None


def training_mark(instance: dg.DagsterInstance, trained: dg.EventLogRecord | None) -> float | None:
    """When the training ``trained`` (:func:`last_completed_training_record`) began: its run's
    start (epoch seconds). Input materialized later is data it did not train on: a landing
    run that wrote a raw table while that run built its features and trained came before
    its training set in the event log, so its lines counted as trained on and waited for
    the next file (a snapshot's re-landed table, for ever). None: no training completed."""
    if trained is None:
        return None
    record = instance.get_run_record_by_id(trained.run_id)
    started = record.start_time if record is not None else None
    return started if started is not None else trained.timestamp


def first_untrained_input(
    instance: dg.DagsterInstance, trained: dg.EventLogRecord | None, since: float | None = None
) -> dg.EventLogRecord | None:
    """The earliest input materialization after ``trained`` (the last completed training,
    :func:`last_completed_training_record`) and after ``since`` (epoch seconds: with no
    completed training in the event log, when the deployed version was deployed): the data
    that has been waiting for a retraining since (None: every input has been trained on)."""
    marks = [t for t in (training_mark(instance, trained), since) if t is not None]
    first: dg.EventLogRecord | None = None
    for key in TRAINING_INPUTS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=scope.key(key), after_timestamp=max(marks) if marks else None
            ),
            limit=40,
            ascending=True,
        ).records
        records = [
            r
            for r in records
            if _brings_data(r) and (trained is None or r.run_id != trained.run_id)
        ]
        if records and (first is None or records[0].storage_id < first.storage_id):
            first = records[0]
    return first


#: Retraining runs failed in a row on the same data after which the schedule waits for new
#: data: one failure may be passing (a server restarting), two are the data or the config.
FAILURES_BEFORE_WAITING = 2
#: What the data is made of (``customer_features`` is rebuilt by each retraining run).
RAW_INPUTS = ("raw_customers", "raw_transactions")


def latest_raw_time(instance: dg.DagsterInstance) -> float | None:
    """When a raw table last brought data (epoch seconds; None: never): a file refused
    whole is no new data here either."""
    times = [
        record.timestamp
        for key in RAW_INPUTS
        for record in instance.fetch_materializations(scope.key(key), limit=20).records
        if _brings_data(record)
    ]
    return max(times, default=None)


def _step_errors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Any]:
    """The recorded errors of the steps that failed in ``run``."""
    return [
        event.dagster_event.step_failure_data.error
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if event.dagster_event is not None and event.dagster_event.step_failure_data is not None
    ]


def failed_by_an_outage(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether ``run`` failed, and every step that failed in it failed on a service being
    unreachable, slow or throttling (not on the data, the config or a check)."""
    from churn_assets.retries import recorded_error_is_transient

    if run.status != dg.DagsterRunStatus.FAILURE:
        return False
    errors = _step_errors(instance, run)
    return bool(errors) and all(e is not None and recorded_error_is_transient(e) for e in errors)


def failed_on_its_input(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether ``run`` failed in a step on something other than an outage: its file, a
    blocking check, the config. Run again on the same input, it fails the same way. A run
    cancelled, or ended without a step failing (its process killed), is not."""
    from churn_assets.retries import recorded_error_is_transient

    if run.status != dg.DagsterRunStatus.FAILURE:
        return False
    errors = _step_errors(instance, run)
    return any(e is None or not recorded_error_is_transient(e) for e in errors)


def failing_on_the_same_data(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """Why a scheduled retraining would fail again, or None: the last
    :data:`FAILURES_BEFORE_WAITING` finished retraining runs of this data set failed, and
    no raw table has been materialized since the first of them started (a failure the data
    or the config causes repeats every tick, each an alert). Runs failed by an outage
    (:func:`failed_by_an_outage`) and runs given launchpad config are left out."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name,
            tags=scope.dataset_tags(),
            statuses=[
                dg.DagsterRunStatus.SUCCESS,
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED,
            ],
        ),
        limit=10 * FAILURES_BEFORE_WAITING,
    )
    # a run given launchpad config (a mistyped rollback_to, unpin with rollback_to) failed
    # on that config, which no scheduled run carries: it says nothing about the data; nor
    # does a run an outage failed (MLflow, storage or a database away past its retries):
    # counted, two outages in a row stopped retraining until a new file landed, long after
    # the service was back (a snapshot data set, with no new files, never again)
    records = list(
        islice(
            (
                r
                for r in records
                if not r.dagster_run.run_config and not failed_by_an_outage(instance, r.dagster_run)
            ),
            FAILURES_BEFORE_WAITING,
        )
    )  # the newest first: the event logs of older runs are not read
    if len(records) < FAILURES_BEFORE_WAITING or any(
        r.dagster_run.status != dg.DagsterRunStatus.FAILURE for r in records
    ):
        return None
    since = min(r.create_timestamp.timestamp() for r in records)
    latest = latest_raw_time(instance)
    if latest is not None and latest > since:
        return None
    newest = records[0].dagster_run
    return (
        f"the last {len(records)} retraining runs failed on the same data (the newest: "
        f"{newest.run_id}); not started again until a new file lands (or a retraining is "
        "launched by hand, e.g. after a config fix)"
    )


def retraining_on_its_way(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """Why another retraining run would train on the data one already on its way trains on,
    or None: a retraining run of this data set is queued (it reads the data when it starts)
    or started after the latest raw table materialization. Without this, each schedule tick
    during a retraining counted the ``customer_features`` that run had just written as new
    data and queued one more run on the same data, every tick (a queue that only grew on a
    short cron)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, tags=scope.dataset_tags(), statuses=PENDING),
        limit=20,
    )
    if not records:
        return None
    latest_raw = latest_raw_time(instance)
    waiting = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
    for record in records:
        run = record.dagster_run
        began = record.start_time or record.create_timestamp.timestamp()
        if run.status in waiting or latest_raw is None or began > latest_raw:
            state = "queued" if run.status in waiting else "in progress"
            return (
                f"retraining run {run.run_id} is {state} and trains on the latest data: "
                "no second run on the same data"
            )
    return None


def landing_on_its_way(
    instance: dg.DagsterInstance,
    landing_jobs: Iterable[str],
    besides: str | None = None,
    now: float | None = None,
) -> str | None:
    """Why a retraining should not start yet, or None: a landing run of this data set (a run
    of ``landing_jobs`` other than ``besides``) is queued or in progress, queued or started
    less than ``CHURN_LANDING_WAIT_SECONDS`` ago. Landing and retraining use separate pools,
    so a retraining started then read the raw tables while that run was writing them (and
    trained without its file). An older one is taken as stuck and holds nothing back."""
    import time

    from churn_assets.lib.settings import landing_wait_seconds

    jobs = set(landing_jobs)
    limit = landing_wait_seconds()
    now = time.time() if now is None else now
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags=scope.dataset_tags(), statuses=PENDING), limit=200
    )
    for record in records:
        run = record.dagster_run
        if run.job_name not in jobs or run.run_id == besides:
            continue
        began = record.start_time or record.create_timestamp.timestamp()
        if now - began >= limit:
            continue
        state = {
            dg.DagsterRunStatus.STARTED: "in progress",
            dg.DagsterRunStatus.STARTING: "starting",
        }.get(run.status, "queued")
        return (
            f"landing run {run.run_id} ({run.job_name}"
            + (f", {run.tags['churn/new_files'][:100]}" if run.tags.get("churn/new_files") else "")
            + f") is {state}: retraining waits until it "
            "has written the raw tables (a landing run queued or started more than "
            f"{limit:,} s ago, CHURN_LANDING_WAIT_SECONDS, is taken as stuck)"
        )
    return None
