"""Prometheus metrics of the sidecar (prometheus-client, one registry per app).

=============================================  ==================================================
``churn_serving_requests_total``               HTTP requests by endpoint, method, status
``churn_serving_request_duration_seconds``     latency histogram by endpoint, method, status
``churn_serving_predictions_total``            predicted records by churn label ("0" / "1")
``churn_serving_fallbacks_total``              answers by output (churn_probability /
                                               expected_total_sales) and fallback level
``churn_serving_model_errors_total``           model calls that raised, by role
``churn_serving_unseen_categories_total``      unseen categories accepted, by feature
``churn_serving_model_version_info``           1 for the loaded version (labels: version,
                                               classifier, regressor candidates)
``churn_serving_model_loaded``                 1 when a model is loaded
``churn_serving_reloads_total``                successful model swaps, by trigger
``churn_serving_reload_failures_total``        refused (integrity) or failed reloads, by reason
``churn_serving_inference_log_records_total``  inference-log records by result
                                               (written / dropped)
``churn_serving_inference_log_flush_failures_total``  failed inference-log writes
``churn_serving_inference_log_buffered_records``  records waiting to be written
=============================================  ==================================================

These describe the default data set (``CHURN_DATASET``); ``churn_serving_requests_total`` and
its histogram count every HTTP request, the routes of the other data sets under their
templates (``endpoint="/datasets/{name}/predict"``, ...). Each further data set served under
``/datasets/{name}/...`` has metrics of its own, exported by :class:`DatasetMetricsCollector`
under the same names with ``churn_`` replaced by ``churn_dataset_`` and a ``dataset`` label
(``churn_dataset_serving_predictions_total{dataset="telco",label="1"}``, its requests by
their un-prefixed endpoint, its drift and version gauges too).

Endpoints outside the app's routes are counted as ``endpoint="other"`` (bounded label set).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import Metric

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServingMetrics:
    """The sidecar's metrics on a private registry (several apps can live in one process)."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        if process:  # once per process: not in the registries of further data sets
            ProcessCollector(registry=r)
        self.requests = Counter(
            "churn_serving_requests",
            "HTTP requests by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "churn_serving_request_duration_seconds",
            "HTTP request latency in seconds by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "churn_serving_predictions",
            "Predicted records by churn label.",
            ["label"],
            registry=r,
        )
        self.fallbacks = Counter(
            "churn_serving_fallbacks",
            "Answers by output and by the fallback level that gave them "
            "(champion, fallback_model, business_rules, base_rate).",
            ["output", "level"],
            registry=r,
        )
        self.model_errors = Counter(
            "churn_serving_model_errors",
            "Model calls that raised at predict time, by role.",
            ["role"],
            registry=r,
        )
        self.unseen = Counter(
            "churn_serving_unseen_categories",
            "Categories not seen in training that were accepted, by feature.",
            ["feature"],
            registry=r,
        )
        self.model_info = Gauge(
            "churn_serving_model_version_info",
            "The loaded model version (value 1) with its champion candidates.",
            ["version", "classifier", "regressor"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "churn_serving_model_loaded", "1 when a model version is loaded.", registry=r
        )
        self.reloads = Counter(
            "churn_serving_reloads",
            "Successful model swaps by trigger (startup, poll, admin).",
            ["trigger"],
            registry=r,
        )
        self.reload_failures = Counter(
            "churn_serving_reload_failures",
            "Reloads refused (integrity: sha256 / missing artifact) or failed (error).",
            ["reason"],
            registry=r,
        )
        self.log_records = Counter(
            "churn_serving_inference_log_records",
            "Inference-log records by result (written, dropped).",
            ["result"],
            registry=r,
        )
        self.log_flush_failures = Counter(
            "churn_serving_inference_log_flush_failures",
            "Inference-log writes that failed (the records stay buffered).",
            registry=r,
        )
        self.log_buffered = Gauge(
            "churn_serving_inference_log_buffered_records",
            "Inference-log records waiting to be written.",
            registry=r,
        )
        self.prediction_children = {
            label: self.predictions.labels(label=label) for label in ("0", "1")
        }
        self.fallback_children: dict[tuple[str, str], Any] = {}
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._version_labels: tuple[str, str, str] | None = None

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request and its latency."""
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            labels = {"endpoint": endpoint, "method": method, "status": str(status)}
            children = (self.requests.labels(**labels), self.latency.labels(**labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_fallbacks(self, output: str, level: str, n: int) -> None:
        """Add ``n`` answers of ``output`` given by ``level``."""
        child = self.fallback_children.get((output, level))
        if child is None:
            child = self.fallbacks.labels(output=output, level=level)
            self.fallback_children[(output, level)] = child
        child.inc(n)

    def set_model(self, version: str | None, classifier: str = "", regressor: str = "") -> None:
        """Point the version-info gauge at the loaded version."""
        if self._version_labels is not None:
            with contextlib.suppress(KeyError):
                self.model_info.remove(*self._version_labels)
            self._version_labels = None
        if version is None:
            self.model_loaded.set(0)
            return
        labels = (version, classifier or "", regressor or "")
        self.model_info.labels(*labels).set(1)
        self._version_labels = labels
        self.model_loaded.set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


DATASET_PREFIX = "churn_dataset_"


def dataset_metric_name(name: str) -> str:
    """``churn_serving_x`` → ``churn_dataset_serving_x`` (the family of a further data set)."""
    return DATASET_PREFIX + name.removeprefix("churn_")


class DatasetMetricsCollector:
    """The metrics of the further data sets, each kept in its own :class:`ServingMetrics`,
    exported on the main registry as ``churn_dataset_*`` families with a ``dataset`` label
    (one family per name, every data set's samples in it)."""

    def __init__(
        self, sources: Callable[[], dict[str, ServingMetrics]], registry: CollectorRegistry
    ):
        self.sources = sources
        registry.register(self)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for dataset, metrics in sorted(self.sources().items()):
            for family in metrics.registry.collect():
                if not family.name.startswith("churn_"):
                    continue
                name = dataset_metric_name(family.name)
                out = families.get(name)
                if out is None:
                    out = families[name] = Metric(name, family.documentation, family.type)
                for s in family.samples:
                    out.samples.append(
                        s._replace(
                            name=dataset_metric_name(s.name),
                            labels={"dataset": dataset, **s.labels},
                        )
                    )
        yield from families.values()


#: Routes of one data set under ``/datasets/{name}``.
DATASET_ROUTES = frozenset({"/predict", "/predict/schema", "/model-info", "/ready"})


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by route and status.

    ``/datasets/{name}/<route>`` is counted under its template; when ``dataset_metrics``
    gives a further data set's own metrics for ``name``, also there under ``<route>``."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServingMetrics,
        endpoints: set[str],
        dataset_metrics: Callable[[str], ServingMetrics | None] | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints
        self.dataset_metrics = dataset_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            method = scope.get("method", "GET")
            if method not in ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
                method = "other"
            if path in self.endpoints:
                endpoint = path
            elif path.startswith("/datasets/"):
                endpoint = self._dataset_request(path, method, status, seconds)
            else:
                endpoint = "other"
            self.metrics.observe_request(endpoint, method, status, seconds)

    def _dataset_request(self, path: str, method: str, status: int, seconds: float) -> str:
        """The template of a ``/datasets/{name}/...`` path (``other`` if no route); counts
        the request in the data set's own metrics when it has some."""
        name, _, rest = path[len("/datasets/") :].partition("/")
        route = "/" + rest
        if not name or route not in DATASET_ROUTES:
            return "other"
        if self.dataset_metrics is not None:
            own = self.dataset_metrics(name)
            if own is not None:
                own.observe_request(route, method, status, seconds)
        return "/datasets/{name}" + route
