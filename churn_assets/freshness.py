"""Freshness policies of the landing data, features, deployment and scores, and the sensor
that posts a stale deployment to the alert webhook.

The windows are part of the asset definitions, so they are fixed when the code location
loads: from the data set named by ``CHURN_DATASET`` (its label horizon) and the retraining
cron ``CHURN_RETRAINING_CRON``, the same two settings the schedules and assets use (see
:mod:`churn_assets.lib.freshness` for the reasoning). The UI shows each asset's freshness
(pass / warn / fail) from Dagster's freshness daemon; a deployment older than its fail
window is also posted to ``CHURN_ALERT_WEBHOOK_URL`` once per stale deployment.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import dagster as dg

from churn_assets.lib import notify
from churn_assets.lib.freshness import (
    FreshnessWindow,
    data_window,
    largest_gap,
    retraining_window,
)
from churn_assets.schedules import DEFAULT_CRON

DEFAULT_HORIZON_DAYS = 90
#: Cron ticks sampled for the largest gap (an hourly cron: 8 days; a daily one: 200 days).
SAMPLED_TICKS = 200
DEPLOYED = dg.AssetKey("deployed_model_version")
STALE_INTERVAL_SECONDS = 60


def configured_horizon_days() -> int:
    """The label horizon of the configured data set (the default if it cannot be read now:
    a broken config must not keep the code location from loading; runs report it)."""
    try:
        from churn_assets.lib.datasets import load_dataset_config
        from churn_assets.lib.settings import get_settings

        return load_dataset_config(get_settings().dataset).labels.horizon_days
    except Exception:
        return DEFAULT_HORIZON_DAYS


def cron_interval(cron: str) -> dt.timedelta:
    """The largest gap between the next ticks of ``cron`` (UTC)."""
    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(time.time(), cron, "UTC")
    return largest_gap([next(ticks) for _ in range(SAMPLED_TICKS)])


def policy(window: FreshnessWindow) -> dg.FreshnessPolicy:
    """A Dagster time-window freshness policy of ``window``."""
    return dg.FreshnessPolicy.time_window(fail_window=window.fail, warn_window=window.warn)


DATA_WINDOW = data_window(configured_horizon_days())
RETRAINING_WINDOW = retraining_window(
    cron_interval(os.environ.get("CHURN_RETRAINING_CRON") or DEFAULT_CRON)
)
#: ``raw_transactions`` and ``current_features``: new data within a share of the horizon.
DATA_FRESHNESS = policy(DATA_WINDOW)
#: ``deployed_model_version`` and ``churn_scores``: a retraining run every few cron ticks.
RETRAINING_FRESHNESS = policy(RETRAINING_WINDOW)


def _now() -> float:
    return time.time()


def _age(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def stale_deployment_alert(
    version: str | None, materialized_at: float, now: float, window: FreshnessWindow
) -> notify.Alert:
    """The notification of a deployment older than its fail window."""
    when = dt.datetime.fromtimestamp(materialized_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return notify.Alert(
        title=f"Deployed model version is stale: {version or 'unknown version'}",
        reason=f"deployed_model_version last materialized {_age(now - materialized_at)} ago "
        f"({when}); its freshness policy fails after {window.fail} "
        f"(warns after {window.warn}): retraining runs are not completing",
        link=notify.asset_link(DEPLOYED.to_user_string()),
        assets=(DEPLOYED.to_user_string(),),
        details={"Deployed version": version or "unknown", "Last materialized": when},
    )


@dg.sensor(
    minimum_interval_seconds=STALE_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to the Slack-compatible webhook CHURN_ALERT_WEBHOOK_URL when "
    "deployed_model_version is older than its freshness policy's fail window (no retraining "
    "run completed for several cron intervals); once per stale deployment; skips when unset.",
)
def stale_deployment_notifier(context: dg.SensorEvaluationContext):
    event = context.instance.get_latest_materialization_event(DEPLOYED)
    if event is None:
        return dg.SkipReason("nothing deployed yet")
    now = _now()
    age = now - event.timestamp
    if age <= RETRAINING_WINDOW.fail.total_seconds():
        return dg.SkipReason(f"deployment is fresh ({_age(age)} old)")
    marker = f"{event.run_id}:{event.timestamp}"  # one post per stale materialization
    if context.cursor == marker:
        return dg.SkipReason(f"stale deployment ({_age(age)} old) already posted")
    url = notify.webhook_url()
    if url is None:
        return dg.SkipReason(f"stale deployment ({_age(age)} old); {notify.WEBHOOK_ENV} unset")
    meta = event.asset_materialization.metadata if event.asset_materialization else {}
    version = getattr(meta.get("version"), "value", None)
    status = notify.post_alert(
        url, stale_deployment_alert(version, event.timestamp, now, RETRAINING_WINDOW)
    )
    context.update_cursor(marker)
    context.log.warning(f"stale deployment {version} ({_age(age)} old) posted (HTTP {status})")
    return None
