"""Drift gauges of the sidecar: the latest drift report's summary, as Prometheus metrics.

The platform writes ``monitoring/drift/latest.json`` (data set storage) after every drift
report. :meth:`DriftStatus.refresh` runs in the sidecar's poll thread and re-reads it only when
the file changed; a scrape of ``/metrics`` reads the cached values and never touches storage.
Until a report exists the metrics are absent (not 0), so "no report" and "no drift" differ.

=============================================  ==================================================
``churn_drift_detected``                       1 when the latest report says drift, else 0
                                               (label: the report's model_version)
``churn_drift_share_drifted``                  share of columns that drifted
``churn_drift_drifted_columns``                number of drifted columns
``churn_drift_prediction_drift``               1 when a prediction column drifted
``churn_drift_report_timestamp_seconds``       when the report was made (Unix time)
``churn_drift_summary_read_failures_total``    failed reads of the summary (kept the last one)
=============================================  ==================================================

The drift of the traffic the sidecar itself served (``served_drift_report``, from the
inference log) is exported the same way from ``monitoring/drift/served-latest.json`` as
``churn_served_drift_*`` (a second collector, ``prefix="churn_served_drift"``), plus
``churn_served_drift_records`` (served records in the window). While that window holds too
few records (status ``no_served_traffic``) only the records and timestamp gauges appear.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from churn_assets.lib.storage import with_refusal
from churn_serving.model import file_signature

log = logging.getLogger("churn_serving.drift_status")

#: Where the platform writes the latest drift report's summary (relative to the data set).
SUMMARY = "monitoring/drift/latest.json"
#: The served-traffic drift summary (written by ``served_drift_report``).
SERVED_SUMMARY = "monitoring/drift/served-latest.json"
SERVED_PREFIX = "churn_served_drift"


def _timestamp(value: Any) -> float | None:
    """Unix seconds of an ISO 8601 string (naive means UTC), or None."""
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


class DriftStatus:
    """A Prometheus collector of the latest drift summary, refreshed off the request path."""

    def __init__(
        self,
        storage: Any,
        registry: CollectorRegistry | None = None,
        *,
        summary: str = SUMMARY,
        prefix: str = "churn_drift",
    ):
        self.storage = storage
        self.path = summary
        self.prefix = prefix
        self.summary: dict[str, Any] | None = None
        self.read_failures = 0
        self._signature: Any = None
        if registry is not None:
            registry.register(self)

    def refresh(self) -> dict[str, Any] | None:
        """Re-read the summary if the file changed; returns the current summary (or None)."""
        try:
            sig = file_signature(self.storage, self.path)
            if sig is None or sig == self._signature:
                return self.summary
            summary = json.loads(self.storage.read_bytes(self.path))
            if not isinstance(summary, dict) or "drifted" not in summary:
                raise ValueError(f"not a drift summary: {str(summary)[:200]}")
        except Exception as e:  # storage down or a torn file: keep the last good summary
            self.read_failures += 1
            log.warning("cannot read %s: %s", self.storage.url(self.path), with_refusal(str(e), e))
            return self.summary
        self._signature = sig
        changed = (self.summary or {}).get("created_at") != summary.get("created_at")
        self.summary = summary
        if changed:
            log.info(
                "drift report of %s: drifted=%s share=%s columns=%s",
                summary.get("model_version"),
                summary.get("drifted"),
                summary.get("share_drifted"),
                summary.get("drifted_columns"),
            )
        return summary

    def describe(self) -> list[Metric]:
        """No fixed description (the metrics appear once a report exists)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The cached summary as metrics (no storage access)."""
        failures = CounterMetricFamily(
            f"{self.prefix}_summary_read_failures",
            "Failed reads of the drift summary (the last good one is kept).",
        )
        failures.add_metric([], self.read_failures)
        yield failures
        s = self.summary
        if s is None:
            return
        if "current_rows" in s:
            yield GaugeMetricFamily(
                f"{self.prefix}_records",
                "Records the latest served-traffic drift report measured.",
                value=float(s.get("current_rows") or 0),
            )
        created = _timestamp(s.get("created_at"))
        if s.get("status", "ok") != "ok":  # e.g. no served traffic: no verdict to export
            if created is not None:
                yield GaugeMetricFamily(
                    f"{self.prefix}_report_timestamp_seconds",
                    "When the latest drift report was made (Unix time).",
                    value=created,
                )
            return
        detected = GaugeMetricFamily(
            f"{self.prefix}_detected",
            "1 when the latest drift report says drift, else 0.",
            labels=["model_version"],
        )
        detected.add_metric([str(s.get("model_version") or "")], 1.0 if s.get("drifted") else 0.0)
        yield detected
        yield GaugeMetricFamily(
            f"{self.prefix}_share_drifted",
            "Share of the columns that drifted in the latest drift report.",
            value=float(s.get("share_drifted") or 0.0),
        )
        yield GaugeMetricFamily(
            f"{self.prefix}_drifted_columns",
            "Number of columns that drifted in the latest drift report.",
            value=float(len(s.get("drifted_columns") or [])),
        )
        yield GaugeMetricFamily(
            f"{self.prefix}_prediction_drift",
            "1 when a prediction column drifted in the latest drift report.",
            value=1.0 if s.get("prediction_drift") else 0.0,
        )
        if created is not None:
            yield GaugeMetricFamily(
                f"{self.prefix}_report_timestamp_seconds",
                "When the latest drift report was made (Unix time).",
                value=created,
            )
