"""The FastAPI application of the serving sidecar.

Endpoints (status codes):

=========================  ==================================================================
``GET /health``            liveness, always 200 while the process runs: loaded version, last
                           reload, last error, last refusal, degraded roles, inference log
``GET /ready``             200 when a model version is loaded, else 503
``POST /predict``          records (``{"records": [...]}``), columns (``{"columns": {...}}``) or
                           an Arrow IPC stream (answer in Arrow with that ``Accept``):
                           200 answers; 404 unknown customer_id (whole request: the first 100
                           described in ``detail``, every position in
                           ``unknown_positions``); 413 more than ``max_records`` records or a
                           body over ``max_body_bytes``; 422 malformed JSON or invalid records (each
                           problem names its field); 503 no model loaded / no customer table
``GET /predict/schema``    200 the deployed feature schema and accepted ranges; 503 no model
``GET /model-info``        200 version, models and the runtime answering each (onnxruntime or
                           scikit-learn, and why), thresholds, rules; 503 no model
``GET /fallback-stats``    200 answers by output and fallback level, model errors by role
``GET /metrics``           200 Prometheus exposition
``GET /datasets``          200 the served data sets: the default (``CHURN_DATASET``) and every
                           other deployed one (or those of ``CHURN_SERVING_DATASETS``), each
                           with its served and deployed version and its state
``/datasets/{name}/...``   ``POST predict``, ``GET predict/schema``, ``GET model-info``,
                           ``GET ready``, ``GET health`` of data set ``name``, answered as
                           the un-prefixed routes answer for the default; 404 (naming the
                           served data sets)
                           when ``name`` is not served
``POST /admin/reload``     only when ``CHURN_SERVING_ADMIN_TOKEN`` is set (404 otherwise):
                           401 missing/malformed ``Authorization: Bearer``, 403 wrong token;
                           200 reloaded/unchanged, 409 refused (integrity), 503 failed
=========================  ==================================================================

The request path of ``POST /predict``: :class:`SidecarApp` hands it to :class:`PredictASGI`
before FastAPI's middleware and router (it is counted and timed there like every request;
the route stays in the OpenAPI document), the body is parsed by orjson, validated column by
column, answered by the fallback chain (ONNX Runtime) or, for id lookups, from the answers
computed when the customer table was loaded, encoded by orjson, and queued for the
inference log (written by a background thread). Requests above ``inline_max_records``
records are scored in a worker thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from churn_serving import arrow_body
from churn_serving.datasets import (
    DatasetRegistry,
    ServedDataset,
    config_name,
    echo,
    parse_names,
)
from churn_serving.inference_log import InferenceLogger
from churn_serving.manager import ModelManager
from churn_serving.metrics import DatasetMetricsCollector, MetricsMiddleware, ServingMetrics
from churn_serving.model import LEVELS, NO_VALUE_MODEL, ChainResult, CustomerTable, ModelBundle
from churn_serving.schema import RequestError, parse_as_of, parse_request
from churn_serving.settings import ServingSettings

log = logging.getLogger("churn_serving")

try:  # orjson is several times faster on big batches; the stdlib is the fallback
    from orjson import dumps as _dumps
    from orjson import loads as _loads

    JSON_LIBRARY = "orjson"
except ImportError:  # pragma: no cover - depends on the environment

    def _loads(data: bytes) -> Any:  # type: ignore[misc]
        return json.loads(data)

    def _dumps(obj: Any) -> bytes:  # type: ignore[misc]
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    JSON_LIBRARY = "json"

#: Bodies above this size are parsed in a worker thread (the event loop stays free).
THREAD_PARSE_BYTES = 64 * 1024
ENDPOINTS = {
    "/health",
    "/ready",
    "/predict",
    "/predict/schema",
    "/model-info",
    "/fallback-stats",
    "/metrics",
    "/admin/reload",
    "/datasets",
    "/openapi.json",
    "/docs",
}


# ------------------------------------------------------------ documentation models


class PredictionLevels(BaseModel):
    """Which fallback level answered each output."""

    churn_probability: str = Field(description=" | ".join(LEVELS))
    expected_total_sales: str = Field(
        description=" | ".join(LEVELS) + " (no_value_model: the data set has no value label)"
    )


class Prediction(BaseModel):
    """The answer for one record."""

    customer_id: str | None
    churn_probability: float
    churn_label: int = Field(description="1 when churn_probability >= threshold")
    threshold: float = Field(description="stored threshold of the model that answered")
    expected_total_sales: float | None = Field(
        description="null when the version has no value model (level no_value_model)"
    )
    model_version: str
    fallback_level: str = Field(description="the lowest level used for this record")
    fallback_levels: PredictionLevels
    unseen_categories: dict[str, str] = Field(
        description="categorical features whose value was not seen in training (accepted, "
        "treated as unknown by the model)"
    )


class PredictResponse(BaseModel):
    """Answers in request order."""

    request_id: str
    model_version: str
    count: int
    predictions: list[Prediction]


class ErrorItem(BaseModel):
    """One problem with a request."""

    loc: list[str | int]
    msg: str
    type: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """A refused request: ``detail`` lists the problems (or is a message)."""

    detail: list[ErrorItem] | str
    error_count: int | None = None
    #: A 404 for unknown ids: the position of every unknown id (``detail`` describes at most
    #: 100), so that a client can drop them and send the rest again.
    unknown_positions: list[int] | None = None


class MessageResponse(BaseModel):
    """A plain error message."""

    detail: str


class ReadyResponse(BaseModel):
    """Readiness."""

    ready: bool
    version: str | None = None
    reason: str | None = None


class DatasetState(BaseModel):
    """One served data set."""

    name: str
    default: bool = Field(description="the data set of the un-prefixed routes (CHURN_DATASET)")
    version: str | None = Field(description="the version served (null: none loaded)")
    deployed_version: str | None = Field(description="the version current.json named last")
    state: str = Field(description="ready | behind | loading | unavailable")
    reason: str | None = Field(description="why not ready (refusal or load error)")
    loaded_at: str | None = None


class DatasetsResponse(BaseModel):
    """The served data sets, the default first."""

    default: str
    datasets: list[DatasetState]


class NotServedResponse(BaseModel):
    """A data set name that is not served, and the names that are."""

    detail: str
    served: list[str]


class ReloadResponse(BaseModel):
    """What a reload did."""

    status: str = Field(description="reloaded | unchanged | features_reloaded | refused | failed")
    version: str | None = None
    previous_version: str | None = None
    serving_version: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------- scoring

_LEVEL_PAIRS = [
    (
        LEVELS[c if s == NO_VALUE_MODEL else max(c, s)],
        {"churn_probability": LEVELS[c], "expected_total_sales": LEVELS[s]},
    )
    for c in range(len(LEVELS))
    for s in range(len(LEVELS))
]


def _json_error(e: Exception, body: bytes = b"") -> RequestError:
    pos = getattr(e, "pos", None)
    reason = str(e)
    if any(w in body for w in (b"NaN", b"Infinity")):
        reason += " (NaN and Infinity are not JSON: send null for a missing value)"
    return RequestError(
        422,
        [
            {
                "type": "json_invalid",
                "loc": ["body", pos if isinstance(pos, int) else 0],
                "msg": f"JSON decode error: {reason}",
                "ctx": {"error": reason},
            }
        ],
    )


def _parse(body: bytes, max_records: int) -> Any:
    if not body.strip():
        raise RequestError(
            422, [{"type": "missing", "loc": ["body"], "msg": "a JSON request body is required"}]
        )
    try:
        payload = _loads(body)
    except ValueError as e:
        raise _json_error(e, body) from None
    return parse_request(payload, max_records)


def prediction_dicts(
    ids: list[str | None],
    r: ChainResult,
    version: str,
    has_value_model: bool,
    per_record: dict[int, dict[str, str]],
) -> list[dict[str, Any]]:
    """One answer object per record (in request order); see :class:`Prediction`."""
    n = len(ids)
    pairs = _LEVEL_PAIRS  # (fallback level, levels object) per pair code: shared, not rebuilt
    if r.churn_uniform is not None and r.sales_uniform is not None:
        pair_codes = [r.churn_uniform * len(LEVELS) + r.sales_uniform] * n
    else:
        pair_codes = (r.churn_level.astype(np.intp) * len(LEVELS) + r.sales_level).tolist()
    sales_values = r.expected_total_sales.tolist() if has_value_model else [None] * n
    columns = zip(
        ids,
        r.churn_probability.tolist(),
        r.churn_label.tolist(),
        r.threshold.tolist(),
        sales_values,
        pair_codes,
        strict=True,
    )
    empty: dict[str, str] = {}
    preds = [
        {
            "customer_id": cid,
            "churn_probability": p,
            "churn_label": lab,
            "threshold": t,
            "expected_total_sales": sales,
            "model_version": version,
            "fallback_level": pairs[code][0],
            "fallback_levels": pairs[code][1],
            "unseen_categories": empty,
        }
        for cid, p, lab, t, sales, code in columns
    ]
    for i, unseen_here in per_record.items():
        preds[i]["unseen_categories"] = unseen_here
    return preds


def encode_answer(
    request_id: str,
    version: str,
    ids: list[str | None],
    r: ChainResult,
    has_value_model: bool,
    per_record: dict[int, dict[str, str]],
) -> bytes:
    """The JSON answer: ``{"request_id", "model_version", "count", "predictions": [...]}``
    with one object per record (in request order)."""
    preds = prediction_dicts(ids, r, version, has_value_model, per_record)
    return _dumps(
        {
            "request_id": request_id,
            "model_version": version,
            "count": len(ids),
            "predictions": preds,
        }
    )


def encode_lookup_answer(
    request_id: str,
    version: str,
    ids: list[str],
    rows: list[int],
    table: CustomerTable,
    has_value_model: bool,
) -> bytes:
    """:func:`encode_answer` for id lookups answered from the customer table: each
    customer's object is encoded once (the first time it is asked for, kept in
    ``table.answer_json``) and the answer joins those bytes. Same bytes as
    :func:`encode_answer` on the same answers. ``ids`` are spelled as the table holds them
    (each cached object echoes that spelling)."""
    cache = table.answer_json
    assert cache is not None and table.answers is not None
    parts = [cache[i] for i in rows]
    if None in parts:
        todo = [k for k, part in enumerate(parts) if part is None]
        fresh = prediction_dicts(
            [ids[k] for k in todo],
            table.answers.take(np.array([rows[k] for k in todo], dtype=np.intp)),
            version,
            has_value_model,
            table.unseen_of([rows[k] for k in todo]),
        )
        for k, obj in zip(todo, fresh, strict=True):
            parts[k] = cache[rows[k]] = _dumps(obj)
    head = _dumps(
        {"request_id": request_id, "model_version": version, "count": len(rows), "predictions": []}
    )
    return b"".join((head[:-2], b",".join(parts), b"]}"))  # type: ignore[arg-type]


class RequestIds:
    """Request ids: 32 hex digits, a random per-process prefix and a counter (unique
    without a system call per request)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._next = itertools.count().__next__  # atomic under the GIL

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():016x}"


