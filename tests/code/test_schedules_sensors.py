"""The automation around the graph, evaluated in-process: the hourly retraining schedule and
``CHURN_RETRAINING_CRON``, the landing sensor's cursor, the run-failure recorder and the
rollback job."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.generator import generate
from churn_assets.lib.landing_cursor import GENERATION, LandingCursor
from churn_assets.lib.storage import Storage
from churn_assets.resources import ChurnPlatform


def schedule_of(defs: dg.Definitions) -> dg.ScheduleDefinition:
    return defs.resolve_schedule_def("hourly_retraining")


def next_ticks(cron: str, after: dt.datetime, n: int = 3) -> list[dt.datetime]:
    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(after.timestamp(), cron, "UTC")
    return [next(ticks) for _ in range(n)]


# ---------------------------------------------------------------------------- the schedule


def test_retraining_schedule_is_hourly_by_default():
    from churn_assets.definitions import build_definitions

    assert "CHURN_RETRAINING_CRON" not in os.environ
    schedule = schedule_of(build_definitions())
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.job_name == "retraining"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    start = dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.UTC)
    assert [t.hour for t in next_ticks(schedule.cron_schedule, start)] == [11, 12, 13]


def test_retraining_cron_comes_from_the_environment(monkeypatch):
    from churn_assets.definitions import build_definitions

    monkeypatch.setenv("CHURN_RETRAINING_CRON", "30 2 * * 1")  # Mondays 02:30
    schedule = schedule_of(build_definitions())
    assert schedule.cron_schedule == "30 2 * * 1"
    ticks = next_ticks(schedule.cron_schedule, dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 2)
    assert [(t.weekday(), t.hour, t.minute) for t in ticks] == [(0, 2, 30), (0, 2, 30)]
    assert (ticks[1] - ticks[0]).days == 7


def scores_stand_in(**metadata) -> dg.AssetsDefinition:
    """``churn_scores`` with the platform's automation condition, on the stand-ins of its
    parents (``deployed_model_version``, ``current_features``)."""
    from churn_assets.automation import SCORES_CONDITION

    @dg.asset(
        name="churn_scores",
        deps=["deployed_model_version", "current_features"],
        automation_condition=SCORES_CONDITION,
    )
    def scores() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=metadata)

    return scores


def stand_in(name: str, fails: bool = False, **metadata) -> dg.AssetsDefinition:
    """An asset under a platform asset's name: what the schedule and sensors read is its
    materialization in the event log (and metadata), not its content."""

    @dg.asset(name=name)
    def _asset() -> dg.MaterializeResult:
        if fails:
            raise RuntimeError(f"{name} failed")
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def land(instance: dg.DagsterInstance, *names: str) -> None:
    """Materialize stand-ins of ``names`` in one successful run."""
    assert dg.materialize([stand_in(n) for n in names], instance=instance).success


def schedule_tick(instance: dg.DagsterInstance, hour: int = 11):
    from churn_assets.schedules import retraining_schedule

    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=dt.datetime(2026, 3, 1, hour, tzinfo=dt.UTC),
    )
    return retraining_schedule().evaluate_tick(context)


@pytest.fixture
def instance():
    """A real on-disk instance (schedule contexts need an instance reference)."""
    with dg.instance_for_test() as inst:
        yield inst


def test_schedule_retrains_only_when_inputs_changed_since_the_last_training(instance):
    """An hour with no new data retrains nothing; new data, or a training whose run
    failed, makes the next tick retrain."""
    tick = schedule_tick(instance)
    assert not tick.run_requests and "nothing to train on" in tick.skip_message

    land(instance, "raw_customers", "raw_transactions", "customer_features")
    (request,) = schedule_tick(instance).run_requests  # nothing trained yet
    assert request.tags["churn/trigger"] == "schedule"
    assert request.tags["churn/reason"] == "no retraining has completed yet"
    assert request.run_key == "schedule-2026-03-01T11:00:00+00:00"

    land(instance, "training_set")  # the training set alone, by hand: nothing judged
    (request,) = schedule_tick(instance, 12).run_requests
    assert request.tags["churn/reason"] == "no retraining has completed yet"
    land(instance, "training_set", "deployed_model_version")  # a completed retraining
    tick = schedule_tick(instance, 12)
    assert not tick.run_requests
    assert tick.skip_message.startswith("no new data since the last completed training")

    # a file refused whole (or a copy set aside) materializes its partition with no usable
    # line: no new data (it started a retraining on the same data)
    assert dg.materialize([stand_in("raw_transactions", usable_rows=0)], instance=instance).success
    assert not schedule_tick(instance, 12).run_requests

    land(instance, "raw_transactions", "customer_features")  # a new batch was ingested
    (request,) = schedule_tick(instance, 13).run_requests
    assert request.tags["churn/reason"] == (
        "new data since the last training: customer_features, raw_transactions"
    )

    # a retraining run that materialized the training set and then failed does not count
    failed = dg.materialize(
        [stand_in("training_set"), stand_in("classification_models", fails=True)],
        instance=instance,
        raise_on_error=False,
    )
    assert not failed.success
    assert schedule_tick(instance, 14).run_requests
    land(instance, "training_set", "deployed_model_version")
    assert not schedule_tick(instance, 15).run_requests


def test_data_landed_while_a_retraining_ran_is_new_data_for_the_next_tick(instance):
    """A landing run wrote a raw table while a retraining run built its features and
    trained: that run had not read the lines, yet its training set came later in the event
    log, so the next ticks said "no new data" and the lines waited for the next file (for a
    snapshot's re-landed table, for ever). Now what landed after the retraining run started
    is new data; the features that run built itself are not."""
    land(instance, "raw_customers", "raw_transactions", "customer_features")

    @dg.asset(name="customer_features")
    def features_while_a_file_lands() -> dg.MaterializeResult:
        land(instance, "raw_transactions")  # the landing run, beside this retraining run
        return dg.MaterializeResult()

    @dg.asset(name="training_set", deps=["customer_features"])
    def training_set() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    @dg.asset(name="deployed_model_version", deps=["training_set"])
    def deployed_model_version() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    retraining = [features_while_a_file_lands, training_set, deployed_model_version]
    assert dg.materialize(retraining, instance=instance).success
    (request,) = schedule_tick(instance, 12).run_requests
    assert request.tags["churn/reason"] == "new data since the last training: raw_transactions"

    # a retraining with nothing landing meanwhile: its own features are no new data
    land(instance, "customer_features", "training_set", "deployed_model_version")
    tick = schedule_tick(instance, 13)
    assert not tick.run_requests
    assert tick.skip_message.startswith("no new data since the last completed training")


def test_the_schedule_waits_for_new_data_after_two_failed_retrainings(instance):
    """A retraining that fails on the data or the config (a bad column, a crashing model)
    was started again every tick, each time an alert. One failure is tried again (it may
    be passing); after two in a row on the same data the schedule waits for a new file."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from churn_assets import scope

    def finished_retraining(status: dg.DagsterRunStatus, run_config: dict | None = None) -> None:
        run = DagsterRun(
            job_name="retraining",
            run_id=make_new_run_id(),
            status=status,
            tags=scope.dataset_tags(),
            run_config=run_config or {},
        )
        instance.add_run(run)

    land(instance, "raw_customers", "raw_transactions", "customer_features")
    finished_retraining(dg.DagsterRunStatus.FAILURE)
    assert schedule_tick(instance).run_requests  # once: tried again
    finished_retraining(dg.DagsterRunStatus.FAILURE)
    tick = schedule_tick(instance, 12)
    assert not tick.run_requests
    assert tick.skip_message.startswith("the last 2 retraining runs failed on the same data")
    land(instance, "raw_transactions")  # a new file
    assert schedule_tick(instance, 13).run_requests
    finished_retraining(dg.DagsterRunStatus.FAILURE)
    finished_retraining(dg.DagsterRunStatus.SUCCESS)  # a launch by hand that worked
    finished_retraining(dg.DagsterRunStatus.FAILURE)
    assert schedule_tick(instance, 14).run_requests
    # two launches by hand that failed on their launchpad config (a mistyped rollback_to)
    # say nothing about the data: the schedule still retrains on it
    typo = {"ops": {"deployed_model_version": {"config": {"rollback_to": "v20991231-000000"}}}}
    finished_retraining(dg.DagsterRunStatus.FAILURE, typo)
    finished_retraining(dg.DagsterRunStatus.FAILURE, typo)
    assert schedule_tick(instance, 15).run_requests


def failed_retraining(instance: dg.DagsterInstance, error: Exception) -> None:
    """A retraining run of this data set that really ran and failed in a step on ``error``
    (raised from a wrapper, as a client library raises an outage: the step's recorded error
    is a chain)."""
    failed_run(instance, "retraining", "training_set", error)


def failed_run(instance: dg.DagsterInstance, job_name: str, asset: str, error: Exception) -> str:
    """A run of ``job_name`` for this data set that really ran and failed in the step of
    ``asset`` on ``error`` (wrapped as :func:`failed_retraining` says); its run id."""
    from churn_assets import scope
    from churn_assets.retries import fail_fast_unless_transient

    @dg.asset(name=asset)
    def _asset() -> None:
        with fail_fast_unless_transient():
            try:
                raise error
            except Exception as e:
                raise RuntimeError(f"{asset} failed") from e

    job = dg.define_asset_job(job_name, selection=[_asset])
    result = (
        dg.Definitions(assets=[_asset], jobs=[job])
        .get_job_def(job_name)
        .execute_in_process(
            instance=instance,
            tags=scope.dataset_tags(),
            raise_on_error=False,
            asset_selection=[dg.AssetKey(asset)],  # as a launched run of the job records it
        )
    )
    assert not result.success
    return result.run_id


def test_retrainings_failed_by_an_outage_do_not_stop_the_schedule(instance):
    """Two retraining runs failed in a row by an outage (MLflow or the storage away past the
    steps' retries) stopped the hourly schedule until a new file landed, as if the data
    were at fault: a snapshot data set, with no new files, never retrained again. An
    outage's failure does not count; one on the data still does."""
    land(instance, "raw_customers", "raw_transactions", "customer_features")
    failed_retraining(instance, ConnectionRefusedError(111, "Connection refused"))
    failed_retraining(instance, TimeoutError("timed out"))
    tick = schedule_tick(instance, 12)
    assert tick.run_requests, tick.skip_message
    failed_retraining(instance, KeyError("total_sales"))  # the data, or the config
    failed_retraining(instance, ValueError("Input contains NaN"))
    tick = schedule_tick(instance, 13)
    assert not tick.run_requests
    assert tick.skip_message.startswith("the last 2 retraining runs failed on the same data")


def test_an_outage_is_told_from_the_data_in_a_recorded_step_error():
    """The step error as Dagster records it (a chain of class names and messages)."""
    from dagster._utils.error import SerializableErrorInfo

    from churn_assets.retries import recorded_error_is_transient

    def info(cls_name: str, message: str = "", cause=None, context=None):
        return SerializableErrorInfo(message, [], cls_name, cause, context)

    mlflow_down = info(
        "MlflowException",
        "API request to http://mlflow:5000/api/2.0/mlflow/runs/create failed",
        context=info("MaxRetryError", "HTTPConnectionPool(host='mlflow', port=5000)"),
    )
    throttled = info(
        "ClientError", "An error occurred (SlowDown) when calling the PutObject operation"
    )
    denied = info("ClientError", "An error occurred (AccessDenied) when calling PutObject")
    assert recorded_error_is_transient(
        info("DagsterExecutionStepExecutionError", cause=mlflow_down)
    )
    assert recorded_error_is_transient(throttled)
    assert not recorded_error_is_transient(denied)
    assert not recorded_error_is_transient(info("Failure", "KeyError: 'x'", info("KeyError")))


def queued_retraining(instance: dg.DagsterInstance) -> Any:
    """A retraining run of this data set, created and not started yet (queued)."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from churn_assets import scope

    run = DagsterRun(
        job_name="retraining",
        run_id=make_new_run_id(),
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags=scope.dataset_tags(),
    )
    instance.add_run(run)
    return run


def test_the_schedule_queues_no_second_retraining_on_the_same_data(instance):
    """Each tick during a retraining counted the ``customer_features`` that run had just
    written as new data and queued one more retraining on the same data (12 runs queued on
    a 2-minute cron, each ending "kept: diff +0.0000"). A retraining on its way that will
    see the latest data (not started yet, or started after the latest file) now skips the
    tick; a file landed after a run started is still trained on by the next one."""
    from dagster._core.events import DagsterEvent, DagsterEventType

    land(instance, "raw_customers", "raw_transactions", "customer_features")
    land(instance, "training_set", "deployed_model_version")  # a completed retraining
    land(instance, "raw_transactions")  # a new file
    run = queued_retraining(instance)
    tick = schedule_tick(instance)
    assert not tick.run_requests
    assert tick.skip_message == (
        f"retraining run {run.run_id} is queued and trains on the latest data: "
        "no second run on the same data"
    )

    # it starts and writes customer_features: the next tick sees that, not new data
    started = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name="retraining")
    instance.report_dagster_event(started, run_id=run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    land(instance, "customer_features")
    tick = schedule_tick(instance, 12)
    assert not tick.run_requests
    assert f"retraining run {run.run_id} is in progress" in tick.skip_message
    # a file refused whole meanwhile brings no data the running retraining lacks
    assert dg.materialize([stand_in("raw_transactions", usable_rows=0)], instance=instance).success
    assert "is in progress" in (schedule_tick(instance, 12).skip_message or "")

    land(instance, "raw_transactions")  # a file the running retraining may not have read
    (request,) = schedule_tick(instance, 13).run_requests
    assert "raw_transactions" in request.tags["churn/reason"]


def landing_run(instance: dg.DagsterInstance, started: bool, dataset: str | None = None) -> Any:
    """A landing run of this data set (or of ``dataset``), queued or started."""
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from churn_assets import scope

    tags = {**scope.dataset_tags(), "churn/trigger": "landing", "churn/new_files": "hour-07.csv"}
    if dataset is not None:
        tags["churn/dataset"] = dataset
    run = DagsterRun(
        job_name="transactions_features_drift",
        run_id=make_new_run_id(),
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags=tags,
    )
    instance.add_run(run)
    if started:
        event = DagsterEvent(
            event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name
        )
        instance.report_dagster_event(event, run_id=run.run_id)
    return run


def test_retraining_waits_for_a_landing_run_still_writing(instance, monkeypatch):
    """Landing and retraining use separate pools: the hourly retraining (or a drift report's)
    started while a landing run was still writing raw_transactions, and trained on the
    tables half-written or without that file. It now waits, saying for which run, while a
    landing run of its data set is queued or in progress; one queued or started more than
    CHURN_LANDING_WAIT_SECONDS ago is taken as stuck and holds nothing back."""
    import time

    from churn_assets.sensors import drift_sensor
    from churn_assets.training_state import landing_on_its_way

    land(instance, "raw_customers", "raw_transactions", "customer_features")
    other = landing_run(instance, started=True, dataset="telco")  # another data set's
    assert schedule_tick(instance).run_requests
    queued = landing_run(instance, started=False)
    tick = schedule_tick(instance)
    assert not tick.run_requests
    assert tick.skip_message.startswith(
        f"landing run {queued.run_id} (transactions_features_drift, hour-07.csv) is queued: "
        "retraining waits until it has written the raw tables"
    )
    instance.report_run_canceled(instance.get_run_by_id(queued.run_id))
    running = landing_run(instance, started=True)
    tick = schedule_tick(instance)
    assert f"landing run {running.run_id} (transactions_features_drift" in tick.skip_message
    assert "is in progress" in tick.skip_message

    # the drift sensor's request waits too (a drift report of the run itself does not)
    report = stand_in("drift_report", status="ok", drifted=True, model_version="v1")
    assert dg.materialize([report], instance=instance).success
    tick = drift_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert not tick.run_requests
    assert tick.skip_message.endswith("; the drift report after it is judged instead")
    jobs = ["transactions_features_drift"]
    assert landing_on_its_way(instance, jobs, besides=running.run_id) is None

    # stuck: started longer ago than the bound, it no longer holds retraining back
    later = time.time() + 7200
    assert landing_on_its_way(instance, jobs, now=later) is None
    assert other.run_id not in (landing_on_its_way(instance, jobs) or "")
    monkeypatch.setenv("CHURN_LANDING_WAIT_SECONDS", "0")
    assert schedule_tick(instance).run_requests


def test_retraining_job_carries_the_one_at_a_time_tag():
    from churn_assets.schedules import retraining_schedule

    assert retraining_schedule().job.tags["churn/retraining"] == "true"


# ------------------------------------------------------------------- the drift sensor


def drift_tick(instance: dg.DagsterInstance, reference: str, columns: list[str]):
    """A new drift report against ``reference`` with ``columns`` drifted, then one
    evaluation of the drift sensor on it."""
    from churn_assets.sensors import drift_sensor

    report = stand_in(
        "drift_report",
        status="ok",
        drifted=bool(columns),
        model_version=reference,
        drifted_columns=dg.MetadataValue.json(columns),
    )
    assert dg.materialize([report], instance=instance).success
    return drift_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))


def start_requested_run(instance: dg.DagsterInstance, request: dg.RunRequest) -> None:
    """Record a run with the request's tags, as the daemon would launch it."""

    @dg.op
    def noop() -> None:
        pass

    @dg.job(name="retraining_stand_in")
    def job() -> None:
        noop()

    assert job.execute_in_process(instance=instance, tags=request.tags).success


def test_drift_sensor_requests_one_retraining_per_drift_episode(instance):
    """A drifted batch leads to one retraining. While the deployed reference stays (the
    challenger was refused), later reports with the same drifted columns start nothing;
    a newly drifted column or a new deployed version starts a new episode."""
    tick = drift_tick(instance, "v1", [])
    assert not tick.run_requests and tick.skip_message == "latest drift report shows no drift"

    (first,) = drift_tick(instance, "v1", ["tenure_days", "churn_probability"]).run_requests
    assert first.tags["churn/trigger"] == "drift"
    assert first.tags["churn/drift_reference"] == "v1"
    assert json.loads(first.tags["churn/drifted_columns"]) == ["churn_probability", "tenure_days"]
    assert first.tags["churn/reason"] == "drift against v1: churn_probability, tenure_days"
    start_requested_run(instance, first)

    # the next batch drifts the same way against the same reference: same episode
    tick = drift_tick(instance, "v1", ["tenure_days"])
    assert not tick.run_requests
    assert "already requested a retraining" in tick.skip_message
    assert "tenure_days" in tick.skip_message

    (second,) = drift_tick(instance, "v1", ["tenure_days", "orders_90d"]).run_requests
    assert second.tags["churn/reason"] == "new drift against v1: orders_90d"
    start_requested_run(instance, second)
    assert not drift_tick(instance, "v1", ["orders_90d", "churn_probability"]).run_requests

    (third,) = drift_tick(instance, "v2", ["tenure_days"]).run_requests  # a new version
    assert third.tags["churn/drift_reference"] == "v2"


def test_drift_sensor_bootstraps_when_nothing_is_deployed():
    """Nothing deployed: the report asks for the first version, unless a retraining run on
    its way already trains it (each data set of a fresh `churn dev` trained twice)."""
    from churn_assets.sensors import drift_sensor

    instance = dg.DagsterInstance.ephemeral()
    report = stand_in("drift_report", status="no_deployment", drifted=False)
    result = dg.materialize([report], instance=instance)
    tick = drift_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    (request,) = tick.run_requests
    assert request.tags["churn/trigger"] == "bootstrap"
    assert request.run_key == f"bootstrap-{result.run_id}"

    # the schedule's retraining already trains the first version: no second one
    run = queued_retraining(instance)
    assert dg.materialize([report], instance=instance).success
    tick = drift_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert not tick.run_requests
    assert tick.skip_message.startswith(f"retraining run {run.run_id} is queued")


def test_drift_sensor_waits_for_the_last_run_of_a_backfill(instance):
    """A backfill re-ingests one file per run: a drift report in between sees half the
    history re-ingested, and each started a retraining (four in two minutes for twelve
    files). Reports of a backfill's runs are judged once none of its runs is queued."""
    from dagster._core.storage.dagster_run import DagsterRun

    from churn_assets.sensors import drift_sensor

    tags = {"dagster/backfill": "bf1"}
    running = instance.add_run(
        DagsterRun(job_name="ingest", status=dg.DagsterRunStatus.STARTED, tags=tags)
    )
    report = stand_in(
        "drift_report",
        status="ok",
        drifted=True,
        model_version="v1",
        drifted_columns=dg.MetadataValue.json(["sales_30d"]),
    )

    def tick():
        assert dg.materialize([report], instance=instance, tags=tags).success
        return drift_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))

    waiting = tick()
    assert not waiting.run_requests
    assert "backfill bf1, whose 1 other run(s) are queued or running" in waiting.skip_message
    instance.report_run_failed(running)  # the backfill's last run is over
    (request,) = tick().run_requests
    assert request.tags["churn/trigger"] == "drift"


