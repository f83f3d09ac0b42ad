"""How old each kind of asset may get before it is stale, derived from the data set config and
the retraining cron (no Dagster here; ``churn_assets.freshness`` turns these into policies).

Two clocks drive the graph:

* **Data** (``raw_transactions``, ``current_features``): new landing batches. Scores forecast
  the next ``horizon_days``; features computed from data older than a tenth of that horizon
  (9 days for the default 90) already miss a noticeable share of the behaviour the forecast
  is about: **warn**. Older than a third of the horizon (30 days), the scores describe a
  period mostly gone by: **fail**. At least 1 day to warn and 2 to fail, for short horizons.
* **Retraining** (``deployed_model_version``, ``churn_scores``): a retraining runs on the
  cron when new data arrived since the last completed training (and on drift), and
  materializes both, promoted or not. With no new data nothing retrains, so the deployment
  may be as old as the data plus the time a retraining takes to follow it: its window is the
  data window plus 2 (warn) and 4 (fail) cron intervals. Data that has waited 4 intervals
  for a retraining (three missed runs in a row) is what the stale-deployment sensor posts
  to the alert webhook. The interval is the *largest* gap between ticks, so a weekday cron
  does not go stale every weekend. At least 1 minute (Dagster's floor).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

#: Warn / fail after this share of the label horizon without new data.
DATA_WARN_SHARE = 0.1
DATA_FAIL_SHARE = 1 / 3
#: Warn / fail after this many retraining cron intervals without a retraining run.
RETRAINING_WARN_INTERVALS = 2
RETRAINING_FAIL_INTERVALS = 4
_MINUTE = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class FreshnessWindow:
    """Older than ``warn``: warning; older than ``fail``: stale (``warn < fail``)."""

    warn: dt.timedelta
    fail: dt.timedelta

    def __post_init__(self) -> None:
        if not (_MINUTE <= self.warn < self.fail):
            raise ValueError(f"need 1 minute <= warn < fail, got {self.warn} / {self.fail}")


def data_window(horizon_days: int) -> FreshnessWindow:
    """Landing data and features: a tenth (warn) and a third (fail) of the label horizon."""
    warn = max(dt.timedelta(days=horizon_days * DATA_WARN_SHARE), dt.timedelta(days=1))
    fail = max(dt.timedelta(days=horizon_days * DATA_FAIL_SHARE), dt.timedelta(days=2))
    return FreshnessWindow(warn=_whole_minutes(warn), fail=_whole_minutes(max(fail, 2 * warn)))


def retraining_window(interval: dt.timedelta) -> FreshnessWindow:
    """Data waiting for a retraining: 2 (warn) and 4 (fail) retraining intervals."""
    interval = max(interval, _MINUTE)
    return FreshnessWindow(
        warn=RETRAINING_WARN_INTERVALS * interval, fail=RETRAINING_FAIL_INTERVALS * interval
    )


def deployment_window(data: FreshnessWindow, retraining: FreshnessWindow) -> FreshnessWindow:
    """Deployment and scores: retrained only after new data, so as old as the data may get
    plus the retraining slack (90-day horizon, hourly cron: 9 days 2 h and 30 days 4 h)."""
    return FreshnessWindow(warn=data.warn + retraining.warn, fail=data.fail + retraining.fail)


def largest_gap(ticks: list[dt.datetime]) -> dt.timedelta:
    """The largest gap between consecutive ``ticks`` (ascending; at least two)."""
    if len(ticks) < 2:
        raise ValueError("need at least two ticks")
    return max(b - a for a, b in zip(ticks, ticks[1:], strict=False))


def _whole_minutes(delta: dt.timedelta) -> dt.timedelta:
    return dt.timedelta(minutes=round(delta.total_seconds() / 60))