class Scorer:
    """Turns a parsed request into the answer bytes, the log chunk and the metrics."""

    def __init__(self, metrics: ServingMetrics, logger: InferenceLogger | None):
        self.metrics = metrics
        self.logger = logger
        self.request_id = RequestIds()

    def score(
        self,
        bundle: ModelBundle,
        parsed: Any,
        arrow_answer: bool = False,
        as_of: dt.datetime | None = None,
    ) -> bytes:
        """Validate, look up, predict through the fallback chain, log; the JSON answer (an
        Arrow IPC stream with ``arrow_answer``, see :mod:`churn_serving.arrow_body`).

        Id lookups take the customer table's precomputed answers when it has them (the
        same chain, run when the table was loaded); feature records run the models.

        Raises:
            RequestError: 404 / 422 / 503 for requests that cannot be answered.
        """
        n = parsed.n
        schema = bundle.schema if as_of is None else bundle.schema.at(as_of)
        unseen: list[tuple[int, str, str]] = []
        has_features = (
            parsed.columns is not None or parsed.arrow is not None or bool(parsed.features)
        )
        cached_rows: list[int] | None = None  # pure lookups with cached answer objects
        if parsed.arrow is not None:
            num_f, cat_f, unseen = schema.arrow_to_arrays(parsed.arrow)
        elif parsed.columns is not None:
            num_f, cat_f, unseen = schema.columns_to_arrays(parsed.columns, n)
        elif parsed.features:
            num_f, cat_f, unseen = schema.to_arrays(parsed.features, parsed.feature_rows)
        if not parsed.lookup_ids:
            num, cat = num_f, cat_f
            r = bundle.predict_arrays(num, cat)
        else:
            rows, respelled = bundle.find_rows(
                parsed.lookup_ids, parsed.lookup_rows, columnar=parsed.columnar
            )
            idx = rows
            table = bundle.customers
            answers = table.answers
            # one record: a view instead of a copy; more: an index array (a list would be
            # converted again by every take)
            idx = slice(idx[0], idx[0] + 1) if len(idx) == 1 else np.array(idx, dtype=np.intp)
            num_l, cat_l = table.num[idx], table.cat[idx]
            if not has_features:
                num, cat = num_l, cat_l
                r = answers.take(idx) if answers is not None else bundle.predict_arrays(num, cat)
                # the cached answers echo the table's spelling of each id: an id sent in
                # another one (17850.0) is answered by the general encoder, echoed as sent
                if answers is not None and table.answer_json is not None and not respelled:
                    cached_rows = rows
            else:
                num = np.empty((n, len(schema.numeric)), dtype=np.float64)
                cat = np.empty((n, len(schema.categorical)), dtype=object)
                num[parsed.feature_rows] = num_f
                cat[parsed.feature_rows] = cat_f
                num[parsed.lookup_rows] = num_l
                cat[parsed.lookup_rows] = cat_l
                if answers is None:
                    r = bundle.predict_arrays(num, cat)
                else:
                    r = ChainResult.scatter(
                        n,
                        [
                            (parsed.feature_rows, bundle.predict_arrays(num_f, cat_f)),
                            (parsed.lookup_rows, answers.take(idx)),
                        ],
                    )

        per_record: dict[int, dict[str, str]] = {}
        for pos, feature, value in unseen:
            per_record.setdefault(parsed.feature_rows[pos], {})[feature] = value
        if parsed.lookup_ids:  # a looked-up row's new categories, as its record would say
            for k, found in bundle.customers.unseen_of(rows).items():
                at = parsed.lookup_rows[k] if parsed.lookup_rows else k
                per_record[at] = found
                unseen.extend((at, feature, value) for feature, value in found.items())
        version = bundle.version
        ids = parsed.customer_ids
        request_id = self.request_id()
        if arrow_answer:
            body = arrow_body.encode_answer(
                request_id, version, ids, r, bundle.has_value_model, per_record, LEVELS
            )
        elif cached_rows is not None:
            body = encode_lookup_answer(
                request_id, version, ids, cached_rows, bundle.customers, bundle.has_value_model
            )
        else:
            body = encode_answer(request_id, version, ids, r, bundle.has_value_model, per_record)
        self._account(bundle, r, n, unseen)
        if self.logger is not None:
            try:
                if not has_features:
                    is_lookup = np.ones(n, dtype=bool)
                else:
                    is_lookup = np.zeros(n, dtype=bool)
                    if parsed.lookup_rows:
                        is_lookup[parsed.lookup_rows] = True
                self.logger.submit(
                    numeric=schema.numeric_names,
                    categorical=schema.categorical_names,
                    logged_at=time.time(),
                    request_id=request_id,
                    model_version=version,
                    customer_id=ids,
                    unseen_categories=[
                        _dumps(per_record[i]).decode() if i in per_record else None
                        for i in range(n)
                    ]
                    if per_record
                    else None,
                    is_lookup=is_lookup,
                    churn_probability=r.churn_probability,
                    churn_label=r.churn_label,
                    threshold=r.threshold,
                    expected_total_sales=r.expected_total_sales,
                    churn_level=r.churn_level,
                    sales_level=r.sales_level,
                    num=num,
                    cat=cat,
                )
            except Exception:  # the log never fails a request
                log.exception("inference log: could not queue a request")
        return body

    def _account(self, bundle: ModelBundle, r: ChainResult, n: int, unseen: list) -> None:
        m = self.metrics
        ones = int(r.churn_label[0]) if n == 1 else int(np.count_nonzero(r.churn_label))
        if ones:
            m.prediction_children["1"].inc(ones)
        if n - ones:
            m.prediction_children["0"].inc(n - ones)
        if r.churn_uniform is not None and r.sales_uniform is not None:
            m.count_fallbacks("churn_probability", LEVELS[r.churn_uniform], n)
            m.count_fallbacks("expected_total_sales", LEVELS[r.sales_uniform], n)
            if bundle.stats is not None:
                bundle.stats.add_uniform(r.churn_uniform, r.sales_uniform, n)
        else:
            churn_counts = np.bincount(r.churn_level, minlength=len(LEVELS))
            sales_counts = np.bincount(r.sales_level, minlength=len(LEVELS))
            for output, counts in (
                ("churn_probability", churn_counts),
                ("expected_total_sales", sales_counts),
            ):
                for level, c in zip(LEVELS, counts.tolist(), strict=True):
                    if c:
                        m.count_fallbacks(output, level, c)
            if bundle.stats is not None:
                bundle.stats.add(churn_counts, sales_counts, n)
        for _, feature, _ in unseen:
            m.unseen.labels(feature=feature).inc()


