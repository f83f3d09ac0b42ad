"""Freshness: windows derived from the label horizon and the retraining cron, the policies on
the four assets, and the stale-deployment notification (posted to a local HTTP receiver)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time

import dagster as dg
import pytest

from churn_assets import freshness
from churn_assets.lib.freshness import (
    data_window,
    deployment_window,
    largest_gap,
    retraining_window,
)
from tests.code import test_notifications as notifications
from tests.code.test_notifications import UI, Receiver

# the local HTTP receiver and the webhook settings of the notification tests
receiver = notifications.receiver
webhook = notifications.webhook

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def test_data_windows_are_shares_of_the_horizon():
    w = data_window(90)
    assert (w.warn, w.fail) == (9 * DAY, 30 * DAY)
    short = data_window(5)  # floors: a day to warn, two to fail
    assert (short.warn, short.fail) == (DAY, 2 * DAY)


def test_retraining_windows_are_missed_runs():
    w = retraining_window(HOUR)
    assert (w.warn, w.fail) == (2 * HOUR, 4 * HOUR)


def test_deployment_windows_follow_the_data_plus_the_retraining_slack():
    """Nothing retrains without new data: the deployment may be as old as the data may get,
    plus the time a retraining takes to follow."""
    w = deployment_window(data_window(90), retraining_window(HOUR))
    assert (w.warn, w.fail) == (9 * DAY + 2 * HOUR, 30 * DAY + 4 * HOUR)


def test_the_cron_interval_is_its_largest_gap():
    assert freshness.cron_interval("0 * * * *") == HOUR
    assert freshness.cron_interval("*/15 * * * *") == dt.timedelta(minutes=15)
    # weekdays at 9: Friday to Monday is the gap that matters, not a day
    assert freshness.cron_interval("0 9 * * 1-5") == 3 * DAY
    with pytest.raises(ValueError):
        largest_gap([dt.datetime(2026, 1, 1)])


def policies() -> dict[str, dg.FreshnessPolicy | None]:
    from churn_assets.definitions import defs

    keys = ["raw_transactions", "current_features", "deployed_model_version", "churn_scores"]
    return {k: defs.get_assets_def(k).specs_by_key[dg.AssetKey(k)].freshness_policy for k in keys}


def test_the_four_assets_carry_their_policies():
    got = policies()
    assert got["raw_transactions"] == got["current_features"] == freshness.DATA_FRESHNESS
    assert got["deployed_model_version"] == got["churn_scores"] == freshness.RETRAINING_FRESHNESS
    assert freshness.DATA_FRESHNESS != freshness.RETRAINING_FRESHNESS


def test_windows_follow_the_configured_data_set_and_cron():
    code = (
        "import json, dagster as dg\n"
        "from churn_assets.definitions import defs\n"
        "out = {}\n"
        "for k in ['raw_transactions', 'current_features', 'deployed_model_version',"
        " 'churn_scores']:\n"
        "    p = defs.get_assets_def(k).specs_by_key[dg.AssetKey(k)].freshness_policy\n"
        "    out[k] = [p.warn_window.to_timedelta().total_seconds(),"
        " p.fail_window.to_timedelta().total_seconds()]\n"
        "print(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "CHURN_DATASET": "online_retail",  # horizon 91 days
        "CHURN_RETRAINING_CRON": "0 */6 * * *",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    windows = json.loads(done.stdout.strip().splitlines()[-1])
    data = [9.1 * 86400, round(91 / 3 * 86400 / 60) * 60]
    deployment = [data[0] + 12 * 3600, data[1] + 24 * 3600]  # + 2 and 4 six-hour intervals
    assert windows == {
        "raw_transactions": data,
        "current_features": data,
        "deployed_model_version": deployment,
        "churn_scores": deployment,
    }


# ------------------------------------------------------------------ stale deployment alert


def stand_in(name: str, **metadata) -> dg.AssetsDefinition:
    """An asset under a platform asset's name: the sensor reads its event-log records."""

    @dg.asset(name=name)
    def _asset() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def land(instance: dg.DagsterInstance, *names: str) -> None:
    assets = [
        stand_in(n, version="v20260101-000000") if n == "deployed_model_version" else stand_in(n)
        for n in names
    ]
    assert dg.materialize(assets, instance=instance).success


@pytest.fixture
def trained() -> dg.DagsterInstance:
    """Data, a completed training on it and its deployment."""
    instance = dg.DagsterInstance.ephemeral()
    land(instance, "raw_customers", "raw_transactions", "customer_features")
    land(instance, "training_set", "deployed_model_version")
    return instance