# ------------------------------------------------------------------ the landing sensor


def tick(cursor: str | None, instance: dg.DagsterInstance | None = None, settle: float = 0):
    """One evaluation of the landing sensor: (result, cursor after it). Files count as
    written once ``settle`` seconds old (the tests write them just before)."""
    from churn_assets.sensors import landing_zone_sensor

    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"platform": ChurnPlatform()},
        instance=instance or dg.DagsterInstance.ephemeral(),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_LANDING_SETTLE_SECONDS", str(settle))
        result = landing_zone_sensor(context)
    return result, context.cursor


def test_a_file_still_being_written_waits_for_a_later_tick(isolated_env: Path):
    """A file modified within the settle time (a slow copy) is not picked up, nor put in
    the cursor; once it has stopped changing it is, whole."""
    import os
    import time

    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    result, cursor = tick(None)
    tx = landing / "transactions" / "late.csv"
    tx.write_text("customer_id,timestamp,amount\nC1,2024-01-01 10:00:00,5\n")  # half of it
    result, cursor_after = tick(cursor, settle=30)
    assert isinstance(result, dg.SkipReason)
    assert "1 file(s) changed in the last 30 s, left until they are written: late.csv" in (
        result.skip_message or ""
    )
    assert "transactions/late.csv" not in json.loads(cursor_after)
    assert str(tx) not in json.loads(cursor_after)
    old = time.time() - 60  # written a minute ago: settled
    os.utime(tx, (old, old))
    result, cursor_after = tick(cursor_after, settle=30)
    assert isinstance(result, dg.SensorResult)
    assert result.run_requests[-1].tags["churn/new_files"] == "late.csv"