def unavailable_reason(manager: ModelManager) -> str | None:
    """Why ``manager`` has no version loaded: the last load error, else the last refusal
    (a deployed version that failed verification), else None (still loading)."""
    problem = manager.last_error or manager.last_refusal or {}
    return problem.get("error")


def no_model_message(manager: ModelManager) -> str:
    """Why nothing can be answered yet."""
    return f"no model loaded: {unavailable_reason(manager) or 'no model version loaded yet'}"


class PredictEndpoint:
    """``POST /predict`` from raw body bytes to (status, JSON bytes)."""

    def __init__(self, manager: ModelManager, scorer: Scorer, settings: ServingSettings):
        self.manager = manager
        self.scorer = scorer
        self.settings = settings

    async def handle(
        self,
        body: bytes,
        content_type: str | bytes | None = None,
        accept: str | bytes | None = None,
        query: str | bytes | None = None,
    ) -> tuple[int, bytes, str]:
        """Answer one request: ``(status, body, media type)``. The body is JSON unless
        ``content_type`` names an Arrow IPC stream; the answer is JSON unless ``accept``
        does (errors are always JSON); ``query`` may hold ``as_of`` (:func:`parse_as_of`).
        Small requests on the event loop, big ones in a worker thread."""
        bundle = self.manager.bundle  # one read: this request uses this version throughout
        if bundle is None:
            return 503, _dumps({"detail": no_model_message(self.manager)}), JSON_MEDIA
        settings = self.settings
        parse = arrow_body.parse if arrow_body.is_arrow(content_type) else _parse
        arrow_answer = arrow_body.is_arrow(accept)
        media = arrow_body.ARROW_STREAM if arrow_answer else JSON_MEDIA
        try:
            as_of = parse_as_of(query)
            if len(body) > THREAD_PARSE_BYTES:
                parsed = await run_in_threadpool(parse, body, settings.max_records)
            else:
                parsed = parse(body, settings.max_records)
            if parsed.n <= settings.inline_max_records:
                return 200, self.scorer.score(bundle, parsed, arrow_answer, as_of), media
            answer = await run_in_threadpool(self.scorer.score, bundle, parsed, arrow_answer, as_of)
            return 200, answer, media
        except RequestError as e:
            return e.status, _dumps(e.body()), JSON_MEDIA


