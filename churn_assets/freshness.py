"""Freshness policies of the landing data, features, deployment and scores, and the sensor
that posts a stale deployment to the alert webhook.

The windows are part of the asset definitions, so they are fixed when the code location
loads: from the data set named by ``CHURN_DATASET`` (its label horizon) and the retraining
cron ``CHURN_RETRAINING_CRON``, the same two settings the schedules and assets use (see
:mod:`churn_assets.lib.freshness` for the reasoning). The UI shows each asset's freshness
(pass / warn / fail) from Dagster's freshness daemon. New data that has waited longer than
4 retraining intervals for a completed retraining is posted to ``CHURN_ALERT_WEBHOOK_URL``,
once per waiting batch.
"""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg

from churn_assets import scope
from churn_assets.lib import notify
from churn_assets.lib.freshness import (
    RETRAINING_FAIL_INTERVALS,
    FreshnessWindow,
    data_window,
    deployment_window,
    largest_gap,
    retraining_window,
)
from churn_assets.resources import ChurnPlatform
from churn_assets.schedules import retraining_cron
from churn_assets.tick_errors import posting_errors
from churn_assets.training_state import first_untrained_input, last_completed_training_record

DEFAULT_HORIZON_DAYS = 90
#: Cron ticks sampled for the largest gap (an hourly cron: 8 days; a daily one: 200 days).
SAMPLED_TICKS = 200
DEPLOYED = scope.key("deployed_model_version")
STALE_INTERVAL_SECONDS = 60


def configured_horizon_days() -> int:
    """The label horizon of the configured data set (the default if it cannot be read now:
    a broken config must not keep the code location from loading; runs report it)."""
    return scope.CONFIG.labels.horizon_days if scope.CONFIG else DEFAULT_HORIZON_DAYS


def cron_interval(cron: str) -> dt.timedelta:
    """The largest gap between the next ticks of ``cron`` (UTC)."""
    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(time.time(), cron, "UTC")
    return largest_gap([next(ticks) for _ in range(SAMPLED_TICKS)])


def policy(window: FreshnessWindow) -> dg.FreshnessPolicy:
    """A Dagster time-window freshness policy of ``window``."""
    return dg.FreshnessPolicy.time_window(fail_window=window.fail, warn_window=window.warn)


DATA_WINDOW = data_window(configured_horizon_days())
RETRAINING_WINDOW = retraining_window(cron_interval(retraining_cron()))
#: ``raw_transactions`` and ``current_features``: new data within a share of the horizon.
DATA_FRESHNESS = policy(DATA_WINDOW)
DEPLOYMENT_WINDOW = deployment_window(DATA_WINDOW, RETRAINING_WINDOW)
#: ``deployed_model_version`` and ``churn_scores``: retrained within a few cron ticks of
#: new data, and data arrives within the data window.
RETRAINING_FRESHNESS = policy(DEPLOYMENT_WINDOW)


def _now() -> float:
    return time.time()