def test_a_file_modified_in_the_future_is_taken_as_written(isolated_env: Path):
    """A file stamped two hours ahead (a writer's clock off) was "changed in the last 10 s"
    until the clock caught up; one stamped 2099 never landed. A stamp further ahead than the
    settle time now says only that a clock is off: the file is taken."""
    import os
    import time

    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    _, cursor = tick(None)
    tx = landing / "transactions" / "ahead.csv"
    tx.write_text("customer_id,timestamp,amount\nC1,2024-01-01 10:00:00,5\n")
    ahead = time.time() + 2 * 3600
    os.utime(tx, (ahead, ahead))
    result, _ = tick(cursor, settle=30)
    assert isinstance(result, dg.SensorResult)
    assert result.run_requests[-1].tags["churn/new_files"] == "ahead.csv"
    soon = time.time() + 5  # within the settle time: may still be being written
    os.utime(tx, (soon, soon))
    result, _ = tick(cursor, settle=30)
    assert isinstance(result, dg.SkipReason) and "ahead.csv" in (result.skip_message or "")


def test_a_landed_file_whose_run_was_cancelled_is_asked_for_again(isolated_env: Path):
    """Queued landing runs cancelled from the UI left their files in the landing zone, in
    the cursor, and never ingested: 2,135 lines missing without a word, and `churn
    backfill` (which looks at stored partitions) could not find them. The sensor asks once
    more for a landed file that has no stored partition, whose run ended cancelled or
    failed, and that no run is on its way for."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from churn_assets import scope

    instance = dg.DagsterInstance.ephemeral()
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    (first,) = tick(None, instance)[0].run_requests
    key = first.partition_key
    _, cursor = tick(None, instance)
    result, _ = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason)  # no run ended: nothing asked again

    def run_of(status: dg.DagsterRunStatus) -> None:
        tags = {**scope.dataset_tags(), "dagster/partition": key}
        instance.add_run(
            DagsterRun(
                job_name="ingest_features_drift", run_id=make_new_run_id(), status=status, tags=tags
            )
        )

    run_of(dg.DagsterRunStatus.CANCELED)
    result, _ = tick(cursor, instance)
    (again,) = result.run_requests
    assert again.partition_key == key and again.asset_selection == [dg.AssetKey("raw_transactions")]
    assert again.run_key.startswith("not-ingested-")
    assert tick(cursor, instance)[0].run_requests[0].run_key == again.run_key  # once per version
    run_of(dg.DagsterRunStatus.STARTED)  # one on its way: nothing more
    assert isinstance(tick(cursor, instance)[0], dg.SkipReason)


def test_a_landed_file_whose_failed_run_the_daemon_retries_is_not_asked_for_twice(
    isolated_env: Path,
):
    """A landing run failed by PostgreSQL going away mid-run (tagged ``dagster/will_retry``):
    a tick between its failure and the daemon creating its retry asked for the file too, so
    two runs ingested it (measured: the sensor's run and the daemon's retry, 1 s apart). The
    sensor now leaves it to the retry; once no retry is coming it asks, as before."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from churn_assets import scope

    instance = dg.DagsterInstance.ephemeral()
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    (first,) = tick(None, instance)[0].run_requests
    _, cursor = tick(None, instance)
    run_id = make_new_run_id()
    tags = {**scope.dataset_tags(), "dagster/partition": first.partition_key}
    instance.add_run(
        DagsterRun(
            job_name="ingest_features_drift",
            run_id=run_id,
            status=dg.DagsterRunStatus.FAILURE,
            tags={**tags, "dagster/will_retry": "true"},
        )
    )
    result, _ = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason), result  # the daemon's retry is on its way
    instance.add_run_tags(run_id, {"dagster/will_retry": "false"})  # no retry after all
    (again,) = tick(cursor, instance)[0].run_requests
    assert again.partition_key == first.partition_key
    assert again.run_key.startswith("not-ingested-")