JSON_MEDIA = "application/json"
_CONTENT_TYPES = {
    JSON_MEDIA: (b"content-type", b"application/json"),
    arrow_body.ARROW_STREAM: (b"content-type", arrow_body.ARROW_STREAM.encode()),
}


class PredictASGI:
    """``POST /predict`` as a bare ASGI callable, counted and timed like every request:
    :class:`SidecarApp` sends it there ahead of FastAPI's middleware, router, request and
    response objects (most of the framework's per-request cost for a single record)."""

    def __init__(self, endpoint: PredictEndpoint, metrics: ServingMetrics):
        self.endpoint = endpoint
        self.metrics = metrics
        self.limit = endpoint.settings.max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        status = 500
        try:
            status, content, media = await self._answer(scope, receive)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        _CONTENT_TYPES[media],
                        (b"content-length", b"%d" % len(content)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": content})
        finally:
            self.metrics.observe_request("/predict", "POST", status, time.perf_counter() - start)

    async def _answer(self, scope: Any, receive: Any) -> tuple[int, bytes, str]:
        limit = self.limit
        content_type = accept = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    msg = f"request body of {int(value)} bytes exceeds {limit} bytes"
                    return 413, _dumps({"detail": msg}), JSON_MEDIA
            elif key == b"content-type":
                content_type = value
            elif key == b"accept":
                accept = value
            elif key == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                return 415, _dumps({"detail": _ENCODING_REFUSED % value.decode()}), JSON_MEDIA
        try:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, b'{"detail":"client disconnected"}', JSON_MEDIA
            body = message.get("body", b"")
            if len(body) > limit:
                return 413, _dumps({"detail": f"request body exceeds {limit} bytes"}), JSON_MEDIA
            if message.get("more_body", False):
                chunks = [body]
                size = len(body)
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 400, b'{"detail":"client disconnected"}', JSON_MEDIA
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        msg = f"request body exceeds {limit} bytes"
                        return 413, _dumps({"detail": msg}), JSON_MEDIA
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body = b"".join(chunks)
            return await self.endpoint.handle(body, content_type, accept, scope.get("query_string"))
        except Exception as e:  # a bug, not the client's fault: 500 with a message
            log.exception("POST /predict failed")
            return 500, _dumps({"detail": f"internal error: {type(e).__name__}: {e}"}), JSON_MEDIA


class SidecarApp(FastAPI):
    """The FastAPI app with ``POST /predict`` answered by :class:`PredictASGI` before the
    framework sees it (the route stays in the OpenAPI document); everything else, lifespan
    included, goes through FastAPI as usual."""

    predict_asgi: PredictASGI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        predict = self.predict_asgi
        if (
            predict is not None
            and scope["type"] == "http"
            and scope["path"] == "/predict"
            and scope["method"] == "POST"
        ):
            await predict(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# ------------------------------------------------------------------------------ app


def serve_dataset(
    name: str,
    storage: Any,
    settings: ServingSettings,
    *,
    metrics: ServingMetrics | None = None,
    aliases: dict[str, str] | None = None,
    background: bool = True,
    default: bool = False,
) -> ServedDataset:
    """One data set's serving state: model manager (hot reload), scorer, ``POST /predict``
    endpoint and inference log on its own storage; its own metrics unless given."""
    metrics = metrics or ServingMetrics(process=False)
    logger = (
        InferenceLogger(
            storage,
            metrics,
            flush_records=settings.log_flush_records,
            flush_seconds=settings.log_flush_seconds,
            max_buffer_records=settings.log_max_buffer_records,
        )
        if settings.log_enabled
        else None
    )
    manager = ModelManager(
        storage,
        poll_seconds=settings.poll_seconds,
        slack=settings.range_slack,
        metrics=metrics,
        freeze_gc=background,
        aliases=aliases,
        batch_threads=settings.batch_threads,
        precompute_lookups=settings.precompute_lookups,
    )
    endpoint = PredictEndpoint(manager, Scorer(metrics, logger), settings)
    return ServedDataset(name, manager, endpoint, logger, metrics, default=default)


def create_app(
    settings: ServingSettings | None = None,
    storage: Any = None,
    *,
    background: bool = True,
    aliases: dict[str, str] | None = None,
    dataset: str | None = None,
    root: Any = None,
) -> FastAPI:
    """The sidecar app. ``storage`` is the default data set's storage (default: from
    ``ChurnSettings``: ``<CHURN_STORAGE_URL>/<data set>``, with the data set's source column
    names as ``aliases`` of the features); ``dataset`` its name (default: from
    ``CHURN_DATASET``). The other data sets are served from ``root``'s sub-folders (default:
    the storage root when ``storage`` is not given; none otherwise), see
    :mod:`churn_serving.datasets`. With ``background=False`` neither the poll threads nor the
    log writers start (tests drive ``app.state.manager`` directly)."""
    settings = settings or ServingSettings()
    if storage is None:
        storage, aliases = dataset_storage(), dataset_aliases()
        if root is None:
            root = storage_root()
    if dataset is None:
        dataset = default_dataset_name()
    metrics = ServingMetrics()
    served = serve_dataset(
        dataset,
        storage,
        settings,
        metrics=metrics,
        aliases=aliases,
        background=background,
        default=True,
    )
    manager, logger, endpoint = served.manager, served.logger, served.endpoint
    scorer = endpoint.scorer

    def make(name: str) -> ServedDataset:
        return serve_dataset(
            name,
            root.child(name),
            settings,
            aliases=dataset_aliases(name),
            background=background,
        )

    registry = DatasetRegistry(
        served,
        root=root,
        make=make if root is not None else None,
        only=parse_names(settings.datasets),
        poll_seconds=settings.poll_seconds,
    )
    started = time.monotonic()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if background:
            await run_in_threadpool(registry.start)
        try:
            yield
        finally:
            await run_in_threadpool(registry.stop)

    app = SidecarApp(
        title="churn serving sidecar",
        version="1.0",
        description=(
            "Churn probability and expected total sales from the deployed model version, "
            "with hot reload, a fallback chain and an inference log."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.manager = manager
    app.state.metrics = metrics
    app.state.logger = logger
    app.state.scorer = scorer
    app.state.registry = registry
    DatasetMetricsCollector(registry.other_metrics, metrics.registry)
    # POST /predict is answered ahead of FastAPI (and counted there); metrics wrap the rest.
    app.predict_asgi = PredictASGI(endpoint, metrics)
    app.add_middleware(
        MetricsMiddleware,
        metrics=metrics,
        endpoints=ENDPOINTS,
        dataset_metrics=registry.metrics_of,
    )

    def health_answer(d_manager: ModelManager, d_logger: InferenceLogger | None) -> dict:
        return {
            "status": "ok",
            "uptime_seconds": round(time.monotonic() - started, 3),
            "pid": os.getpid(),
            **d_manager.health(),
            "inference_log": d_logger.status() if d_logger is not None else {"enabled": False},
            "json": JSON_LIBRARY,
        }

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, Any]:
        """Liveness: always 200 while the process runs; the state of the loaded model."""
        return health_answer(manager, logger)

    @app.get(
        "/ready",
        tags=["operations"],
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "no model loaded"}},
    )
    async def ready() -> Any:
        """Readiness: 200 when a model version is loaded, 503 otherwise."""
        return ready_answer(manager)

    predict_body = {
        "parameters": [
            {
                "name": "as_of",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "examples": ["2026-12-01", "today"]},
                "description": "the day dates sent as dates (a last login, a sign-up) count "
                "to, in place of the version's dates_as_of: YYYY-MM-DD, an ISO date-time or "
                "'today' (UTC)",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                arrow_body.ARROW_STREAM: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "the columnar body as an Arrow IPC stream: one row "
                        "per record, a column per feature (feature or source column name) "
                        "and an optional customer_id column; only customer_id: id lookups",
                    }
                },
            },
        },
    }

    @app.post(
        "/predict",
        tags=["predict"],
        response_model=PredictResponse,
        openapi_extra=predict_body,
        responses={
            404: {"model": ErrorResponse, "description": "unknown customer_id"},
            413: {"model": ErrorResponse, "description": "too many records / body too large"},
            422: {"model": ErrorResponse, "description": "malformed JSON or invalid records"},
            503: {"model": MessageResponse, "description": "no model loaded"},
        },
    )
    async def predict(request: Request) -> Response:
        """Churn probability, churn label and expected total sales for 1..max_records
        records, each ``{"customer_id": ...}`` or ``{"features": {...}}``; or, columnar,
        ``{"columns": {"<feature>": [value, ...], ...}}`` (one array per feature, an optional
        ``customer_id`` array; only ``customer_id``: id lookups); or the columns as an Arrow
        IPC stream (``Content-Type: application/vnd.apache.arrow.stream``; with that
        ``Accept`` the answer is Arrow too).

        (Served by :class:`PredictEndpoint` ahead of the router; this route documents it.)"""
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        status, content, media = await endpoint.handle(
            body,
            request.headers.get("content-type"),
            request.headers.get("accept"),
            request.url.query,
        )
        return Response(content, status_code=status, media_type=media)

    @app.get(
        "/predict/schema",
        tags=["predict"],
        responses={503: {"model": MessageResponse, "description": "no model loaded"}},
    )
    async def predict_schema() -> Any:
        """The deployed feature schema: features, types, categories and accepted ranges."""
        return schema_answer(manager, settings)

    @app.get(
        "/model-info",
        tags=["operations"],
        responses={503: {"model": MessageResponse, "description": "no model loaded"}},
    )
    async def model_info() -> Any:
        """The loaded version: models, candidates, the runtime answering each, thresholds,
        metrics, rules."""
        return model_info_answer(manager)

    # ------------------------------------------------- every served data set by name

    def not_served(name: str) -> JSONResponse:
        return JSONResponse(registry.not_served(name), status_code=404)

    not_served_doc = {404: {"model": NotServedResponse, "description": "data set not served"}}

    @app.get("/datasets", tags=["datasets"], response_model=DatasetsResponse)
    async def datasets() -> Any:
        """The served data sets (the default first): served and deployed version, state."""
        return {"default": registry.default.name, "datasets": registry.describe()}

    @app.post(
        "/datasets/{name}/predict",
        tags=["datasets"],
        response_model=PredictResponse,
        openapi_extra=predict_body,
        description="`POST /predict` of data set `name`. Its records carry that data set's "
        "features, as `GET /datasets/{name}/predict/schema` lists them: the request schema "
        "shown here is the default data set's.",
        responses={
            404: {
                "model": NotServedResponse | ErrorResponse,
                "description": "data set not served (NotServedResponse) or an unknown "
                "customer_id (ErrorResponse)",
            },
            413: {"model": ErrorResponse, "description": "too many records / body too large"},
            422: {"model": ErrorResponse, "description": "malformed JSON or invalid records"},
            503: {"model": MessageResponse, "description": "no model loaded"},
        },
    )
    async def dataset_predict(name: str, request: Request) -> Response:
        """``POST /predict`` of data set ``name`` (404 also for an unknown customer_id)."""
        d = registry.get(name)
        if d is None:
            return not_served(name)
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        status, content, media = await d.endpoint.handle(
            body,
            request.headers.get("content-type"),
            request.headers.get("accept"),
            request.url.query,
        )
        return Response(content, status_code=status, media_type=media)

    @app.get(
        "/datasets/{name}/predict/schema",
        tags=["datasets"],
        responses={
            **not_served_doc,
            503: {"model": MessageResponse, "description": "no model loaded"},
        },
    )
    async def dataset_predict_schema(name: str) -> Any:
        """``GET /predict/schema`` of data set ``name``."""
        d = registry.get(name)
        return not_served(name) if d is None else schema_answer(d.manager, settings)

    @app.get(
        "/datasets/{name}/model-info",
        tags=["datasets"],
        responses={
            **not_served_doc,
            503: {"model": MessageResponse, "description": "no model loaded"},
        },
    )
    async def dataset_model_info(name: str) -> Any:
        """``GET /model-info`` of data set ``name``."""
        d = registry.get(name)
        return not_served(name) if d is None else model_info_answer(d.manager)

    @app.get("/datasets/{name}/health", tags=["datasets"], responses=not_served_doc)
    async def dataset_health(name: str) -> Any:
        """``GET /health`` of data set ``name``: its loaded version, last reload and error,
        customer table and inference log."""
        d = registry.get(name)
        return not_served(name) if d is None else health_answer(d.manager, d.logger)

    @app.get(
        "/datasets/{name}/ready",
        tags=["datasets"],
        response_model=ReadyResponse,
        responses={
            **not_served_doc,
            503: {"model": ReadyResponse, "description": "no model loaded"},
        },
    )
    async def dataset_ready(name: str) -> Any:
        """``GET /ready`` of data set ``name``."""
        d = registry.get(name)
        return not_served(name) if d is None else ready_answer(d.manager)

    @app.api_route(
        "/datasets/{path:path}",
        methods=["GET", "POST"],
        include_in_schema=False,
        status_code=404,
    )
    async def dataset_unknown_route(path: str, request: Request) -> JSONResponse:
        """404 for any other path under /datasets/ (the served data sets named); 405 for a
        served data set's route asked with the other method."""
        name, _, rest = path.partition("/")
        routes = {"predict": "POST", "predict/schema": "GET", "model-info": "GET", "ready": "GET"}
        if name and rest in routes and registry.get(name) is not None:
            allowed = routes[rest]
            return JSONResponse(
                {"detail": f"/datasets/{name}/{rest} takes {allowed}, not {request.method}"},
                status_code=405,
                headers={"Allow": allowed},
            )
        if name and rest in routes:
            body = registry.not_served(name)
        else:
            served = registry.names()
            body = {
                "detail": f"no such route: /datasets/{echo(path)}; served data sets: "
                f"{', '.join(served)} (routes: /datasets/{{name}}/predict, /predict/schema, "
                "/model-info, /ready, /health)",
                "served": served,
            }
        return JSONResponse(body, status_code=404)

    @app.get("/fallback-stats", tags=["operations"])
    async def fallback_stats() -> dict[str, Any]:
        """Answers by output and fallback level since start, and model errors by role."""
        b = manager.bundle
        return {"version": b.version if b else None, **manager.stats.snapshot()}

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus exposition format."""
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    if settings.admin_enabled:
        token = settings.admin_token or ""

        @app.post(
            "/admin/reload",
            tags=["admin"],
            response_model=ReloadResponse,
            openapi_extra={"security": [{"bearerAuth": []}]},
            responses={
                401: {"model": MessageResponse, "description": "missing or malformed token"},
                403: {"model": MessageResponse, "description": "wrong token"},
                409: {"model": ReloadResponse, "description": "refused (integrity)"},
                503: {"model": ReloadResponse, "description": "reload failed"},
            },
        )
        async def admin_reload(request: Request) -> Any:
            """Force a reload of the version ``current.json`` names (bearer token)."""
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return JSONResponse(
                    {"detail": "missing or malformed Authorization: Bearer <token> header"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                return JSONResponse({"detail": "wrong admin token"}, status_code=403)
            result = await run_in_threadpool(manager.reload, True, "admin")
            status = {"refused": 409, "failed": 503}.get(result["status"], 200)
            return JSONResponse(_jsonable(result), status_code=status)

    def custom_openapi() -> dict[str, Any]:
        b = manager.bundle
        key = b.version if b else None
        if app.openapi_schema and app.state.openapi_key == key:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(request_schemas(b, settings.max_records))
        if settings.admin_enabled:
            doc["components"]["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer"}
            }
        app.openapi_schema = doc
        app.state.openapi_key = key
        return doc

    app.state.openapi_key = None
    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


def ready_answer(manager: ModelManager) -> Any:
    """``GET /ready``: 200 with the version when one is loaded, else 503 with the reason."""
    b = manager.bundle
    if b is None:
        reason = unavailable_reason(manager) or "loading"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)
    return {"ready": True, "version": b.version}


def schema_answer(manager: ModelManager, settings: ServingSettings) -> Any:
    """``GET /predict/schema``: the loaded version's feature schema, or 503."""
    b = manager.bundle
    if b is None:
        return JSONResponse({"detail": no_model_message(manager)}, status_code=503)
    return {
        "version": b.version,
        "max_records": settings.max_records,
        "request": {
            "body": '{"records": [record, ...]} or, columnar, {"columns": {name: [value, '
            "...], ...}}",
            "record": '{"customer_id": "..."} or {"features": {...}} (optionally with a '
            "customer_id to echo)",
            "columns": "one array per feature (feature or source column name), one value "
            "per record, every array of the same length; an optional customer_id column is "
            "echoed (null allowed); a body with only a customer_id column looks the "
            "customers up. Validated column by column: the cheaper body for large batches",
            "arrow": "Content-Type: application/vnd.apache.arrow.stream: the columnar body "
            "as an Arrow IPC stream, one row per record (numeric features: integer, floating "
            "or boolean columns; categorical: string columns); Accept: "
            "application/vnd.apache.arrow.stream answers in Arrow too (columns customer_id, "
            "churn_probability, churn_label, threshold, expected_total_sales, churn_level, "
            "sales_level, unseen_categories)",
            "answer": "the same for every body: predictions in record order",
            "unknown_customer_id": "404 for the whole request: detail describes the first 100 "
            "unknown ids, unknown_positions lists the position of every one",
        },
        **b.schema.describe(),
    }