def _age(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 1:
        return f"{seconds / 60:.0f} minutes"
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def deployed_version(instance: dg.DagsterInstance) -> str | None:
    """The deployed version the event log names last: the latest ``deployed_model_version``
    materialization, or a rollback job's observation of it if newer (that job moves the
    pointer outside the asset)."""
    newest = None
    for records in (
        instance.fetch_materializations(DEPLOYED, limit=1).records,
        instance.fetch_observations(DEPLOYED, limit=1).records,
    ):
        if records and (newest is None or records[0].storage_id > newest.storage_id):
            newest = records[0]
    entry = newest and (newest.asset_materialization or newest.asset_observation)
    value = (entry.metadata if entry else {}).get("version")
    return getattr(value, "value", None)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def stale_deployment_alert(
    version: str | None,
    waiting: str,
    waiting_since: float,
    trained_at: float | None,
    now: float,
    window: FreshnessWindow,
    history_lost: str | None = None,
) -> notify.Alert:
    """The notification of new data that has waited past ``window.fail`` for a retraining.
    ``history_lost``: why the event log cannot say when the last training completed (its
    ``deployed_model_version`` materializations were wiped), said in place of it."""
    last = (
        f"last completed training {_when(trained_at)}"
        if trained_at
        else history_lost or "no completed training"
    )
    never = "unknown: the history was wiped" if history_lost else "never"
    return notify.Alert(
        title=f"Deployed model version is stale: {version or 'nothing deployed'}",
        reason=f"new data ({waiting}, {_when(waiting_since)}) has waited "
        f"{_age(now - waiting_since)} for a retraining ({last}); more than "
        f"{window.fail} ({RETRAINING_FAIL_INTERVALS} retraining intervals): retraining runs "
        "are not completing",
        link=notify.asset_link(DEPLOYED.to_user_string()),
        assets=(DEPLOYED.to_user_string(), waiting),
        details={
            "Deployed version": version or "none",
            "Waiting since": _when(waiting_since),
            "Last completed training": _when(trained_at) if trained_at else never,
        },
    )


def deployed_per_storage(platform: ChurnPlatform) -> tuple[str, float, str] | None:
    """The deployed version the pointer in storage names, when it was deployed (epoch
    seconds) and the pointer's location; None when nothing is deployed or it is unreadable."""
    from churn_assets.lib import deployment as dep

    try:
        storage = platform.storage()
        pointer = dep.read_current(storage)
        if not pointer or not pointer.get("version"):
            return None
        stamp = dt.datetime.fromisoformat(str(pointer.get("updated_at")))
    except Exception:  # noqa: BLE001 - the alert then counts as before
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return str(pointer["version"]), stamp.timestamp(), storage.url(dep.POINTER)


@dg.sensor(
    minimum_interval_seconds=STALE_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to the Slack-compatible webhook CHURN_ALERT_WEBHOOK_URL when new data "
    "(raw tables or customer features materialized after the last completed training) has "
    "waited more than 4 retraining intervals for a retraining: retraining runs are not "
    "completing. Once per waiting batch; skips when unset. With no new data the deployment "
    "is current, however old.",
)
@posting_errors("stale_deployment_notifier", "stale deployments are not posted")
def stale_deployment_notifier(context: dg.SensorEvaluationContext, platform: ChurnPlatform):
    instance = context.instance
    trained = last_completed_training_record(instance)
    # no completed training in the event log, yet a version is deployed: the history of
    # deployed_model_version was wiped (or predates this instance); the wait counts from
    # when storage says the version was deployed, not from the first ingestion
    stored = deployed_per_storage(platform) if trained is None else None
    pending = first_untrained_input(instance, trained, since=stored[1] if stored else None)
    if pending is None:
        return dg.SkipReason("every ingested batch has been trained on")
    now = _now()
    age = now - pending.timestamp
    waiting = pending.asset_key.to_user_string() if pending.asset_key else "new data"
    if age <= RETRAINING_WINDOW.fail.total_seconds():
        return dg.SkipReason(f"new data ({waiting}) waiting {_age(age)} for a retraining")
    marker = str(pending.storage_id)  # one post per waiting batch
    if context.cursor == marker:
        return dg.SkipReason(f"data waiting {_age(age)} already posted")
    url = notify.webhook_url()
    if url is None:
        return dg.SkipReason(
            f"data waiting {_age(age)} for a retraining; {notify.WEBHOOK_ENV} unset"
        )
    version = deployed_version(instance)
    trained_at = trained.timestamp if trained else None
    lost = None
    if stored:
        version = stored[0]
        lost = (
            f"no completed training in the event log: the materializations of "
            f"{DEPLOYED.to_user_string()} were wiped or predate this Dagster instance; "
            f"{stored[0]} is deployed since {_when(stored[1])} per {stored[2]}, and the wait "
            "counts from then"
        )
    alert = stale_deployment_alert(
        version, waiting, pending.timestamp, trained_at, now, RETRAINING_WINDOW, lost
    )
    status = notify.post_alert(url, alert)
    context.update_cursor(marker)
    context.log.warning(f"data waiting {_age(age)} for a retraining posted (HTTP {status})")
    return None
