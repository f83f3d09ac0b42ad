"""``POST /predict`` in Apache Arrow: a binary columnar request body and answer.

For batch clients (pandas, polars, Spark, DuckDB all write Arrow): the request is an Arrow
IPC stream (``Content-Type: application/vnd.apache.arrow.stream``) with one row per record
and the columns of the JSON columnar body: every deployed feature (by feature or source
column name) and optionally ``customer_id``; only ``customer_id`` means id lookups. Numbers
arrive as machine floats and categories as Arrow strings, so nothing is parsed from text,
and the same validation rules apply column by column.

With ``Accept: application/vnd.apache.arrow.stream`` the answer is an Arrow IPC stream too:
one row per record, in request order (see :func:`encode_answer`). Errors stay JSON whatever
the request's format.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from churn_serving.schema import (
    ParsedRequest,
    RequestError,
    _error,
    _too_many,
    columnar_request,
    validation_error,
)

#: The media type of an Arrow IPC stream (request body and answer).
ARROW_STREAM = "application/vnd.apache.arrow.stream"
_ARROW_STREAM_BYTES = ARROW_STREAM.encode()
#: Answer columns, in order.
ANSWER_COLUMNS = (
    "customer_id",
    "churn_probability",
    "churn_label",
    "threshold",
    "expected_total_sales",
    "churn_level",
    "sales_level",
    "unseen_categories",
)


def is_arrow(media_type: str | bytes | None) -> bool:
    """Whether a ``Content-Type`` / ``Accept`` header names the Arrow IPC stream format."""
    if not media_type:
        return False
    if isinstance(media_type, bytes):  # ASGI headers: no decoding on the request path
        return _ARROW_STREAM_BYTES in media_type.lower()
    return ARROW_STREAM in media_type.lower()


def parse(body: bytes, max_records: int) -> ParsedRequest:
    """An Arrow IPC stream body as a :class:`ParsedRequest` (feature values not checked
    yet: :meth:`FeatureSchema.arrow_to_arrays` does that).

    Raises:
        RequestError: 422 for bytes that are not an Arrow IPC stream, duplicate or empty
            columns, no rows or a bad ``customer_id`` column; 413 for too many rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not body:
        raise validation_error(
            [_error(["body"], "missing", "an Arrow IPC stream request body is required")]
        )
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise RequestError(
            422,
            [
                {
                    "type": "arrow_invalid",
                    "loc": ["body"],
                    "msg": f"not a readable Arrow IPC stream ({ARROW_STREAM}): {e}",
                }
            ],
        ) from None
    names = table.column_names
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise validation_error(
            [
                _error(["body", "columns", c], "duplicate", f"column {c!r} appears twice", c)
                for c in dupes
            ]
        )
    if not names:
        raise validation_error(
            [_error(["body", "columns"], "too_short", "at least one column is required")]
        )
    n = table.num_rows
    if n > max_records:
        raise _too_many(n, max_records)
    if n == 0:
        raise validation_error(
            [_error(["body", "columns"], "too_short", "at least one record is required")]
        )
    features = [c for c in names if c != "customer_id"]
    ids: list[str | None] = [None] * n
    if "customer_id" in names:
        col = table.column("customer_id")
        t = col.type
        if pa.types.is_dictionary(t):
            col = pc.cast(col, t.value_type)
            t = col.type
        if pa.types.is_integer(t):
            col = pc.cast(col, pa.string())
        elif not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise validation_error(
                [
                    _error(
                        ["body", "columns", "customer_id"],
                        "wrong_type",
                        f"customer_id must be a string or integer column, got Arrow type {t}",
                        "customer_id",
                    )
                ]
            )
        if col.null_count and not features:
            rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
            raise validation_error(
                [
                    _error(
                        ["body", "columns", "customer_id", int(r)],
                        "wrong_type",
                        "customer_id must be a string or an integer, got null",
                        "customer_id",
                    )
                    for r in rows[:100]
                ]
            )
        ids = col.to_pylist()
    return columnar_request(ids, arrow=table.select(features) if features else None)


def encode_answer(
    request_id: str,
    version: str,
    ids: list[str | None],
    r: Any,
    has_value_model: bool,
    per_record: dict[int, dict[str, str]],
    levels: tuple[str, ...],
) -> bytes:
    """The answer as an Arrow IPC stream: the columns of :data:`ANSWER_COLUMNS`, one row per
    record in request order (``expected_total_sales`` null without a value model;
    ``churn_level`` / ``sales_level`` name the fallback level that answered, dictionary
    encoded; ``unseen_categories`` a JSON object or null), and ``request_id``,
    ``model_version`` and ``count`` in the schema's metadata."""
    import json

    import pyarrow as pa

    n = len(ids)
    level_names = pa.array(list(levels), type=pa.string())
    sales = pa.array(
        np.asarray(r.expected_total_sales, dtype=np.float64),
        mask=None if has_value_model else np.ones(n, dtype=bool),
    )
    unseen = [None] * n
    for i, values in per_record.items():
        unseen[i] = json.dumps(values, separators=(",", ":"))
    table = pa.table(
        [
            pa.array(ids, type=pa.string()),
            pa.array(np.asarray(r.churn_probability, dtype=np.float64)),
            pa.array(np.asarray(r.churn_label, dtype=np.int8)),
            pa.array(np.asarray(r.threshold, dtype=np.float64)),
            sales,
            pa.DictionaryArray.from_arrays(
                pa.array(np.asarray(r.churn_level, dtype=np.int8)), level_names
            ),
            pa.DictionaryArray.from_arrays(
                pa.array(np.asarray(r.sales_level, dtype=np.int8)), level_names
            ),
            pa.array(unseen, type=pa.string()),
        ],
        names=list(ANSWER_COLUMNS),
    ).replace_schema_metadata({"request_id": request_id, "model_version": version, "count": str(n)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_answer(data: bytes) -> Any:
    """An Arrow answer as a ``pyarrow.Table`` (clients and tests)."""
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()