def model_info_answer(manager: ModelManager) -> Any:
    """``GET /model-info``: the loaded version's description, or 503."""
    b = manager.bundle
    if b is None:
        return JSONResponse({"detail": no_model_message(manager)}, status_code=503)
    return b.describe()


def request_schemas(bundle: ModelBundle | None, max_records: int = 10_000) -> dict[str, Any]:
    """JSON Schemas of the /predict body for the loaded version (features generic if none)."""
    features = bundle.schema.json_schema() if bundle else {"type": "object"}
    columns = (
        bundle.schema.columns_json_schema(max_records)
        if bundle
        else {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}}
    )
    return {
        "Features": features,
        "FeatureColumns": columns,
        "CustomerRecord": {
            "type": "object",
            "properties": {"customer_id": {"type": ["string", "integer"]}},
            "required": ["customer_id"],
            "additionalProperties": False,
        },
        "FeatureRecord": {
            "type": "object",
            "properties": {
                "customer_id": {"type": ["string", "integer"]},
                "features": {"$ref": "#/components/schemas/Features"},
            },
            "required": ["features"],
            "additionalProperties": False,
        },
        "PredictRequest": {
            "oneOf": [
                {"$ref": "#/components/schemas/RecordsRequest"},
                {"$ref": "#/components/schemas/ColumnarRequest"},
            ]
        },
        "CustomerIdColumns": {
            "type": "object",
            "description": "id lookups, columnar",
            "properties": {
                "customer_id": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_records,
                    "items": {"type": ["string", "integer"]},
                }
            },
            "required": ["customer_id"],
            "additionalProperties": False,
        },
        "ColumnarRequest": {
            "type": "object",
            "properties": {
                "columns": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/FeatureColumns"},
                        {"$ref": "#/components/schemas/CustomerIdColumns"},
                    ]
                }
            },
            "required": ["columns"],
            "additionalProperties": False,
        },
        "RecordsRequest": {
            "type": "object",
            "properties": {
                "records": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_records,
                    "items": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/CustomerRecord"},
                            {"$ref": "#/components/schemas/FeatureRecord"},
                        ]
                    },
                }
            },
            "required": ["records"],
            "additionalProperties": False,
        },
    }


