"""Freshness: windows derived from the label horizon and the retraining cron, the policies on
the four assets, and the stale-deployment notification (posted to a local HTTP receiver)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from churn_assets import freshness
from churn_assets.lib.freshness import data_window, largest_gap, retraining_window
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
    retraining = [12 * 3600, 24 * 3600]
    assert windows == {
        "raw_transactions": data,
        "current_features": data,
        "deployed_model_version": retraining,
        "churn_scores": retraining,
    }


# ------------------------------------------------------------------ stale deployment alert


@dg.asset(name="deployed_model_version")
def fake_deployment() -> dg.Output[dict]:
    return dg.Output({"version": "v20260101-000000"}, metadata={"version": "v20260101-000000"})


@pytest.fixture
def deployed() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([fake_deployment], instance=instance).success
    return instance


def evaluate(instance: dg.DagsterInstance, cursor: str | None = None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return freshness.stale_deployment_notifier(context), context


def later(monkeypatch: pytest.MonkeyPatch, by: dt.timedelta) -> None:
    start = time.time()
    monkeypatch.setattr(freshness, "_now", lambda: start + by.total_seconds())


def test_a_stale_deployment_is_posted_once(
    deployed: dg.DagsterInstance, webhook: Receiver, monkeypatch: pytest.MonkeyPatch
):
    later(monkeypatch, freshness.RETRAINING_WINDOW.fail + dt.timedelta(minutes=5))
    result, context = evaluate(deployed)
    assert result is None and len(webhook.bodies) == 1
    text = webhook.bodies[0]["text"]
    assert "Deployed model version is stale: v20260101-000000" in text
    assert "deployed_model_version" in text and "retraining runs are not completing" in text
    assert f"Open in Dagster: {UI}/assets/deployed_model_version" in text
    again, _ = evaluate(deployed, context.cursor)
    assert isinstance(again, dg.SkipReason) and "already posted" in again.skip_message
    assert len(webhook.bodies) == 1


def test_a_fresh_deployment_posts_nothing(
    deployed: dg.DagsterInstance, webhook: Receiver, monkeypatch: pytest.MonkeyPatch
):
    later(monkeypatch, freshness.RETRAINING_WINDOW.fail - dt.timedelta(minutes=5))
    result, _ = evaluate(deployed)
    assert isinstance(result, dg.SkipReason) and "fresh" in result.skip_message
    assert webhook.bodies == []


def test_nothing_deployed_or_no_webhook_skips(
    deployed: dg.DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
):
    result, _ = evaluate(dg.DagsterInstance.ephemeral())
    assert isinstance(result, dg.SkipReason) and "nothing deployed" in result.skip_message
    later(monkeypatch, 2 * freshness.RETRAINING_WINDOW.fail)
    result, context = evaluate(deployed)
    assert isinstance(result, dg.SkipReason) and "CHURN_ALERT_WEBHOOK_URL" in result.skip_message
    assert context.cursor is None and receiver.bodies == []


def test_the_platform_registers_the_stale_deployment_notifier():
    from churn_assets.definitions import defs

    sensor = defs.get_repository_def().get_sensor_def("stale_deployment_notifier")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
