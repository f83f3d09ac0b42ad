"""The inference log: requests and predictions appended to storage as Parquet, in batches.

Files: ``<storage>/<data set>/inference_log/date=YYYY-MM-DD/<HHMMSS>-<uuid>.parquet`` (UTC
date of the requests), one row per predicted record: ``logged_at``, ``request_id``,
``record``, ``customer_id``, ``source`` (lookup / features), ``model_version``,
``churn_probability``, ``churn_label``, ``threshold``, ``expected_total_sales``,
``churn_level``, ``sales_level`` (which fallback level answered), ``unseen_categories``
(JSON or null), then the feature values the model saw (the deployed feature columns; a
feature whose name clashes with one of these columns gets a ``feature_`` prefix).

A request only appends its arrays to per-column lists under a lock (a few microseconds);
a background thread writes the buffer every ``flush_records`` records or ``flush_seconds``
seconds, and once more at shutdown. Because the per-request work is already columnar, a
flush is a handful of C-level concatenations plus the Parquet write, so it does not hold
the GIL long enough to stall the event loop. A failed write keeps the records (counted in
``churn_serving_inference_log_flush_failures_total``) and is retried with back-off; the
buffer is bounded by ``max_buffer_records``: beyond it the oldest batches are dropped and
counted (``churn_serving_inference_log_records_total{result="dropped"}``). Nothing here
blocks or fails a request.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from typing import Any

import numpy as np

log = logging.getLogger("churn_serving.inference_log")

PREFIX = "inference_log"
#: Names of the fallback levels (``churn_level`` / ``sales_level`` codes index this).
LEVEL_NAMES = ("champion", "fallback_model", "business_rules", "base_rate", "no_value_model")
META_COLUMNS = (
    "logged_at",
    "request_id",
    "record",
    "customer_id",
    "source",
    "model_version",
    "churn_probability",
    "churn_label",
    "threshold",
    "expected_total_sales",
    "churn_level",
    "sales_level",
    "unseen_categories",
)
_ARRAYS = (
    "is_lookup",
    "churn_probability",
    "churn_label",
    "threshold",
    "expected_total_sales",
    "churn_level",
    "sales_level",
    "num",
    "cat",
)
#: A batch holds at most this many records and this many requests; the bounded buffer drops
#: whole batches. Each batch costs the writer a few dozen Arrow calls whatever its size:
#: under load (the GIL shared with the request threads) 1,000-record batches kept about
#: 65,000 records/s of 1,000-id lookups, 10,000-record batches about three times as many.
#: The request bound keeps a batch of single-record requests small: turning 10,000 of them
#: into a table holds the GIL long enough to triple the p99 of single records.
BATCH_RECORDS = 10_000
BATCH_REQUESTS = 1_000
#: Dropped records are logged at most this often (the metric counts every one).
DROPPED_SAID_EVERY_SECONDS = 60.0


def _feature_name(name: str) -> str:
    return f"feature_{name}" if name in META_COLUMNS else name


class LogBatch:
    """Columns of consecutive requests with the same feature layout."""

    def __init__(self, numeric: tuple[str, ...], categorical: tuple[str, ...]):
        self.numeric = numeric
        self.categorical = categorical
        self.n = 0
        self.created = time.monotonic()
        self.logged_at: list[float] = []
        self.request_id: list[str] = []
        self.model_version: list[str] = []
        self.counts: list[int] = []
        self.customer_id: list[str | None] = []
        self.unseen: list[tuple[int, list[str | None]]] = []
        self.arrays: dict[str, list[np.ndarray]] = {k: [] for k in _ARRAYS}
        self.frame: Any = None  # set once the batch is sealed and compacted
        self.sealed = False

    def add(
        self,
        *,
        logged_at: float,
        request_id: str,
        model_version: str,
        customer_id: list[str | None],
        unseen_categories: list[str | None] | None,
        **arrays: np.ndarray,
    ) -> None:
        """Append one request (``arrays``: one entry per name in ``_ARRAYS``)."""
        n = len(customer_id)
        if unseen_categories is not None:
            self.unseen.append((self.n, unseen_categories))
        self.logged_at.append(logged_at)
        self.request_id.append(request_id)
        self.model_version.append(model_version)
        self.counts.append(n)
        self.customer_id.extend(customer_id)
        for k, lst in self.arrays.items():
            lst.append(arrays[k])
        self.n += n

    def to_frame(self) -> Any:
        """The batch as a pyarrow table (one row per record), built column by column from
        the requests' concatenated arrays."""
        if self.frame is not None:
            return self.frame
        import pyarrow as pa

        counts = self.counts
        a = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self.arrays.items()}
        per_request = np.repeat(np.arange(len(counts), dtype=np.uint32), counts)
        micros = np.repeat(np.asarray(self.logged_at) * 1e6, counts).astype(np.int64)

        def named(values: list[str], codes: np.ndarray) -> pa.Array:
            # built under the GIL from an object array: a compute call (take) would release
            # and re-acquire it, and under load each re-acquisition waits behind the request
            # threads
            return pa.array(
                np.asarray(values, dtype=object)[codes.astype(np.intp)], type=pa.string()
            )

        unseen: list[str | None] = [None] * self.n
        for offset, values in self.unseen:
            unseen[offset : offset + len(values)] = values
        starts = np.repeat(np.cumsum([0, *counts[:-1]]), counts)
        columns: dict[str, Any] = {
            "logged_at": pa.array(micros, type=pa.timestamp("us", tz="UTC")),
            "request_id": named(self.request_id, per_request),
            "record": pa.array((np.arange(self.n) - starts).astype(np.int32)),
            "customer_id": pa.array(self.customer_id, type=pa.string()),
            "source": named(["features", "lookup"], a["is_lookup"]),
            "model_version": named(self.model_version, per_request),
            "churn_probability": pa.array(a["churn_probability"].astype(np.float64)),
            "churn_label": pa.array(a["churn_label"].astype(np.int8)),
            "threshold": pa.array(a["threshold"].astype(np.float64)),
            "expected_total_sales": pa.array(a["expected_total_sales"].astype(np.float64)),
            "churn_level": named(list(LEVEL_NAMES), a["churn_level"]),
            "sales_level": named(list(LEVEL_NAMES), a["sales_level"]),
            "unseen_categories": pa.array(unseen, type=pa.string()),
        }
        num = np.asarray(a["num"], dtype=np.float64).reshape(self.n, len(self.numeric))
        cat = a["cat"].reshape(self.n, len(self.categorical))
        by_column = np.ascontiguousarray(num.T)  # one transposing copy, then contiguous rows
        for i, c in enumerate(self.numeric):
            columns[_feature_name(c)] = pa.array(by_column[i])
        for j, c in enumerate(self.categorical):
            columns[_feature_name(c)] = pa.array(cat[:, j], type=pa.string(), from_pandas=True)
        self.frame = pa.table(columns)
        self.arrays = {}  # the table holds the data now
        return self.frame