#: Why a compressed request body is refused (it was read as text: "not valid UTF-8").
_ENCODING_REFUSED = (
    "Content-Encoding %r is not accepted: send the body uncompressed (an Arrow stream body "
    "is the compact one for large batches)"
)


async def _read_body(request: Request, limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(415, _ENCODING_REFUSED % encoding)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body of {length} bytes exceeds {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def dataset_aliases(name: str | None = None) -> dict[str, str]:
    """Source column name → feature name of the data set's customer attributes (snapshot
    data sets train on these attributes under their configured names); ``name`` defaults to
    ``CHURN_DATASET``."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import ChurnSettings

    try:
        cfg = load_dataset_config(name or ChurnSettings().dataset)
    except Exception as e:  # requests by feature name still work
        log.warning("data set config unreadable, source column names not accepted: %s", e)
        return {}
    if cfg.customers is None:
        return {}
    columns = [*cfg.customers.attributes, cfg.customers.signup_date]
    return {a.raw: a.name for a in columns if a is not None and a.raw != a.name}


def dataset_storage() -> Any:
    """The data set's storage from ``ChurnSettings`` (``<storage root>/<data set>``)."""
    from churn_assets.lib.settings import ChurnSettings, join_url
    from churn_assets.lib.storage import Storage

    s = ChurnSettings()
    url = join_url(s.resolved_storage_url, config_name(s.dataset))
    return Storage(url, s.storage_options(url))


def storage_root() -> Any:
    """The storage root from ``ChurnSettings``: every data set's storage is a sub-folder."""
    from churn_assets.lib.settings import ChurnSettings
    from churn_assets.lib.storage import Storage

    s = ChurnSettings()
    url = s.resolved_storage_url
    return Storage(url, s.storage_options(url))


def default_dataset_name() -> str:
    """The default data set's name (``CHURN_DATASET``'s config name; the setting itself
    when its config does not load)."""
    from churn_assets.lib.settings import ChurnSettings

    raw = ChurnSettings().dataset
    try:
        return config_name(raw)
    except Exception:
        return raw