def test_a_landed_file_whose_run_failed_on_the_file_is_not_asked_for_again(isolated_env: Path):
    """A transaction file whose run failed in a step on the file itself (not an outage,
    not a kill) fails the same way again: no second run for it; one failed by an outage
    still gets one."""
    from dagster._core.events import DagsterEvent, StepFailureData
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id
    from dagster._utils.error import SerializableErrorInfo

    from churn_assets import scope

    instance = dg.DagsterInstance.ephemeral()
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    (first,) = tick(None, instance)[0].run_requests
    _, cursor = tick(None, instance)

    def failed_on(cls_name: str) -> None:
        run_id = make_new_run_id()
        tags = {**scope.dataset_tags(), "dagster/partition": first.partition_key}
        instance.add_run(
            DagsterRun(
                job_name="ingest_features_drift",
                run_id=run_id,
                status=dg.DagsterRunStatus.FAILURE,
                tags=tags,
            )
        )
        error = SerializableErrorInfo("raw_transactions failed", [], cls_name)
        instance.report_dagster_event(
            DagsterEvent(
                event_type_value="STEP_FAILURE",
                job_name="ingest_features_drift",
                step_key="raw_transactions",
                event_specific_data=StepFailureData(error=error, user_failure_data=None),
            ),
            run_id=run_id,
        )

    failed_on("ValueError")  # the file's lines
    result, _ = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason), result.run_requests
    failed_on("ConnectionRefusedError")  # storage away, the newer run
    (again,) = tick(cursor, instance)[0].run_requests
    assert again.partition_key == first.partition_key