def _parquet_options(frame: Any) -> dict[str, Any]:
    """zstd level 1; dictionary encoding only for the string columns with few distinct
    values (categories, levels, versions): trying it on floats and ids costs a fallback."""
    import pyarrow as pa

    strings = [
        f.name
        for f in frame.schema
        if pa.types.is_string(f.type) and f.name not in ("customer_id", "unseen_categories")
    ]
    return {"compression": "zstd", "compression_level": 1, "use_dictionary": strings}


def batches_to_frame(batches: list[LogBatch]) -> Any:
    """One pyarrow table of several batches (different feature layouts are aligned)."""
    import pyarrow as pa

    frames = [b.to_frame() for b in batches if b.n]
    if len(frames) == 1:
        return frames[0]
    return pa.concat_tables(frames, promote_options="permissive")


class InferenceLogger:
    """Buffers predictions and writes them to storage from a background thread."""

    def __init__(
        self,
        storage: Any,
        metrics: Any = None,
        *,
        flush_records: int = 10_000,
        flush_seconds: float = 10.0,
        max_buffer_records: int = 200_000,
    ):
        self.storage = storage
        self.metrics = metrics
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.max_buffer_records = max_buffer_records
        self._dropped_said_at = -math.inf  # when dropped records were last logged
        # Whole batches are dropped when the buffer is full: keep them small against the bound.
        self.batch_records = max(1, min(BATCH_RECORDS, max_buffer_records // 20))
        self._batches: deque[LogBatch] = deque()
        self._count = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._failures_in_a_row = 0
        self.files_written = 0
        self.records_written = 0
        self.records_dropped = 0
        self.flush_failures = 0
        self.last_error: str | None = None
        self.last_file: str | None = None

    # ---------------------------------------------------------------- request side

    def submit(
        self,
        *,
        numeric: tuple[str, ...],
        categorical: tuple[str, ...],
        **record: Any,
    ) -> None:
        """Queue one request's records (keyword arguments of :meth:`LogBatch.add`).

        O(1) list appends under a lock; never raises, never touches storage."""
        try:
            n = len(record["customer_id"])
            with self._lock:
                batch = self._batches[-1] if self._batches else None
                if (
                    batch is None
                    or batch.numeric != numeric
                    or batch.categorical != categorical
                    or batch.n >= self.batch_records
                    or len(batch.counts) >= BATCH_REQUESTS
                ):
                    if batch is not None:
                        batch.sealed = True  # no more appends: the writer may compact it
                    batch = LogBatch(numeric, categorical)
                    self._batches.append(batch)
                batch.add(**record)
                self._count += n
                dropped = self._trim_locked()
                count = self._count
            self._after_change(dropped)
            if count >= self.flush_records:
                self._wake.set()
        except Exception:  # pragma: no cover - logging must never fail a request
            log.exception("inference log: could not queue records")

    def _trim_locked(self) -> int:
        dropped = 0
        while self._count > self.max_buffer_records and self._batches:
            old = self._batches.popleft()
            self._count -= old.n
            dropped += old.n
        return dropped

    def _after_change(self, dropped: int) -> None:
        if dropped:
            self.records_dropped += dropped
            if self.metrics is not None:
                self.metrics.log_records.labels(result="dropped").inc(dropped)
            now = time.monotonic()
            if now - self._dropped_said_at >= DROPPED_SAID_EVERY_SECONDS:
                self._dropped_said_at = now
                log.warning(
                    "inference log: %d record(s) dropped (%d so far): the buffer holds at "
                    "most %d records (CHURN_SERVING_LOG_MAX_BUFFER_RECORDS) and they could "
                    "not be written in time; see the log's write errors",
                    dropped,
                    self.records_dropped,
                    self.max_buffer_records,
                )
        if self.metrics is not None:
            self.metrics.log_buffered.set(self._count)

    # ------------------------------------------------------------------- writer side

    def start(self) -> None:
        """Start the background writer."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="churn-inference-log", daemon=True
            )
            self._thread.start()

    def _due(self) -> bool:
        with self._lock:
            if not self._count or time.monotonic() < self._retry_at:
                return False
            if self._count >= self.flush_records:
                return True
            return time.monotonic() - self._batches[0].created >= self.flush_seconds

    def _run(self) -> None:
        tick = max(0.05, min(0.25, self.flush_seconds / 4))
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            self._compact()
            if self._due():
                self.flush()

    def _compact(self) -> None:
        """Turn sealed batches into Arrow tables one at a time, yielding the GIL in between,
        so that a flush finds most of its work done and never stalls requests for long."""
        with self._lock:
            todo = [b for b in self._batches if b.sealed and b.frame is None]
        for batch in todo:
            if self._stop.is_set():
                return
            try:
                batch.to_frame()
            except Exception:  # left for flush(), which reports failures
                log.exception("inference log: could not compact a batch")
                return
            time.sleep(0.001)

    def flush(self) -> int:
        """Write everything buffered now; returns the records written (0 on failure)."""
        with self._flush_lock:
            with self._lock:
                batches = list(self._batches)
                self._batches.clear()
                count = self._count
                self._count = 0
            if not count:
                return 0
            try:
                written = self._write(batches)
            except Exception as e:
                self.flush_failures += 1
                self._failures_in_a_row += 1
                self.last_error = f"{type(e).__name__}: {e}"
                self._retry_at = time.monotonic() + min(30.0, 0.25 * 2**self._failures_in_a_row)
                log.warning("inference log: write failed (%s); %d records kept", e, count)
                if self.metrics is not None:
                    self.metrics.log_flush_failures.inc()
                with self._lock:  # put them back in front, still bounded
                    self._batches.extendleft(reversed(batches))
                    self._count += count
                    dropped = self._trim_locked()
                self._after_change(dropped)
                return 0
            self._failures_in_a_row = 0
            self._retry_at = 0.0
            self.last_error = None  # recovered: flush_failures keeps the count
            self.records_written += written
            if self.metrics is not None:
                self.metrics.log_records.labels(result="written").inc(written)
                self.metrics.log_buffered.set(self._count)
            return written

    def _write(self, batches: list[LogBatch]) -> int:
        import pyarrow as pa
        import pyarrow.compute as pc

        frame = batches_to_frame(batches)
        now = dt.datetime.now(dt.UTC)
        dates = pc.cast(frame.column("logged_at"), pa.date32())
        days = sorted(set(pc.unique(dates).to_pylist()))
        written = 0
        for day in days:
            part = (
                frame.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
                if len(days) > 1
                else frame
            )
            name = f"{now.strftime('%H%M%S')}-{uuid.uuid4().hex}.parquet"
            rel = f"{PREFIX}/date={day.isoformat()}/{name}"
            self._write_one(rel, part)
            self.files_written += 1
            self.last_file = self.storage.url(rel)
            written += part.num_rows
        return written

    def _write_one(self, rel: str, frame: Any) -> None:
        """Local storage: Arrow writes the file itself (it releases the GIL) to a temporary
        name that is then renamed; elsewhere (S3) one PUT of the encoded bytes."""
        import pyarrow.parquet as pq

        if not getattr(self.storage, "is_local", False):
            buf = io.BytesIO()
            pq.write_table(frame, buf, **_parquet_options(frame))
            self.storage.write_bytes(rel, buf.getvalue())
            return
        path = self.storage.url(rel).removeprefix("file://")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            pq.write_table(frame, tmp, **_parquet_options(frame))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and flush what is left (one attempt)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._retry_at = 0.0
        self.flush()

    def status(self) -> dict[str, Any]:
        """JSON-able state for /health."""
        return {
            "buffered_records": self._count,
            "records_written": self.records_written,
            "records_dropped": self.records_dropped,
            "files_written": self.files_written,
            "flush_failures": self.flush_failures,
            "last_error": self.last_error,
            "last_file": self.last_file,
            "flush_records": self.flush_records,
            "flush_seconds": self.flush_seconds,
            "max_buffer_records": self.max_buffer_records,
        }
