"""How current the served model version is, as Prometheus metrics (for staleness alerts).

=================================================  ==============================================
``churn_serving_model_version_timestamp_seconds``  when the loaded version was made (Unix time,
                                                   from its ``vYYYYMMDD-HHMMSS`` name)
``churn_serving_model_behind_pointer``             1 while ``current.json`` names a version the
                                                   sidecar does not serve (refused or failing
                                                   reload), else 0
=================================================  ==============================================

Both come from the poll thread's last pass (:meth:`VersionStatus.update`); a scrape reads the
cached values. They are absent until the first poll.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

VERSION_FORMAT = "v%Y%m%d-%H%M%S"


def version_timestamp(version: str | None) -> float | None:
    """Unix seconds encoded in a ``vYYYYMMDD-HHMMSS`` (UTC) version name, or None."""
    if not version:
        return None
    try:
        made = dt.datetime.strptime(version[:16], VERSION_FORMAT)
    except ValueError:
        return None
    return made.replace(tzinfo=dt.UTC).timestamp()


class VersionStatus:
    """A Prometheus collector of the loaded version's age and whether it lags the pointer."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.loaded: str | None = None
        self.behind: bool | None = None
        if registry is not None:
            registry.register(self)

    def update(self, loaded: str | None, pointer: str | None) -> None:
        """Record the loaded version and the version the pointer names (None: unknown, e.g.
        storage unreachable; then the last known lag is kept)."""
        self.loaded = loaded
        if pointer is not None:
            self.behind = pointer != loaded
        elif loaded is None:
            self.behind = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        made = version_timestamp(self.loaded)
        if made is not None:
            yield GaugeMetricFamily(
                "churn_serving_model_version_timestamp_seconds",
                "When the loaded model version was made (Unix time, from its name).",
                value=made,
            )
        if self.behind is not None:
            yield GaugeMetricFamily(
                "churn_serving_model_behind_pointer",
                "1 while current.json names a version the sidecar does not serve.",
                value=1.0 if self.behind else 0.0,
            )