def test_customer_files_whose_run_failed_are_asked_for_again(isolated_env: Path):
    """A customer file landed alone, and its customers_features_drift run failed on S3
    being away longer than the retries: the cursor had the file and transaction-only runs
    do not read customers, so its customers stayed out of raw_customers until another
    customer file landed. The sensor asks once more, once per failed run; not again when
    that run fails too, nor once raw_customers was written after the failure."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from churn_assets import scope
    from churn_assets.sensors import CUSTOMERS_AGAIN

    instance = dg.DagsterInstance.ephemeral()
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    _, cursor = tick(None, instance)

    def failed(**tags: str) -> str:
        run_id = make_new_run_id()
        instance.add_run(
            DagsterRun(
                job_name="customers_features_drift",
                run_id=run_id,
                status=dg.DagsterRunStatus.FAILURE,
                tags={**scope.dataset_tags(), "churn/new_files": "extra.csv", **tags},
            )
        )
        return run_id

    first = failed()
    (again,) = tick(cursor, instance)[0].run_requests
    assert again.job_name == "customers_features_drift"
    assert again.run_key == f"customers-not-ingested-{first}"
    assert again.tags["churn/refresh"] == CUSTOMERS_AGAIN
    failed(**{"churn/refresh": CUSTOMERS_AGAIN})  # the request failed too: no loop
    assert isinstance(tick(cursor, instance)[0], dg.SkipReason)
    failed()  # a later failure, then a run that wrote the customer table after it
    instance.report_runless_asset_event(dg.AssetMaterialization(scope.key("raw_customers")))
    assert isinstance(tick(cursor, instance)[0], dg.SkipReason)


def test_customer_files_that_failed_on_themselves_are_not_asked_for_again(isolated_env: Path):
    """A customer file that fails its blocking checks (a new export without the label
    column, seen by hand): its run failed, and the sensor asked for the same file again
    at once, a second failed run and a second failure alert about a file that had not
    changed. A run failed on its file or checks is now left as it is; one failed by an
    outage is still asked for again."""
    import time

    instance = dg.DagsterInstance.ephemeral()
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    _, cursor = tick(None, instance)

    failed_run(instance, "customers_features_drift", "raw_customers", KeyError("Exited"))
    result, _ = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason), result.run_requests
    time.sleep(0.01)  # the outage's run is the newer one
    outage = failed_run(
        instance, "customers_features_drift", "raw_customers", ConnectionRefusedError(111, "")
    )
    (again,) = tick(cursor, instance)[0].run_requests
    assert again.run_key == f"customers-not-ingested-{outage}"


def test_a_file_restored_as_it_first_landed_is_ingested_again(isolated_env: Path):
    """A good file, then a bad version of it, then the good one restored from a backup
    (`cp -p`: same name, size and time as when it first landed): each gets a run of its
    own. The restored file used to get the run key of its first landing, which Dagster
    skips, so its lines were never ingested again. A tick evaluated twice (its cursor not
    saved) still asks for the same key."""
    import os

    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    _, cursor = tick(None)
    tx = landing / "transactions" / "late.csv"
    good = "customer_id,timestamp,amount\nC1,2024-01-01 10:00:00,5\n"
    tx.write_text(good)
    os.utime(tx, (1_700_000_000, 1_700_000_000))
    first, cursor = tick(cursor)
    tx.write_text("customer_id,when,amount\nC1,yesterday,5\n")  # the bad version
    bad, before = tick(cursor)
    tx.write_text(good)
    os.utime(tx, (1_700_000_000, 1_700_000_000))  # restored, as cp -p or rsync -a do
    restored, _ = tick(before)
    keys = [r.run_requests[-1].run_key for r in (first, bad, restored)]
    assert len(set(keys)) == 3, keys
    assert restored.run_requests[-1].tags["churn/new_files"] == "late.csv"
    # the same tick evaluated again before its cursor was saved: the same key, no new run
    replay, _ = tick(before)
    assert replay.run_requests[-1].run_key == keys[-1]


def added_partitions(result: dg.SensorResult) -> list[str]:
    return [k for r in result.dynamic_partitions_requests for k in r.partition_keys]


def test_a_landing_sensor_failing_every_tick_is_posted_once_per_episode(
    isolated_env: Path, monkeypatch
):
    """A landing zone that cannot be listed fails every tick: the webhook gets one post
    naming the error (not one per tick), the tick still fails; after a good tick the next
    failure is posted again."""
    from churn_assets import sensors, tick_errors
    from tests.integration.conftest import Webhook

    hook = Webhook()
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK_URL", hook.url)
    real = sensors._landing_listing

    def unreachable(*args, **kwargs):
        raise ConnectionError("Could not connect to the endpoint URL: http://minio:9000/churn")

    try:
        monkeypatch.setattr(sensors, "_landing_listing", unreachable)
        for _ in range(3):
            with pytest.raises(ConnectionError):
                tick(None)
        assert len(hook.bodies) == 1
        text = json.dumps(hook.bodies[0])
        assert "landing_zone_sensor failed" in text and "ConnectionError: Could not" in text
        monkeypatch.setattr(sensors, "_landing_listing", real)
        result, _ = tick(None)  # the landing zone answers again
        assert isinstance(result, dg.SkipReason)
        monkeypatch.setattr(sensors, "_landing_listing", unreachable)
        with pytest.raises(ConnectionError):
            tick(None)
        assert len(hook.bodies) == 2
    finally:
        hook.close()
        tick_errors._POSTED_ERRORS.clear()


def test_other_sensors_and_the_schedule_post_failed_ticks(isolated_env: Path, monkeypatch):
    """Not only the landing sensor: a deployment pointer that cannot be read fails
    scores_follow_deployment's ticks, an instance that cannot be read the hourly schedule's;
    each is posted once under its own name and says what stops, and still fails."""
    from churn_assets import tick_errors
    from churn_assets.schedules import retraining_schedule
    from churn_assets.sensors import scores_follow_deployment
    from tests.integration.conftest import Webhook

    hook = Webhook()
    monkeypatch.setenv("CHURN_ALERT_WEBHOOK_URL", hook.url)

    def unreadable(*args, **kwargs):
        raise PermissionError("[Errno 13] Permission denied: '.../deployments/current.json'")

    try:
        monkeypatch.setattr(dep, "read_current", unreadable)
        with (
            dg.instance_for_test() as instance,
            dg.build_sensor_context(
                instance=instance, resources={"platform": ChurnPlatform()}
            ) as context,
        ):
            for _ in range(2):
                with pytest.raises(PermissionError):
                    scores_follow_deployment(context)
        monkeypatch.setattr(
            "churn_assets.schedules.latest_inputs",
            lambda instance, trained=None: (_ for _ in ()).throw(
                ConnectionError("event log unreachable")
            ),
        )
        schedule = retraining_schedule()
        with dg.instance_for_test() as instance:
            for _ in range(2):
                with pytest.raises(ConnectionError, match="event log unreachable"):
                    schedule(dg.build_schedule_context(instance=instance))
        texts = [json.dumps(body) for body in hook.bodies]
        assert len(texts) == 2, texts
        assert "Sensor scores_follow_deployment failed: churn_scores may not follow" in texts[0]
        assert "PermissionError: [Errno 13]" in texts[0]
        assert "Schedule hourly_retraining failed: no retraining" in texts[1]
        assert "ConnectionError: event log unreachable" in texts[1]
    finally:
        hook.close()
        tick_errors._POSTED_ERRORS.clear()


def test_every_sensor_and_schedule_function_posts_its_failed_ticks():
    """Every sensor or schedule function of the code location carries ``posting_errors``
    (a new one without it would fail silently, in the UI's tick history only)."""
    import ast
    import inspect

    from churn_assets import alert_sensors, freshness, schedules, sensors

    found = []
    for module in (sensors, alert_sensors, freshness, schedules):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.FunctionDef):
                continue
            names = [
                ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list
            ]
            if any(n.startswith("dg.") and n.endswith(("sensor", "schedule")) for n in names):
                found.append(node.name)
                assert "posting_errors" in names, f"{module.__name__}.{node.name}"
    assert {"landing_zone_sensor", "drift_sensor", "hourly_retraining"} <= set(found)
    assert len(found) == 9, found