@pytest.fixture
def waiting(trained: dg.DagsterInstance) -> dg.DagsterInstance:
    """... then a new batch that no retraining has completed on."""
    land(trained, "raw_transactions", "customer_features")
    return trained


def evaluate(instance: dg.DagsterInstance, cursor: str | None = None):
    from churn_assets.resources import ChurnPlatform

    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"platform": ChurnPlatform()}
    )
    return freshness.stale_deployment_notifier(context), context


def later(monkeypatch: pytest.MonkeyPatch, by: dt.timedelta) -> None:
    start = time.time()
    monkeypatch.setattr(freshness, "_now", lambda: start + by.total_seconds())


def test_data_waiting_for_a_retraining_is_posted_once(
    waiting: dg.DagsterInstance, webhook: Receiver, monkeypatch: pytest.MonkeyPatch
):
    later(monkeypatch, freshness.RETRAINING_WINDOW.fail + dt.timedelta(minutes=5))
    result, context = evaluate(waiting)
    assert result is None and len(webhook.bodies) == 1
    text = webhook.bodies[0]["text"]
    assert "Deployed model version is stale: v20260101-000000" in text
    assert re.search(r"new data \((raw_transactions|customer_features), 20", text), text
    assert "for a retraining (last completed training 20" in text
    assert "retraining runs are not completing" in text
    assert f"Open in Dagster: {UI}/assets/deployed_model_version" in text
    again, _ = evaluate(waiting, context.cursor)
    assert isinstance(again, dg.SkipReason) and "already posted" in again.skip_message
    assert len(webhook.bodies) == 1


def test_data_waiting_less_than_the_window_posts_nothing(
    waiting: dg.DagsterInstance, webhook: Receiver, monkeypatch: pytest.MonkeyPatch
):
    later(monkeypatch, freshness.RETRAINING_WINDOW.fail - dt.timedelta(minutes=5))
    result, _ = evaluate(waiting)
    assert isinstance(result, dg.SkipReason) and "waiting" in result.skip_message
    assert webhook.bodies == []


def test_an_old_deployment_with_no_new_data_is_current(
    trained: dg.DagsterInstance, webhook: Receiver, monkeypatch: pytest.MonkeyPatch
):
    """No new data, no retraining: however old, the deployment is not stale."""
    later(monkeypatch, 100 * freshness.RETRAINING_WINDOW.fail)
    result, _ = evaluate(trained)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "every ingested batch has been trained on"
    assert webhook.bodies == []


def test_data_never_trained_on_counts_and_no_webhook_skips(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
):
    instance = dg.DagsterInstance.ephemeral()
    result, _ = evaluate(instance)
    assert isinstance(result, dg.SkipReason) and "every ingested batch" in result.skip_message
    land(instance, "raw_customers")  # data, and no training has ever completed
    later(monkeypatch, 2 * freshness.RETRAINING_WINDOW.fail)
    result, context = evaluate(instance)
    assert isinstance(result, dg.SkipReason) and "CHURN_ALERT_WEBHOOK_URL" in result.skip_message
    assert context.cursor is None and receiver.bodies == []


def test_a_wiped_deployment_history_is_said_and_counts_from_the_stored_deployment(
    trained: dg.DagsterInstance,
    isolated_env,
    webhook: Receiver,
    monkeypatch: pytest.MonkeyPatch,
):
    """deployed_model_version's materializations wiped in the UI: the alert said "nothing
    deployed", "no completed training" and counted from the very first ingestion. It now
    names the version the pointer in storage deploys, says the history was wiped, and
    counts from the first data after that deployment."""
    from churn_assets.lib.storage import Storage
    from tests.code.test_schedules_sensors import deploy_versions

    deploy_versions(Storage(str(isolated_env / "synthetic")), ["v20260102-000000"])
    trained.wipe_assets([dg.AssetKey("deployed_model_version")])
    land(trained, "raw_transactions")  # a batch after the deployment, never trained on
    batch = trained.fetch_materializations(dg.AssetKey("raw_transactions"), limit=1).records[0]
    later(monkeypatch, freshness.RETRAINING_WINDOW.fail + dt.timedelta(minutes=5))
    result, context = evaluate(trained)
    assert result is None and len(webhook.bodies) == 1
    text = webhook.bodies[0]["text"]
    assert "Deployed model version is stale: v20260102-000000" in text
    assert "materializations of deployed_model_version were wiped" in text
    assert "v20260102-000000 is deployed since 20" in text
    assert "current.json" in text
    assert context.cursor == str(batch.storage_id)  # waiting since that batch


def test_the_platform_registers_the_stale_deployment_notifier():
    from churn_assets.definitions import defs

    sensor = defs.get_repository_def().get_sensor_def("stale_deployment_notifier")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
