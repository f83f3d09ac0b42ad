"""The automation around the graph, evaluated in-process: the hourly retraining schedule and
``CHURN_RETRAINING_CRON``, the landing sensor's cursor, the run-failure recorder and the
rollback job."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.generator import generate
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


def test_schedule_tick_requests_a_tagged_retraining_run():
    from churn_assets.schedules import retraining_schedule

    schedule = retraining_schedule()
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["churn/trigger"] == "schedule"
    assert schedule.job.tags["churn/retraining"] == "true"  # the one-at-a-time pool tag


# ------------------------------------------------------------------ the landing sensor


def tick(cursor: str | None):
    """One evaluation of the landing sensor: (result, cursor after it)."""
    from churn_assets.sensors import landing_zone_sensor

    context = dg.build_sensor_context(cursor=cursor, resources={"platform": ChurnPlatform()})
    result = landing_zone_sensor(context)
    return result, context.cursor


def test_landing_sensor_cursor_requests_each_change_once(isolated_env: Path):
    landing = isolated_env / "landing" / "synthetic"
    result, cursor = tick(None)
    assert isinstance(result, dg.SkipReason) and "no new files among 0 in" in result.skip_message

    generate(str(landing), customers=200, days=90, seed=1)
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["churn/new_files"] == "batch-0000.parquet,batch-0000-part-00000.parquet"
    assert result.tags["churn/trigger"] == "landing"
    assert set(json.loads(cursor)) == {str(p) for p in landing.rglob("*.parquet")}
    first_key = result.run_key

    result, cursor = tick(cursor)  # nothing changed: no second run
    assert isinstance(result, dg.SkipReason) and "no new files among 2" in result.skip_message

    generate(str(landing), customers=200, days=90, seed=1, drift=True, batch_name="drift-0001")
    result, cursor = tick(cursor)  # only the new files are named
    assert isinstance(result, dg.RunRequest) and result.run_key != first_key
    assert result.tags["churn/new_files"] == "drift-0001.parquet,drift-0001-part-00000.parquet"

    changed = landing / "customers" / "batch-0000.parquet"
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, new size
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["churn/new_files"] == "batch-0000.parquet"
    assert isinstance(tick(cursor)[0], dg.SkipReason)


# ------------------------------------------------------------- the run-failure recorder


@dg.op
def broken_step():
    raise ValueError("column 'amount' is missing")


@dg.job
def broken_job():
    broken_step()


def test_run_failure_recorder_writes_the_failed_step(isolated_env: Path):
    from churn_assets.sensors import run_failure_recorder

    instance = dg.DagsterInstance.ephemeral()
    result = broken_job.execute_in_process(
        instance=instance, raise_on_error=False, tags={"churn/trigger": "landing"}
    )
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"platform": ChurnPlatform()},
    ).for_run_failure()
    run_failure_recorder(context)

    path = isolated_env / "synthetic" / "monitoring" / "failures" / f"{result.run_id}.json"
    record = json.loads(path.read_text())
    assert record["run_id"] == result.run_id and record["job"] == "broken_job"
    assert record["tags"]["churn/trigger"] == "landing"
    (step,) = record["steps"]
    assert step["step"] == "broken_step"
    assert "ValueError: column 'amount' is missing" in step["root_cause"]
    assert '"broken_step"' in step["error"]
    assert dt.datetime.fromisoformat(record["recorded_at"]).tzinfo is not None


# --------------------------------------------------------------------- the rollback job


def deploy_versions(storage: Storage, names: list[str]) -> None:
    """Minimal intact versions (one artifact, no registered models), deployed in order."""
    for name in names:
        dep.write_version(storage, name, {"model.bin": name.encode()}, {"models": {}})
        dep.set_current(storage, name, reason=f"test deploy {name}")


def run_rollback(to: str = ""):
    from churn_assets.jobs import rollback_deployment_job

    return rollback_deployment_job.execute_in_process(
        run_config={"ops": {"rollback_op": {"config": {"to": to}}}},
        resources={"platform": ChurnPlatform()},
        raise_on_error=False,
    )


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