def test_landing_sensor_cursor_requests_each_change_once(isolated_env: Path):
    landing = isolated_env / "landing" / "synthetic"
    result, cursor = tick(None)
    assert isinstance(result, dg.SkipReason) and "no new files among 0 in" in result.skip_message

    generate(str(landing), customers=200, days=90, seed=1)
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SensorResult)
    # the transaction file becomes a partition, ingested by one run that also refreshes
    # the features and the drift report
    assert added_partitions(result) == ["batch-0000-part-00000.parquet"]
    (request,) = result.run_requests
    assert request.job_name == "ingest_features_drift" and request.asset_selection is None
    assert request.partition_key == "batch-0000-part-00000.parquet"
    assert request.tags["churn/new_files"] == "batch-0000.parquet,batch-0000-part-00000.parquet"
    assert request.tags["churn/trigger"] == "landing"
    files = {str(p) for p in landing.rglob("*.parquet")}
    # the files (relative to the landing root: each tick stores the cursor), and the count
    assert set(json.loads(cursor)) == {
        *(str(Path(f).relative_to(landing)) for f in files),
        GENERATION,
    }
    root = str(landing) + "/"
    seen = LandingCursor.read(cursor, root)
    assert set(seen.recent) == files and seen.generation == 1
    # a cursor of full paths, as written before, reads the same
    full = json.dumps({**LandingCursor.read(cursor, root).recent, GENERATION: 1})
    assert LandingCursor.read(full, root) == LandingCursor.read(cursor, root)
    first_key = request.run_key

    result, cursor = tick(cursor)  # nothing changed: no second run
    assert isinstance(result, dg.SkipReason) and "no new files among 2" in result.skip_message
    assert "(watching " in result.skip_message and "/transactions" in result.skip_message

    generate(str(landing), customers=200, days=90, seed=1, drift=True, batch_name="drift-0001")
    result, cursor = tick(cursor)  # only the new files are named
    (request,) = result.run_requests
    assert request.run_key != first_key
    assert request.partition_key == "drift-0001-part-00000.parquet"
    assert added_partitions(result) == ["drift-0001-part-00000.parquet"]
    assert request.tags["churn/new_files"] == "drift-0001.parquet,drift-0001-part-00000.parquet"
    assert request.job_name == "ingest_features_drift"  # a customer file came with it

    # a transaction file alone: the customer table is not read again
    tx_dir = landing / "transactions"
    (tx_dir / "hour-01.parquet").write_bytes(
        (tx_dir / "drift-0001-part-00000.parquet").read_bytes()
    )
    result, _ = tick(cursor)
    (request,) = result.run_requests
    # no customer table in storage yet (no run wrote one: a data set without a customer
    # table had every landing run fail on it): it is read too
    assert request.job_name == "ingest_features_drift"
    ChurnPlatform().storage().write_bytes("assets/raw_customers.parquet", b"stored")
    result, cursor = tick(cursor)
    (request,) = result.run_requests
    assert request.job_name == "transactions_features_drift"
    assert request.partition_key == "hour-01.parquet" and request.asset_selection is None

    changed = landing / "customers" / "batch-0000.parquet"
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, new size
    result, cursor = tick(cursor)
    (request,) = result.run_requests  # customers only: no partition, no new partition
    assert request.job_name == "customers_features_drift" and request.partition_key is None
    assert added_partitions(result) == []
    assert request.tags["churn/new_files"] == "batch-0000.parquet"
    assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_the_landing_cursor_of_a_year_of_hourly_files_stays_small(isolated_env: Path):
    """A year of hourly files (8,760): the cursor named each file with its size and time,
    472 KB stored with every tick. Files modified over a day ago are now 6-byte digests
    (66 KB), and every change is still seen: a file copied in with an old time (`cp -p`), a
    file replaced under its name keeping an old time, a removed file landing again."""
    import os
    import time

    tx = isolated_env / "landing" / "synthetic" / "transactions"
    tx.mkdir(parents=True)
    start = time.time() - 366 * 86_400

    def write(name: str, amount: float, when: float) -> Path:
        path = tx / name
        path.write_text(f"customer_id,timestamp,amount\nC1,2024-01-01 10:00:00,{amount}\n")
        os.utime(path, (when, when))
        return path

    for hour in range(8_760):
        write(f"hour-{hour:04d}.csv", hour, start + hour * 3600 + 0.25)
    result, cursor = tick(None)
    assert len(result.run_requests) == 8_760
    assert len(cursor) < 70_000  # 471,806 bytes when it named every file
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason) and "no new files among 8760" in result.skip_message

    def new_files(result: Any) -> str:
        return result.run_requests[-1].tags["churn/new_files"]

    write("archive.csv", 1.5, start)  # a new file with an old time
    result, cursor = tick(cursor)
    assert new_files(result) == "archive.csv"
    write("hour-0100.csv", 100.25, start + 100 * 3600 + 0.25)  # replaced, keeping its time
    result, cursor = tick(cursor)
    assert new_files(result) == "hour-0100.csv"
    removed = tx / "hour-0200.csv"
    kept = removed.read_bytes()
    removed.unlink()
    assert isinstance((result := tick(cursor))[0], dg.SkipReason)
    cursor = result[1]
    removed.write_bytes(kept)  # the same file landing again, restored with its time
    os.utime(removed, (start + 200 * 3600 + 0.25,) * 2)
    result, cursor = tick(cursor)
    assert new_files(result) == "hour-0200.csv"
    assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_a_customer_file_named_like_a_transaction_file_is_read_again(isolated_env: Path):
    """``churn seed --hold-back-days`` writes customers/batch-0000.parquet and
    transactions/batch-0000.parquet: files are told apart by their path, not their name, so
    the run reads the customer table too."""
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=200, days=90, seed=1)
    tx = landing / "transactions"
    (tx / "batch-0000-part-00000.parquet").rename(tx / "batch-0000.parquet")
    result, _ = tick(None)
    assert added_partitions(result) == ["batch-0000.parquet"]
    (request,) = result.run_requests
    assert request.job_name == "ingest_features_drift"  # with raw_customers
    assert request.partition_key == "batch-0000.parquet"


def test_landing_sensor_ingests_each_new_file_once_and_refreshes_after_the_last(
    isolated_env: Path,
):
    """Several new transaction files in one tick: one run per file; only the last run (they
    queue in order, pool 'ingest') refreshes features and drift, once, over every file. A
    partition the instance already has is not added again."""
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=300, days=90, seed=1, chunk_customers=100)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("transaction_files", ["batch-0000-part-00000.parquet"])
    result, _ = tick(None, instance)
    keys = [f"batch-0000-part-{i:05d}.parquet" for i in range(3)]
    assert added_partitions(result) == keys[1:]
    assert [r.partition_key for r in result.run_requests] == keys
    assert [r.asset_selection for r in result.run_requests[:2]] == [
        [dg.AssetKey("raw_transactions")]
    ] * 2
    assert result.run_requests[-1].asset_selection is None  # the whole landing job
    assert len({r.run_key for r in result.run_requests}) == 3


# ------------------------------------------------------------- the run-failure recorder


@dg.op
def broken_step():
    raise ValueError("column 'amount' is missing")


@dg.job
def broken_job():
    broken_step()


def recorded_failure(instance: dg.DagsterInstance, result: Any, storage: Path) -> dict:
    """What ``run_failure_recorder`` writes for the failed run ``result``."""
    from churn_assets.sensors import run_failure_recorder

    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"platform": ChurnPlatform()},
    ).for_run_failure()
    run_failure_recorder(context)
    path = storage / "synthetic" / "monitoring" / "failures" / f"{result.run_id}.json"
    return json.loads(path.read_text())


def test_run_failure_recorder_writes_the_failed_step(isolated_env: Path):
    instance = dg.DagsterInstance.ephemeral()
    result = broken_job.execute_in_process(
        instance=instance, raise_on_error=False, tags={"churn/trigger": "landing"}
    )
    record = recorded_failure(instance, result, isolated_env)
    assert record["run_id"] == result.run_id and record["job"] == "broken_job"
    assert record["tags"]["churn/trigger"] == "landing"
    (step,) = record["steps"]
    assert step["step"] == "broken_step"
    assert "ValueError: column 'amount' is missing" in step["root_cause"]
    assert '"broken_step"' in step["error"]
    assert dt.datetime.fromisoformat(record["recorded_at"]).tzinfo is not None
    assert record["failed_checks"] == []


def test_run_failure_recorder_keeps_what_a_blocking_check_found(isolated_env: Path):
    """A file stopped by a blocking check (a copy of a landed file) was recorded as
    "files_readable failed": what the check found was only in the quarantine's reasons."""

    @dg.asset(check_specs=[dg.AssetCheckSpec("files_readable", asset="raw_orders", blocking=True)])
    def raw_orders():
        yield dg.Output(1)
        yield dg.AssetCheckResult(
            check_name="files_readable",
            passed=False,
            description="b.csv: the same bytes as landing file 'a.csv', whose lines count",
        )

    @dg.asset(deps=[raw_orders])
    def order_features() -> None:
        pass

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([raw_orders, order_features], instance=instance, raise_on_error=False)
    (check,) = recorded_failure(instance, result, isolated_env)["failed_checks"]
    assert check["check"] == "files_readable" and check["asset"] == "raw_orders"
    assert "the same bytes as landing file 'a.csv'" in check["description"]


# --------------------------------------------------------------------- the rollback job


def deploy_versions(storage: Storage, names: list[str]) -> None:
    """Minimal intact versions (one artifact, no registered models), deployed in order."""
    for name in names:
        dep.write_version(storage, name, {"model.bin": name.encode()}, {"models": {}})
        dep.set_current(storage, name, reason=f"test deploy {name}")


def test_scores_follow_every_pointer_move(isolated_env: Path):
    """Whatever moved the deployment pointer (two rollbacks in a row, which the eager
    condition can miss when they land in one tick), churn_scores of another version get
    one run per move; scores of the deployed version get none."""
    from churn_assets.sensors import scores_follow_deployment

    storage = Storage(str(isolated_env / "synthetic"))
    instance = dg.DagsterInstance.ephemeral()

    def evaluate():
        context = dg.build_sensor_context(
            instance=instance, resources={"platform": ChurnPlatform()}
        )
        return scores_follow_deployment(context)

    assert isinstance(evaluate(), dg.SkipReason)  # nothing deployed
    deploy_versions(storage, ["v20260101-000000", "v20260102-000000"])
    land(instance, "current_features", "deployed_model_version")
    assert dg.materialize(
        [stand_in("churn_scores", model_version="v20260102-000000")], instance=instance
    ).success
    skip = evaluate()
    assert isinstance(skip, dg.SkipReason) and "of the deployed version" in skip.skip_message
    dep.rollback(storage, None)  # back to v20260101
    first = evaluate()
    assert isinstance(first, dg.RunRequest)
    assert first.run_key.startswith("rescore-v20260101-000000-")
    assert first.tags["churn/trigger"] == "deployment"
    dep.set_current(storage, "v20260102-000000", reason="forward again")
    second = evaluate()  # forward again: the scores (of v20260102) are the deployed one's
    assert isinstance(second, dg.SkipReason)
    dep.rollback(storage, "v20260101-000000")
    third = evaluate()
    assert isinstance(third, dg.RunRequest) and third.run_key != first.run_key
    from dagster._core.storage.dagster_run import DagsterRun

    instance.add_run(  # a run that scores anyway (a retraining, a landing run) on its way
        DagsterRun(
            job_name="x",
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({dg.AssetKey("churn_scores")}),
        )
    )
    waiting = evaluate()
    assert isinstance(waiting, dg.SkipReason) and "on its way" in waiting.skip_message


def test_scores_follow_the_stored_deployment_after_its_history_was_wiped(isolated_env: Path):
    """deployed_model_version's materializations wiped in the UI: churn_scores' automation
    condition waited for a missing parent (a landing batch was not scored) until the next
    retraining. scores_follow_deployment now reports a materialization naming the version
    the pointer in storage deploys (applied here as the sensor daemon applies a sensor's
    asset events), and the landing batch is scored."""
    from churn_assets.freshness import deployed_version
    from churn_assets.sensors import scores_follow_deployment

    scores = scores_stand_in(model_version="v20260101-000000")

    defs = dg.Definitions(
        assets=[stand_in("deployed_model_version"), stand_in("current_features"), scores]
    )
    storage = Storage(str(isolated_env / "synthetic"))
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("churn_scores")

    def requested(cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.get_num_requested(key), result.cursor

    def follow():
        context = dg.build_sensor_context(
            instance=instance, resources={"platform": ChurnPlatform()}
        )
        return scores_follow_deployment(context)

    deploy_versions(storage, ["v20260101-000000"])
    land(instance, "current_features")
    count, cursor = requested()
    assert dg.materialize(
        [stand_in("deployed_model_version", version="v20260101-000000")], instance=instance
    ).success
    count, cursor = requested(cursor)
    assert count == 1
    assert dg.materialize([scores], instance=instance, selection=[key]).success
    assert isinstance(follow(), dg.SkipReason)  # recorded and scored: nothing to do
    count, cursor = requested(cursor)

    instance.wipe_assets([dg.AssetKey("deployed_model_version")])
    land(instance, "current_features")  # a landing batch
    count, cursor = requested(cursor)
    assert count == 0  # a parent is missing
    # a run deploying writes the pointer before its materialization is recorded: left to it
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    deploying = DagsterRun(
        job_name="retraining",
        run_id=make_new_run_id(),
        status=dg.DagsterRunStatus.STARTED,
        asset_selection=frozenset({dg.AssetKey("deployed_model_version")}),
    )
    instance.add_run(deploying)
    waiting = follow()
    assert isinstance(waiting, dg.SkipReason) and deploying.run_id in waiting.skip_message
    instance.delete_run(deploying.run_id)
    result = follow()
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    (event,) = result.asset_events
    assert event.metadata["version"].value == "v20260101-000000"
    assert "wiped" in event.description and "current.json" in event.description
    instance.report_runless_asset_event(event)
    assert deployed_version(instance) == "v20260101-000000"
    assert isinstance(follow(), dg.SkipReason)  # reported once
    count, cursor = requested(cursor)
    assert count == 1  # the batch is scored


def run_rollback(to: str = "", instance: dg.DagsterInstance | None = None):
    """The rollback job as the code location defines it (its IO managers included)."""
    from churn_assets.definitions import build_definitions

    return (
        build_definitions()
        .resolve_job_def("rollback_deployment_job")
        .execute_in_process(
            run_config={"ops": {"rollback_op": {"config": {"to": to}}}},
            instance=instance or dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )


def test_the_rollback_job_tells_the_asset_which_version_is_served(isolated_env: Path):
    """The rollback job moves the pointer outside ``deployed_model_version``: its page kept
    showing the version rolled back from (and the stale-deployment alert named it). The job
    now records an observation of the asset naming the version served."""
    from churn_assets.freshness import deployed_version

    storage = Storage(str(isolated_env / "synthetic"))
    deploy_versions(storage, ["v20260101-000000", "v20260102-000000"])
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(
        [stand_in("deployed_model_version", version="v20260102-000000")], instance=instance
    ).success
    assert deployed_version(instance) == "v20260102-000000"

    assert run_rollback(instance=instance).success
    assert deployed_version(instance) == "v20260101-000000"
    (observed,) = instance.fetch_observations(
        dg.AssetKey("deployed_model_version"), limit=5
    ).records
    assert observed.asset_observation.metadata["rolled_back"].value is True


def test_rollback_job_goes_back_one_version_then_to_a_named_one(isolated_env: Path):
    storage = Storage(str(isolated_env / "synthetic"))
    deploy_versions(storage, ["v20260101-000000", "v20260102-000000", "v20260103-000000"])

    result = run_rollback()
    assert result.success
    assert result.output_for_node("rollback_op") == "v20260102-000000"
    pointer = dep.read_current(storage)
    assert pointer["version"] == "v20260102-000000"
    assert pointer["reason"] == "rollback from v20260103-000000"

    result = run_rollback(to="v20260103-000000")
    assert result.success and dep.read_current(storage)["version"] == "v20260103-000000"
    # its result stays in the run (metadata): nothing written under assets/<run id>/
    assert not (isolated_env / "synthetic" / "assets" / result.run_id).exists()
    assert not list((isolated_env / "synthetic").glob("assets/*/rollback_op*"))


def test_a_queued_rollback_refuses_a_deployment_that_moved_after_its_launch(
    isolated_env: Path,
):
    """Two users: one queued "roll back to the previous version" while v3 was deployed; a
    retraining then promoted v4 before the rollback ran, which went back to v3, the very
    version it was launched to leave, and pinned it. A rollback now refuses a pointer that
    moved after its launch, saying what is deployed; one launched after that goes ahead."""
    import datetime as dt

    storage = Storage(str(isolated_env / "synthetic"))
    deploy_versions(storage, ["v20260101-000000", "v20260102-000000", "v20260103-000000"])
    pointer = dep.read_current(storage)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # deployed after the launch
    storage.write_json(dep.POINTER, {**pointer, "updated_at": later.isoformat()})

    result = run_rollback()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    said = failure.event_specific_data.error.to_string()
    assert "the deployment changed after this rollback was launched" in said
    assert "v20260103-000000 since" in said and "nothing was rolled back" in said
    assert dep.read_current(storage)["version"] == "v20260103-000000"
    assert not dep.read_current(storage).get("pinned")

    storage.write_json(dep.POINTER, pointer)  # as deployed before the launch
    assert run_rollback().success
    assert dep.read_current(storage)["version"] == "v20260102-000000"


def test_rolling_back_twice_goes_two_versions_back(isolated_env: Path):
    """v3 → v2 → v1: the second rollback went forward to v3, the version just rolled back
    from, and pinned it. ``previous`` is the default's name (the job refused it as an
    unknown version). A version served after a rollback goes back to the one it replaced."""
    storage = Storage(str(isolated_env / "synthetic"))
    v1, v2, v3, v4 = (f"v2026010{d}-000000" for d in (1, 2, 3, 4))
    deploy_versions(storage, [v1, v2, v3])

    assert dep.rollback(storage)["version"] == v2
    assert dep.rollback(storage, "previous")["version"] == v1
    with pytest.raises(dep.DeploymentError, match=rf"nothing to roll back to: {v1} is the old"):
        dep.rollback(storage)
    assert dep.read_current(storage)["version"] == v1
    dep.unpin(storage)
    deploy_versions(storage, [v4])
    assert dep.rollback(storage)["version"] == v1  # what v4 replaced; v2 and v3 were left


@pytest.mark.parametrize(
    ("versions", "to", "message"),
    [
        ([], "", "nothing is deployed"),
        (["v20260101-000000"], "", "the only version ever deployed"),
        (["v20260101-000000", "v20260102-000000"], "v20991231-000000", "unknown version"),
    ],
)
def test_rollback_job_fails_clearly(isolated_env: Path, versions, to, message):
    storage = Storage(str(isolated_env / "synthetic"))
    deploy_versions(storage, versions)
    before = dep.read_current(storage)
    result = run_rollback(to)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    cause = failure.event_specific_data.error.cause
    assert cause.cls_name == "DeploymentError" and message in cause.message
    assert dep.read_current(storage) == before


# ------------------------------------------------------------------ declarative automation


def test_scores_follow_the_deployed_version_and_the_features():
    """``churn_scores`` is requested once a deployment exists and again whenever the
    deployed version or the current features change; never while a parent is missing."""
    scores = scores_stand_in()

    parents = [stand_in("deployed_model_version"), stand_in("current_features")]
    defs = dg.Definitions(assets=[*parents, scores])
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("churn_scores")

    def requested(cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.get_num_requested(key), result.cursor

    land(instance, "current_features")  # features, nothing deployed yet
    count, cursor = requested()
    assert count == 0
    land(instance, "deployed_model_version")  # the first deployment
    count, cursor = requested(cursor)
    assert count == 1
    assert dg.materialize([scores], instance=instance, selection=[key]).success
    count, cursor = requested(cursor)
    assert count == 0  # scored: nothing changed since
    land(instance, "current_features")  # a landing batch
    count, cursor = requested(cursor)
    assert count == 1


def test_scores_catch_up_once_automation_is_back_on():
    """``churn_automation`` switched off (its cursor is kept: Dagster's ``start_sensor``):
    meanwhile churn_scores were made (a rollback's re-scoring, by hand) and then features
    landed. Back on, its first evaluation sees both updates; the scores' own update
    cancelled the features', and the scores stayed behind the features. They are
    requested now, once. A retraining run, which scores after deploying, asks for none."""
    from churn_assets.jobs import RETRAINING_TAG

    scores = scores_stand_in()

    retraining = dg.define_asset_job(  # as the platform's: its runs have no asset selection
        "retraining",
        selection=dg.AssetSelection.assets("deployed_model_version", "churn_scores"),
        tags={RETRAINING_TAG: "true"},
    )
    defs = dg.Definitions(
        assets=[stand_in("deployed_model_version"), stand_in("current_features"), scores],
        jobs=[retraining],
    )
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("churn_scores")

    def requested(cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.get_num_requested(key), result.cursor

    land(instance, "current_features")
    count, cursor = requested()
    land(instance, "deployed_model_version")
    count, cursor = requested(cursor)
    assert count == 1
    assert dg.materialize([scores], instance=instance, selection=[key]).success
    count, cursor = requested(cursor)
    assert count == 0
    # switched off: scores made, then a landing batch; nothing evaluates meanwhile
    assert dg.materialize([scores], instance=instance, selection=[key]).success
    land(instance, "current_features")
    count, cursor = requested(cursor)  # back on
    assert count == 1
    assert dg.materialize([scores], instance=instance, selection=[key]).success
    count, cursor = requested(cursor)
    assert count == 0
    assert defs.resolve_job_def("retraining").execute_in_process(instance=instance).success
    count, cursor = requested(cursor)
    assert count == 0  # scored by the retraining run itself


def test_the_automation_sensor_runs_the_scores_condition():
    from churn_assets.automation import SCORES_CONDITION
    from churn_assets.definitions import defs

    key = dg.AssetKey("churn_scores")
    assert defs.get_assets_def(key).automation_conditions_by_key[key] == SCORES_CONDITION
    sensor = defs.get_repository_def().get_sensor_def("churn_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert sensor.asset_selection.resolve(graph) == {key}
    # its runs name their data set, as every run of the platform does (they had no tag)
    assert sensor.run_tags["churn/dataset"] == "synthetic"


def test_good_files_of_a_batch_whose_last_file_failed_reach_the_features(isolated_env: Path):
    """Two files in one tick: the good one is ingested, the last one (whose run also
    refreshes the features) fails its checks. The next tick sees a transaction file
    ingested after the last current features, no landing run on its way, and asks once for
    a run that refreshes current features and drift."""
    from dagster._core.storage.dagster_run import DagsterRun

    from churn_assets import scope

    instance = dg.DagsterInstance.ephemeral()
    land(instance, "raw_transactions")
    land(instance, "current_features")
    result, cursor = tick(None, instance)
    assert isinstance(result, dg.SkipReason)  # the features are up to date

    land(instance, "raw_transactions")  # the good file; the batch's last run then failed
    in_flight = instance.add_run(
        DagsterRun(
            job_name="transactions_features_drift",
            status=dg.DagsterRunStatus.STARTED,
            tags=scope.dataset_tags(),
        )
    )
    result, cursor = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason)  # the refresh is still on its way
    instance.report_run_failed(in_flight)
    backfill = instance.add_run(  # a UI backfill of the whole graph (no data set tag) running
        DagsterRun(
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({scope.key("current_features"), scope.key("churn_scores")}),
        )
    )
    result, cursor = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason)  # that run refreshes the features too
    instance.report_run_canceled(backfill)
    result, cursor = tick(cursor, instance)
    assert isinstance(result, dg.RunRequest)
    assert result.job_name == "customers_features_drift"
    assert result.asset_selection == [scope.key("current_features"), scope.key("drift_report")]
    raw = instance.get_latest_materialization_event(scope.key("raw_transactions"))
    assert result.run_key == f"refresh-features-{raw.run_id}-{raw.timestamp:.3f}"  # once


def test_a_refused_file_alone_asks_for_no_feature_refresh(isolated_env: Path):
    """A file refused by its checks is written with every line quarantined: features
    refreshed for it come out as they were, so no run is asked for (there was one per
    refused file); a good file written since still gets its refresh."""
    from churn_assets import scope

    instance = dg.DagsterInstance.ephemeral()
    land(instance, "raw_transactions")
    land(instance, "current_features")
    _, cursor = tick(None, instance)
    refused = dg.AssetMaterialization(
        asset_key=scope.key("raw_transactions"), metadata={"usable_rows": 0}
    )
    instance.report_runless_asset_event(refused)
    result, cursor = tick(cursor, instance)
    assert isinstance(result, dg.SkipReason)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=scope.key("raw_transactions"), metadata={"usable_rows": 3}
        )
    )
    instance.report_runless_asset_event(refused)  # the newest is refused, the one before not
    result, cursor = tick(cursor, instance)
    assert isinstance(result, dg.RunRequest) and result.job_name == "customers_features_drift"


def test_a_whole_job_run_counts_as_materializing_only_for_its_own_data_set():
    """A queued landing run materializes current_features; one of the same job name in
    another data set's code location (its tag names that data set) does not."""
    from types import SimpleNamespace

    from dagster._core.storage.dagster_run import DagsterRun

    from churn_assets import scope
    from churn_assets.definitions import defs
    from churn_assets.jobs import monitoring_job
    from churn_assets.sensors import _materializes

    context = SimpleNamespace(repository_def=defs.get_repository_def())
    key = scope.key("current_features")

    def run(tags: dict[str, str]) -> DagsterRun:
        return DagsterRun(job_name=monitoring_job.name, tags=tags)

    assert _materializes(context, run(scope.dataset_tags()), key)
    assert not _materializes(context, run({scope.DATASET_TAG: "telco"}), key)
    assert not _materializes(context, run(scope.dataset_tags()), scope.key("churn_scores"))
