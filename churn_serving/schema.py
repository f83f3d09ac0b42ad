"""Request parsing and validation against the deployed feature schema.

Everything is checked column by column on whole batches (numpy), so a request of 10,000
records costs about as much as a few dozen Python loops over it, not 400,000 checks.

The rules (also served at ``GET /predict/schema``):

* A request is ``{"records": [record, ...]}`` with 1 .. ``max_records`` records (more → 413),
  or columnar: ``{"columns": {name: [value per record], ...}}`` with every array of the same
  length (1 .. ``max_records``), one per feature and optionally ``customer_id`` (echoed, null
  allowed); only ``customer_id`` means id lookups. The same rules apply value by value;
  errors are located as ``["body", "columns", name, record]``.
* A record is ``{"customer_id": id}`` (features looked up in the latest ``current_features``
  table) or ``{"features": {...}}`` with every deployed feature, optionally with a
  ``customer_id`` that is only echoed and logged. Any other key → 422.
* Numeric features: a JSON number or boolean (``true`` = 1); a whole number where the
  training column held integers (``40.5`` for an ``int64`` count is refused) and only 0 / 1
  (or ``false`` / ``true``) where it held booleans. ``null`` only where the training
  data had nulls (``nullable``). Out of range = outside ``[min - k*width, max + k*width]``
  with ``width = max - min`` of the training data (``k = CHURN_SERVING_RANGE_SLACK``, default
  10; a constant column uses ``width = max(|max|, 1)``), and below 0 whenever the training
  minimum is >= 0 (counts, amounts, shares). Non-finite numbers are refused. The rule is
  meant to catch unit and sign mistakes (cents for currency units is 100x, days for years
  365x, a negative count), not unusual customers: amounts are heavy-tailed and cumulative
  features keep growing after training (in the synthetic data the latest ``return_amount``
  reaches 4.4x its training maximum), so a tight k would refuse real customers.
* Categorical features: a JSON string (``null`` where nullable, treated as the missing
  category), or a number or boolean naming the category as training labelled it (``0`` is
  ``"0"``, as a CSV row forwarded with its types sends Telco's ``SeniorCitizen``).
  ``"__missing__"`` (the model's own marker for a missing value) is refused
  (``reserved_value``). A category not seen in training is accepted; the model treats it as unknown
  (the encoders' ``handle_unknown``), and the answer lists it under ``unseen_categories``.
* A feature may be keyed by the data set's source column name instead (``source_names`` in
  the schema, e.g. Telco's ``MonthlyCharges`` for ``monthly_charges``).
* Unknown features, missing features, wrong types, out-of-range values → 422 with one entry
  per problem: ``loc`` (``["body", "records", i, "features", name]``), ``field``, ``msg`` and
  ``type`` (``missing``, ``unknown_field``, ``wrong_type``, ``null_not_allowed``,
  ``not_finite``, ``not_integer``, ``not_boolean``, ``reserved_value``, ``out_of_range``).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

#: k of the range rule: accepted = [min - k*width, max + k*width] of the training range.
DEFAULT_SLACK = 10.0
#: The category FrameCleaner gives to nulls.
MISSING_CATEGORY = "__missing__"
#: At most this many problems are listed in one 422 answer (``error_count`` has the total).
MAX_LISTED_ERRORS = 100

_NUMBER_TYPES = (int, float, bool)
_JSON_TYPES = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def _not_a_number(feature: str, value: Any) -> str:
    """Why ``value`` is refused for numeric ``feature``; for text that spells a number or a
    boolean (a client forwarding a CSV's "False" or "40.5"), how to send it."""
    text = f"feature {feature!r} must be a number, got {json_type(value)}"
    if isinstance(value, str):
        plain = value.strip().lower()
        if plain in ("true", "false"):
            return f"{text} {value!r}: send the JSON boolean {plain} (without quotes)"
        try:
            float(plain)
        except ValueError:
            return text
        return f"{text} {value!r}: send it as a JSON number (without quotes)"
    return text


def _float_id_hint(value: Any) -> str:
    """For an id that arrived as a JSON float: how to send it."""
    if type(value) is not float:
        return ""
    if math.isfinite(value) and value.is_integer() and abs(value) >= 2**63:
        return f" ({value:.6g}: an integer this long is not exact in JSON; send the id as a string)"
    return f" ({value!r}; send the id as a string)"


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


class RequestError(Exception):
    """A request the sidecar refuses: HTTP ``status`` and a FastAPI-style ``detail``."""

    def __init__(self, status: int, detail: Any, **extra: Any):
        summary = detail if isinstance(detail, str) else f"{len(detail)} problem(s): {detail[:2]}"
        super().__init__(f"{status}: {summary}")
        self.status = status
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body of the error answer."""
        return {"detail": self.detail, **self.extra}


def _error(loc: list[Any], kind: str, msg: str, field: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"loc": loc, "msg": msg, "type": kind}
    if field is not None:
        out["field"] = field
    return out


def validation_error(errors: list[dict[str, Any]]) -> RequestError:
    """A 422 listing at most :data:`MAX_LISTED_ERRORS` problems."""
    return RequestError(422, errors[:MAX_LISTED_ERRORS], error_count=len(errors))


@dataclass
class ParsedRequest:
    """A syntactically valid /predict body, split into feature records and id lookups.

    A columnar body (``{"columns": {...}}``) has its feature columns in ``columns`` (every
    record is a feature record) or, with only a ``customer_id`` column, only lookups; an
    Arrow body has them in ``arrow``."""

    n: int
    customer_ids: list[str | None]
    feature_rows: list[int] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    lookup_rows: list[int] = field(default_factory=list)
    lookup_ids: list[str] = field(default_factory=list)
    columns: dict[str, list[Any]] | None = None
    columnar: bool = False
    #: An Arrow body's feature columns (a ``pyarrow.Table``), in place of ``columns``.
    arrow: Any = None


_ABSENT = object()


def parse_request(payload: Any, max_records: int) -> ParsedRequest:
    """Check the envelope and each record's shape (not the feature values).

    Raises:
        RequestError: 422 for a malformed envelope or record, 413 for too many records.
    """
    if not isinstance(payload, dict):
        raise validation_error(
            [_error(["body"], "wrong_type", f"expected an object, got {json_type(payload)}")]
        )
    if "columns" in payload:
        return parse_columns(payload, max_records)
    extra = [k for k in payload if k != "records"]
    if extra:
        raise validation_error(
            [
                _error(
                    ["body", k],
                    "unknown_field",
                    f"unknown field {k!r}; expected 'records' (or 'columns')",
                    k,
                )
                for k in extra
            ]
        )
    records = payload.get("records")
    if records is None:
        raise validation_error([_error(["body", "records"], "missing", "field required")])
    if not isinstance(records, list):
        raise validation_error(
            [
                _error(
                    ["body", "records"],
                    "wrong_type",
                    f"expected an array of records, got {json_type(records)}",
                )
            ]
        )
    n = len(records)
    if n == 0:
        raise validation_error(
            [_error(["body", "records"], "too_short", "at least one record is required")]
        )
    if n > max_records:
        raise _too_many(n, max_records)
    return _records_fast(records) or _records_checked(records)


def parse_as_of(query: str | bytes | None) -> dt.datetime | None:
    """The ``as_of`` of a request's query string (``as_of=2026-12-01``, an ISO date-time, or
    ``as_of=today``: today in UTC): the day dates sent as dates count to. None without one.

    Raises:
        RequestError: 422 for a value that is not a date, or another query parameter.
    """
    from urllib.parse import parse_qs

    if not query:
        return None
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    params = parse_qs(text, keep_blank_values=True)
    unknown = [k for k in params if k != "as_of"]
    if unknown:
        raise validation_error(
            [
                _error(["query", k], "unknown_field", f"unknown query parameter {k!r}", k)
                for k in unknown
            ]
        )
    values = params.get("as_of") or []
    if not values:
        return None
    value = values[-1].strip()
    if value.lower() == "today":
        today = dt.datetime.now(dt.UTC).date()
        return dt.datetime(today.year, today.month, today.day)
    try:
        return naive_utc(value)
    except ValueError:
        raise validation_error(
            [
                _error(
                    ["query", "as_of"],
                    "wrong_type",
                    f"as_of must be a date (YYYY-MM-DD), an ISO date-time or 'today', got "
                    f"{value[:40]!r}",
                    "as_of",
                )
            ]
        ) from None


def naive_utc(text: str) -> dt.datetime:
    """An ISO date or date-time as naive UTC, as training stores dates (an offset is
    applied). Raises ValueError for anything else."""
    when = dt.datetime.fromisoformat(text.strip())
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def _too_many(n: int, max_records: int) -> RequestError:
    return RequestError(
        413,
        f"too many records: {n} > {max_records} per request (CHURN_SERVING_MAX_RECORDS); "
        "split the batch",
        max_records=max_records,
    )


def _records_fast(records: list[Any]) -> ParsedRequest | None:
    """The records when every one is well-formed (the usual case, one pass without error
    bookkeeping); None at the first irregular record (:func:`_records_checked` reports)."""
    n = len(records)
    out = ParsedRequest(n=n, customer_ids=[None] * n)
    ids, feature_rows, features = out.customer_ids, out.feature_rows, out.features
    lookup_rows, lookup_ids = out.lookup_rows, out.lookup_ids
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            return None
        size = len(rec)
        cid = rec.get("customer_id", _ABSENT)
        feats = rec.get("features", _ABSENT)
        if cid is not _ABSENT:
            if type(cid) is not str:
                if type(cid) is not int:
                    return None
                cid = str(cid)
            ids[i] = cid
            if size == 1:
                lookup_rows.append(i)
                lookup_ids.append(cid)
                continue
        if type(feats) is not dict or size != 1 + (cid is not _ABSENT):
            return None
        feature_rows.append(i)
        features.append(feats)
    return out


def _records_checked(records: list[Any]) -> ParsedRequest:
    """The records, each checked, every problem listed.

    Raises:
        RequestError: 422 naming each malformed record.
    """
    n = len(records)
    out = ParsedRequest(n=n, customer_ids=[None] * n)
    errors: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            errors.append(
                _error(
                    ["body", "records", i],
                    "wrong_type",
                    f"expected an object, got {json_type(rec)}",
                )
            )
            continue
        unknown = [k for k in rec if k not in ("customer_id", "features")]
        if unknown or not rec:
            errors.extend(
                _error(
                    ["body", "records", i, k],
                    "unknown_field",
                    f"unknown field {k!r}; a record has 'customer_id' and/or 'features'",
                    k,
                )
                for k in unknown
            )
            if not rec:
                errors.append(
                    _error(
                        ["body", "records", i],
                        "missing",
                        "a record needs 'customer_id' or 'features'",
                    )
                )
            continue
        feats = rec.get("features")
        cid = rec.get("customer_id")
        if "customer_id" in rec:
            if type(cid) is str:
                pass
            elif type(cid) is int:
                cid = str(cid)
            else:
                errors.append(
                    _error(
                        ["body", "records", i, "customer_id"],
                        "wrong_type",
                        f"customer_id must be a string or an integer, got {json_type(cid)}"
                        + _float_id_hint(cid),
                        "customer_id",
                    )
                )
                continue
            out.customer_ids[i] = cid
        if "features" in rec:
            if type(feats) is not dict:
                errors.append(
                    _error(
                        ["body", "records", i, "features"],
                        "wrong_type",
                        f"features must be an object, got {json_type(feats)}",
                        "features",
                    )
                )
                continue
            out.feature_rows.append(i)
            out.features.append(feats)
        else:
            out.lookup_rows.append(i)
            out.lookup_ids.append(cid)  # type: ignore[arg-type]
    if errors:
        raise validation_error(errors)
    return out


def parse_columns(payload: dict[str, Any], max_records: int) -> ParsedRequest:
    """A columnar body: ``{"columns": {name: [value per record], ...}}``, every column of
    the same length n. The columns are the features (by feature or source column name) and
    optionally ``customer_id`` (echoed); a body with only ``customer_id`` looks the
    customers up.

    Raises:
        RequestError: 422 for a malformed envelope, 413 for too many records.
    """
    extra = [k for k in payload if k != "columns"]
    if extra:
        raise validation_error(
            [
                _error(
                    ["body", k],
                    "unknown_field",
                    f"unknown field {k!r}; a columnar body has only 'columns'",
                    k,
                )
                for k in extra
            ]
        )
    columns = payload["columns"]
    if type(columns) is not dict:
        raise validation_error(
            [
                _error(
                    ["body", "columns"],
                    "wrong_type",
                    f"expected an object of columns, got {json_type(columns)}",
                )
            ]
        )
    if not columns:
        raise validation_error(
            [_error(["body", "columns"], "too_short", "at least one column is required")]
        )
    errors = [
        _error(
            ["body", "columns", name],
            "wrong_type",
            f"column {name!r} must be an array of values, got {json_type(col)}",
            name,
        )
        for name, col in columns.items()
        if type(col) is not list
    ]
    if errors:
        raise validation_error(errors)
    lengths = {name: len(col) for name, col in columns.items()}
    n = max(lengths.values())
    if n > max_records:
        raise _too_many(n, max_records)
    if len(set(lengths.values())) > 1:
        raise validation_error(
            [
                _error(
                    ["body", "columns", name],
                    "length_mismatch",
                    f"column {name!r} has {size} values, others {n}: every column needs one "
                    "value per record",
                    name,
                )
                for name, size in lengths.items()
                if size != n
            ]
        )
    if n == 0:
        raise validation_error(
            [_error(["body", "columns"], "too_short", "at least one record is required")]
        )
    features = {k: v for k, v in columns.items() if k != "customer_id"}
    raw_ids = columns.get("customer_id")
    ids: list[str | None] = [None] * n
    if raw_ids is not None:
        for i, cid in enumerate(raw_ids):
            if type(cid) is str:
                ids[i] = cid
            elif type(cid) is int:
                ids[i] = str(cid)
            elif cid is not None or not features:
                allowed = "a string or an integer" + (" (or null)" if features else "")
                errors.append(
                    _error(
                        ["body", "columns", "customer_id", i],
                        "wrong_type",
                        f"customer_id must be {allowed}, got {json_type(cid)}"
                        + _float_id_hint(cid),
                        "customer_id",
                    )
                )
        if errors:
            raise validation_error(errors)
    return columnar_request(ids, columns=features or None)


def columnar_request(
    ids: list[str | None], *, columns: dict[str, list[Any]] | None = None, arrow: Any = None
) -> ParsedRequest:
    """A columnar body's request: every record a feature record (``columns`` or ``arrow``
    given), else every record an id lookup (``ids`` then holds no null)."""
    rows = list(range(len(ids)))
    if columns is None and arrow is None:
        return ParsedRequest(
            n=len(ids),
            customer_ids=ids,
            lookup_rows=rows,
            lookup_ids=ids,  # type: ignore[arg-type]
            columnar=True,
        )
    return ParsedRequest(
        n=len(ids),
        customer_ids=ids,
        feature_rows=rows,
        columns=columns,
        arrow=arrow,
        columnar=True,
    )


#: Features that may be negative whatever training saw: the days from a date to the
#: cut-off (``days_since_<name>``) are negative for a date after it (a contract's end).
DAYS_SINCE = "days_since_"
SIGNED_PREFIXES = (DAYS_SINCE,)


@dataclass(frozen=True)
class BadDate:
    """A value sent under a date's name that is not a date: refused as ``wrong_type``."""

    key: str
    value: Any

    def message(self, feature: str) -> str:
        return (
            f"{self.key!r} must be a date (YYYY-MM-DD) or an ISO date-time, got "
            f"{self.value!r}; or send the days to the cut-off as {feature!r}"
        )


def accepted_range(
    mn: float | None, mx: float | None, slack: float, signed: bool = False
) -> tuple[float, float]:
    """The accepted interval for a numeric feature with training range [mn, mx]; never
    below 0 when training saw no negative value, unless the feature is ``signed``."""
    if mn is None or mx is None or not (math.isfinite(mn) and math.isfinite(mx)):
        return -math.inf, math.inf
    width = mx - mn
    if width <= 0:
        width = max(abs(mx), 1.0)
    lo, hi = mn - slack * width, mx + slack * width
    if mn >= 0 and not signed:
        lo = max(lo, 0.0)
    return float(lo), float(hi)


class FeatureSchema:
    """The deployed features (manifest ``features`` + ``feature_schema``) as validators."""

    def __init__(
        self,
        manifest: dict[str, Any],
        slack: float = DEFAULT_SLACK,
        aliases: dict[str, str] | None = None,
    ):
        feats = manifest.get("features") or {}
        schema = manifest.get("feature_schema") or {}
        self.numeric: list[str] = [str(c) for c in feats.get("numeric", [])]
        self.categorical: list[str] = [str(c) for c in feats.get("categorical", [])]
        self.columns = [*self.numeric, *self.categorical]
        #: The same names as tuples (the inference log groups requests by them).
        self.numeric_names = tuple(self.numeric)
        self.categorical_names = tuple(self.categorical)
        self.expected = frozenset(self.columns)
        self.slack = slack
        lo, hi, nullable_num = [], [], []
        for c in self.numeric:
            s = schema.get(c, {})
            a, b = accepted_range(
                s.get("min"), s.get("max"), slack, signed=c.startswith(SIGNED_PREFIXES)
            )
            lo.append(a)
            hi.append(b)
            nullable_num.append(bool(s.get("nullable", True)))
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        self.num_nullable = np.asarray(nullable_num, dtype=bool)
        # the same as Python lists, for one record's values
        self._lo, self._hi, self._nullable = lo, hi, nullable_num
        definition = manifest.get("feature_definition") or {}
        dated = set((definition.get("dates") or {}).values())
        kinds = [
            _value_kind(schema.get(c, {}).get("dtype")) if c not in dated else None
            for c in self.numeric
        ]
        #: Features whose training values were booleans (0/1 only) or whole numbers.
        self.boolean = np.asarray([k == "boolean" for k in kinds], dtype=bool)
        self.whole = np.asarray([k == "whole" for k in kinds], dtype=bool)
        self._any_whole, self._any_boolean = bool(self.whole.any()), bool(self.boolean.any())
        self._kinds = kinds
        self.known: list[frozenset[str]] = []
        self.cat_nullable: list[bool] = []
        self.cat_has_categories: list[bool] = []
        for c in self.categorical:
            s = schema.get(c, {})
            cats = s.get("categories")
            self.cat_has_categories.append(cats is not None)
            self.known.append(frozenset(str(v) for v in (cats or [])))
            self.cat_nullable.append(bool(s.get("nullable", True)))
        self._raw = schema
        #: The data set's source column names of features (e.g. Telco's ``MonthlyCharges`` for
        #: ``monthly_charges``), accepted in requests in place of the feature names.
        self.aliases = {
            src: name
            for src, name in (aliases or {}).items()
            if name in self.expected and src != name and src not in self.expected
        }
        self.source_names = {name: src for src, name in self.aliases.items()}
        # dates: a days_since_<name> feature may be sent as the date under <name> (or its
        # source column name), counted to the day the version's dates count to
        as_of = definition.get("dates_as_of")
        self.dates_as_of = dt.datetime.fromisoformat(as_of) if as_of else None
        dates = {
            k: v
            for k, v in (definition.get("dates") or {}).items()
            if v in self.numeric and k not in self.expected
        }
        self.date_keys: dict[str, str] = dict(dates)
        for src, name in (aliases or {}).items():
            if name in dates and src not in self.expected:
                self.date_keys.setdefault(src, dates[name])
        self._renames = bool(self.aliases or self.date_keys)
        self._num_get = _getter(self.numeric)
        self._cat_get = _getter(self.categorical)

    def at(self, as_of: dt.datetime) -> FeatureSchema:
        """This schema counting dates sent as dates to ``as_of`` rather than
        :attr:`dates_as_of` (a request's ``?as_of=``); everything else shared."""
        view = copy.copy(self)
        view.dates_as_of = as_of
        return view

    # ------------------------------------------------------------------ descriptions

    def describe(self) -> dict[str, Any]:
        """The schema as served by ``GET /predict/schema``."""
        fields: dict[str, Any] = {}
        for i, c in enumerate(self.numeric):
            s = self._raw.get(c, {})
            fields[c] = {
                "type": "numeric",
                "dtype": s.get("dtype"),
                "nullable": bool(self.num_nullable[i]),
                "training_min": s.get("min"),
                "training_max": s.get("max"),
                "accepted_min": 0.0 if self.boolean[i] else _finite_or_none(self.lo[i]),
                "accepted_max": 1.0 if self.boolean[i] else _finite_or_none(self.hi[i]),
                "values": "true/false or 1/0"
                if self.boolean[i]
                else "whole numbers"
                if self.whole[i]
                else "numbers",
            }
            if c in self.source_names:
                fields[c]["source_name"] = self.source_names[c]
        for j, c in enumerate(self.categorical):
            s = self._raw.get(c, {})
            fields[c] = {
                "type": "categorical",
                "dtype": s.get("dtype"),
                "nullable": self.cat_nullable[j],
                "categories": sorted(self.known[j]),
                "unseen_categories": "accepted, treated as unknown by the model, reported "
                "per record in unseen_categories",
            }
            if c in self.source_names:
                fields[c]["source_name"] = self.source_names[c]
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "source_names": dict(self.source_names),
            "names_accepted": "a record's features may be keyed by the feature names or by the "
            "data set's source column names (source_names), or a mix",
            "dates": {
                "fields": dict(self.date_keys),
                "dates_as_of": self.dates_as_of.date().isoformat() if self.dates_as_of else None,
                "rule": "a date feature (days_since_<name>; a snapshot's tenure_days from "
                "signup_date) may be sent as the date itself under the date's name or its "
                "source column name (fields): YYYY-MM-DD or an ISO date-time, counted in "
                "days to dates_as_of (negative after it), as training counted them to its "
                "cut-off; POST /predict?as_of=YYYY-MM-DD (or as_of=today) counts them to that "
                "day instead, for records describing customers as of then",
            }
            if self.date_keys
            else None,
            "fields": fields,
            "range_rule": (
                f"numeric values must lie in [min - {self.slack:g}*width, max + "
                f"{self.slack:g}*width] of the training range (width = max - min, or "
                "max(|max|, 1) for a constant column), and be >= 0 when the training minimum "
                "is >= 0 (days_since_<date> features excepted: a date after the cut-off is "
                "negative)"
            ),
        }

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of a ``features`` object (for the OpenAPI document)."""
        props: dict[str, Any] = {}
        for i, c in enumerate(self.numeric):
            number = "integer" if self.whole[i] or self.boolean[i] else "number"
            types = [number, "boolean", "null"] if self.num_nullable[i] else [number, "boolean"]
            p: dict[str, Any] = {"type": types}
            lo, hi = (0.0, 1.0) if self.boolean[i] else (self.lo[i], self.hi[i])
            if math.isfinite(lo):
                p["minimum"] = float(lo)
            if math.isfinite(hi):
                p["maximum"] = float(hi)
            props[c] = p
        for j, c in enumerate(self.categorical):
            kinds = ["string", "number", "boolean"]
            p = {"type": [*kinds, "null"] if self.cat_nullable[j] else kinds}
            if self.known[j]:
                p["description"] = "known: " + ", ".join(sorted(self.known[j]))
                p["examples"] = sorted(self.known[j])[:3]
            props[c] = p
        return {
            "type": "object",
            "properties": props,
            "required": list(self.columns),
            "additionalProperties": False,
        }

    def columns_json_schema(self, max_records: int) -> dict[str, Any]:
        """JSON Schema of a columnar body's ``columns`` object (for the OpenAPI document):
        every feature as an array of its values, an optional ``customer_id`` array."""
        values = self.json_schema()["properties"]
        props: dict[str, Any] = {
            c: {"type": "array", "minItems": 1, "maxItems": max_records, "items": values[c]}
            for c in self.columns
        }
        props["customer_id"] = {
            "type": "array",
            "minItems": 1,
            "maxItems": max_records,
            "items": {"type": ["string", "integer", "null"]},
        }
        return {
            "type": "object",
            "description": "one array per feature, one value per record (the same length for "
            "every array); only customer_id: id lookups",
            "properties": props,
            "required": list(self.columns),
            "additionalProperties": False,
        }

    # -------------------------------------------------------------------- validation

    def to_arrays(
        self, feats: list[dict[str, Any]], rows: list[int]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
        """Validate feature records and return ``(num, cat, unseen)``.

        ``num`` is float64 ``(n, n_numeric)``, ``cat`` object ``(n, n_categorical)`` of
        canonical strings; ``unseen`` lists ``(position in feats, feature, value)`` for
        categories not seen in training. ``rows`` are the records' positions in the request
        (for error locations).

        Raises:
            RequestError: 422 listing every problem found.
        """
        errors: list[dict[str, Any]] = []
        expected = self.expected
        num_rows = cat_rows = None
        try:  # the usual case: every record has exactly the deployed features
            num_rows = [self._num_get(f) for f in feats]
            cat_rows = [self._cat_get(f) for f in feats]
            if set(map(len, feats)) != {len(self.columns)}:  # all present: no unknown one
                num_rows = None
        except (KeyError, TypeError):
            num_rows = None
        if num_rows is None:
            if self._renames:
                feats = [f if f.keys() == expected else self._translate(f) for f in feats]
            for k, f in enumerate(feats):
                if f.keys() != expected:
                    keys = f.keys()
                    for c in self.columns:
                        if c not in keys:
                            errors.append(_error(_loc(rows[k], c), "missing", self._required(c), c))
                    for c in keys:
                        if c not in expected:
                            errors.append(
                                _error(
                                    _loc(rows[k], c),
                                    "unknown_field",
                                    self._unknown(c),
                                    c,
                                )
                            )
            # the values present are checked too: one answer names every problem
            absent = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
            if errors:
                feats = [{c: f.get(c) for c in self.columns} for f in feats]
            num_rows = [self._num_get(f) for f in feats]
            cat_rows = [self._cat_get(f) for f in feats]
        else:
            absent = set()

        def loc(r: int, c: str) -> list[Any]:
            return _loc(rows[r], c)

        n = len(feats)
        found: list[dict[str, Any]] = []
        num = self._numeric(num_rows, n, False, loc, found)
        columns = list(zip(*cat_rows, strict=True)) if cat_rows else []
        cat, unseen = self._categorical(columns, n, loc, found)
        errors += [e for e in found if tuple(e["loc"]) not in absent] if absent else found
        if errors:
            raise validation_error(errors)
        return num, cat, unseen

    def columns_to_arrays(
        self, columns: dict[str, list[Any]], n: int
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
        """Validate a columnar body's feature columns (``{feature: [value per record]}``,
        each of length ``n``) and return ``(num, cat, unseen)`` as :meth:`to_arrays` does,
        with error locations ``["body", "columns", feature, record]``.

        Raises:
            RequestError: 422 listing every problem found.
        """
        columns = self._column_keys(columns)
        errors: list[dict[str, Any]] = []
        num = self._numeric([columns[c] for c in self.numeric], n, True, _column_loc, errors)
        cat, unseen = self._categorical(
            [columns[c] for c in self.categorical], n, _column_loc, errors
        )
        if errors:
            raise validation_error(errors)
        return num, cat, unseen

    def arrow_to_arrays(
        self, table: Any
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
        """Validate an Arrow body's feature columns (a ``pyarrow.Table``, one row per record)
        and return ``(num, cat, unseen)`` as :meth:`columns_to_arrays` does, with the same
        rules and error locations.

        Numeric features take any integer, floating or boolean column (null and NaN are
        missing values); categorical features a string column (plain, large or
        dictionary-encoded). A column of another type is refused as a whole (422
        ``wrong_type``), before its values are looked at.

        Raises:
            RequestError: 422 listing every problem found.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        n = table.num_rows
        columns = self._column_keys(dict(zip(table.column_names, table.columns, strict=True)))
        errors: list[dict[str, Any]] = []
        num = np.empty((n, len(self.numeric)), dtype=np.float64)
        for j, c in enumerate(self.numeric):
            col = columns[c]
            t = col.type
            if pa.types.is_boolean(t):
                col = pc.cast(col, pa.int8())
            elif not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                errors.append(
                    _error(
                        ["body", "columns", c],
                        "wrong_type",
                        f"feature {c!r} must be a numeric column, got Arrow type {t}",
                        c,
                    )
                )
                continue
            num[:, j] = col.to_numpy(zero_copy_only=False)  # nulls become NaN
        cats: list[Any] = []
        for c in self.categorical:
            col = columns[c]
            t = col.type
            j = self.categorical.index(c)
            longest = _longest_unseen(col, self.known[j])  # before a dictionary is spelled out
            if longest > MAX_CATEGORY_CHARS:
                errors.append(_too_long(["body", "columns", c], c, longest))
                continue
            if pa.types.is_dictionary(t):
                t = t.value_type
                col = pc.cast(col, t)
            if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                errors.append(
                    _error(
                        ["body", "columns", c],
                        "wrong_type",
                        f"feature {c!r} must be a string column (categories), got Arrow type "
                        f"{col.type}",
                        c,
                    )
                )
                continue
            cats.append(col.to_pylist())
        if errors:
            raise validation_error(errors)
        num = self._numeric_checks(num, np.isnan(num), _column_loc, errors)
        cat, unseen = self._categorical(cats, n, _column_loc, errors)
        if errors:
            raise validation_error(errors)
        return num, cat, unseen

    def _column_keys(self, columns: dict[str, Any]) -> dict[str, Any]:
        """A columnar body's feature columns keyed by feature name (source column names
        translated).

        Raises:
            RequestError: 422 naming every missing and unknown feature.
        """
        if self._renames and columns.keys() != self.expected:
            columns = self._translate(columns)
        keys = columns.keys()
        if keys == self.expected:
            return columns
        errors: list[dict[str, Any]] = []
        for c in self.columns:
            if c not in keys:
                errors.append(_error(["body", "columns", c], "missing", self._required(c), c))
        for c in keys:
            if c not in self.expected:
                errors.append(
                    _error(
                        ["body", "columns", c],
                        "unknown_field",
                        self._unknown(c),
                        c,
                    )
                )
        raise validation_error(errors)

    def _required(self, feature: str) -> str:
        """The message of a missing feature, with the other names it may be sent under."""
        names = [self.source_names[feature]] if feature in self.source_names else []
        names += [k for k, v in self.date_keys.items() if v == feature]
        also = f" (or {' / '.join(map(repr, names))})" if names else ""
        return f"feature {feature!r}{also} is required"

    def _unknown(self, key: str) -> str:
        """Why ``key`` is refused: not a feature, or a feature's other name sent beside it."""
        feature = self.aliases.get(key) or self.date_keys.get(key)
        if feature is not None:
            return (
                f"{key!r} is the source name of feature {feature!r}, which the record also "
                "holds under its own name: send it once"
            )
        return f"unknown feature {key!r} (not in the deployed schema)"

    def _translate(self, f: dict[str, Any]) -> dict[str, Any]:
        """A record keyed by source column names (or a mix) keyed by feature names; a feature
        given under both names keeps its feature-name key and the source key stays unknown."""
        out: dict[str, Any] = {}
        for k, v in f.items():
            name = self.aliases.get(k)
            feature = self.date_keys.get(k)
            if feature is not None and feature not in f and self.dates_as_of is not None:
                out[feature] = self._days(k, v)
            elif name is None or name in f:
                out[k] = v
            else:
                out[name] = v
        return out

    def _days(self, key: str, value: Any) -> Any:
        """The days from a date sent under ``key`` (one value, a JSON column of them or an
        Arrow column) to :attr:`dates_as_of`, as ``days_since_<name>`` is computed in
        training; a value that is not a date becomes a :class:`BadDate`."""
        if isinstance(value, list):
            return [self._days(key, v) for v in value]
        if hasattr(value, "to_pylist"):  # an Arrow column of dates, date-times or strings
            import pyarrow as pa

            values = [v.isoformat() if isinstance(v, dt.date) else v for v in value.to_pylist()]
            days = [self._days(key, v) for v in values]
            bad = next((d for d in days if isinstance(d, BadDate)), None)
            if bad is not None:
                feature = self.date_keys[key]
                raise validation_error(
                    [_error(["body", "columns", key], "wrong_type", bad.message(feature), key)]
                )
            return pa.array(days, type=pa.float64())
        if value is None:
            return None
        if not isinstance(value, str):
            return BadDate(key, value)
        try:
            when = naive_utc(value)
        except ValueError:
            return BadDate(key, value)
        assert self.dates_as_of is not None
        return (self.dates_as_of - when).total_seconds() / 86_400

    def _numeric(
        self,
        values: list[Any],
        n: int,
        by_column: bool,
        loc: Any,
        errors: list[dict[str, Any]],
    ) -> np.ndarray:
        """``values``: one sequence per record (``by_column`` False) or per numeric feature
        (True); ``loc(record, feature)`` locates an error."""
        k = len(self.numeric)
        if k == 0:
            return np.empty((n, 0), dtype=np.float64)
        if n == 1:  # one record: plain floats cost less than a dozen array operations
            x = self._one_valid_row([col[0] for col in values] if by_column else values[0])
            if x is not None:
                return np.array([x], dtype=np.float64)
        num: np.ndarray | None = None
        try:
            a = np.array(values)
            if a.shape == ((k, n) if by_column else (n, k)):
                if a.dtype.kind in "biuf":
                    num = a.astype(np.float64, copy=False)
                elif a.dtype == object and {type(v) for v in a.flat} <= {
                    int,
                    float,
                    bool,
                    type(None),
                }:
                    num = a.astype(np.float64)
        except (ValueError, TypeError, OverflowError):
            num = None
        if num is not None:
            if by_column:
                num = np.ascontiguousarray(num.T)
            return self._numeric_checks(num, np.isnan(num), loc, errors)
        else:  # some value is not a number (or a column has the wrong length): find each one
            num = np.full((n, k), np.nan)
            nulls = np.zeros((n, k), dtype=bool)
            for r in range(n):
                for j in range(k):
                    v = values[j][r] if by_column else values[r][j]
                    if v is None:
                        nulls[r, j] = True
                        continue
                    if type(v) in _NUMBER_TYPES:
                        try:
                            num[r, j] = float(v)
                        except OverflowError:
                            num[r, j] = math.inf
                        continue
                    c = self.numeric[j]
                    errors.append(
                        _error(
                            loc(r, c),
                            "wrong_type",
                            v.message(c) if isinstance(v, BadDate) else _not_a_number(c, v),
                            c,
                        )
                    )
        return self._numeric_checks(num, nulls, loc, errors)

    def _numeric_checks(
        self, num: np.ndarray, nulls: np.ndarray, loc: Any, errors: list[dict[str, Any]]
    ) -> np.ndarray:
        """Append the null, finiteness and range problems of ``num`` (records x numeric
        features, ``nulls`` marking the missing values) to ``errors``; ``num``."""
        if nulls.any():
            bad = nulls & ~self.num_nullable
            self._cell_errors(
                bad,
                loc,
                errors,
                "null_not_allowed",
                lambda c, r, j: f"feature {c!r} must not be null (it had no nulls in training)",
            )
        with np.errstate(invalid="ignore"):
            inf = np.isinf(num)
            out = ((num < self.lo) | (num > self.hi)) & ~inf
        if inf.any():
            self._cell_errors(
                inf,
                loc,
                errors,
                "not_finite",
                lambda c, r, j: f"feature {c!r} must be a finite number",
            )
        # only when the schema has such columns (most batch checks cost nothing more)
        fractional = not_boolean = None
        with np.errstate(invalid="ignore"):
            if self._any_whole:
                fractional = self.whole & np.isfinite(num) & (num != np.floor(num))
            if self._any_boolean:
                not_boolean = self.boolean & (num != 0) & (num != 1) & ~np.isnan(num)
        if fractional is not None and fractional.any():
            self._cell_errors(
                fractional,
                loc,
                errors,
                "not_integer",
                lambda c, r, j: (
                    f"feature {c!r} must be a whole number (it was "
                    f"{self._raw.get(c, {}).get('dtype')} in training), got {float(num[r, j])!r}"
                ),
            )
        if not_boolean is not None and not_boolean.any():
            self._cell_errors(
                not_boolean,
                loc,
                errors,
                "not_boolean",
                lambda c, r, j: (
                    f"feature {c!r} is a boolean: send true or false (or 1 or 0), "
                    f"got {float(num[r, j])!r}"
                ),
            )
            out &= ~not_boolean
        if out.any():
            self._cell_errors(
                out,
                loc,
                errors,
                "out_of_range",
                lambda c, r, j: (
                    f"feature {c!r} = {float(num[r, j])!r} is out of range: accepted "
                    f"[{self.lo[j]:.6g}, {self.hi[j]:.6g}] (training range "
                    f"[{self._raw.get(c, {}).get('min')}, {self._raw.get(c, {}).get('max')}]"
                    f" widened by {self.slack:g}x its width; >= 0 if the training min is)"
                ),
            )
        return num

    def _one_valid_row(self, row: Any) -> list[float] | None:
        """One record's numeric values as floats when every one is valid, else None (the
        array checks then name the problems)."""
        out = []
        append = out.append
        nan = math.nan
        for v, lo, hi, nullable, kind in zip(
            row, self._lo, self._hi, self._nullable, self._kinds, strict=True
        ):
            t = type(v)
            if t is float or t is int or t is bool:
                try:
                    f = float(v)
                except OverflowError:
                    return None
                if not lo <= f <= hi:  # out of range, or not finite
                    return None
                if kind is not None and (
                    not f.is_integer() if kind == "whole" else f != 0.0 and f != 1.0
                ):
                    return None
                append(f)
            elif v is None and nullable:
                append(nan)
            else:
                return None
        return out

    def _cell_errors(
        self,
        mask: np.ndarray,
        loc: Any,
        errors: list[dict[str, Any]],
        kind: str,
        message: Any,
    ) -> None:
        """One error per True cell of ``mask`` (records x numeric features)."""
        for r, j in zip(*np.nonzero(mask), strict=True):
            c = self.numeric[j]
            errors.append(_error(loc(int(r), c), kind, message(c, r, j), c))

    def _categorical(
        self,
        columns: list[Any],
        n: int,
        loc: Any,
        errors: list[dict[str, Any]],
    ) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        """``columns``: one sequence of n values per categorical feature."""
        k = len(self.categorical)
        cat = np.empty((n, k), dtype=object)
        unseen: list[tuple[int, str, str]] = []
        if n == 1 and k:  # one record of known categories: no per-column sets
            row = [col[0] for col in columns]
            if all(
                type(v) is str and (v in known or not has and v != MISSING_CATEGORY)
                for v, known, has in zip(row, self.known, self.cat_has_categories, strict=True)
            ):
                cat[0] = row
                return cat, unseen
        for j, c in enumerate(self.categorical):
            col = columns[j]
            types = set(map(type, col))
            if types - {str, type(None)}:  # numbers name their category as training did
                col, bad = _category_labels(col)
                for r, v in bad:
                    errors.append(
                        _error(
                            loc(r, c),
                            "wrong_type",
                            f"feature {c!r} must be a string (a category), got {json_type(v)}",
                            c,
                        )
                    )
                if bad:
                    continue
            if MISSING_CATEGORY in col:
                for r, v in enumerate(col):
                    if v == MISSING_CATEGORY:
                        errors.append(
                            _error(
                                loc(r, c),
                                "reserved_value",
                                f"feature {c!r}: {MISSING_CATEGORY!r} stands for a missing "
                                "value inside the model; send null"
                                + (
                                    ""
                                    if self.cat_nullable[j]
                                    else " (not allowed here: it had no nulls in training)"
                                ),
                                c,
                            )
                        )
                continue
            if type(None) in types:
                if not self.cat_nullable[j]:
                    for r, v in enumerate(col):
                        if v is None:
                            errors.append(
                                _error(
                                    loc(r, c),
                                    "null_not_allowed",
                                    f"feature {c!r} must not be null (it had no nulls in training)",
                                    c,
                                )
                            )
                    continue
                col = [MISSING_CATEGORY if v is None else v for v in col]
            if self.cat_has_categories[j]:
                known = self.known[j]
                if not known.issuperset(col):
                    for r, v in enumerate(col):
                        if v in known or v == MISSING_CATEGORY:
                            continue
                        if len(v) > MAX_CATEGORY_CHARS:  # echoed, logged and reported
                            errors.append(_too_long(loc(r, c), c, len(v)))
                        else:
                            unseen.append((r, c, v))
            cat[:, j] = col
        return cat, unseen


#: A category value the model did not see in training, longer than this, is refused (422
#: ``too_long``): unseen values are echoed in the answer and kept in the inference log and
#: the served-drift report, and one 50 KB value spelled out for 10,000 rows of an Arrow
#: body took 15 GB.
MAX_CATEGORY_CHARS = 1000


def _too_long(where: list[Any], feature: str, length: int) -> dict[str, Any]:
    return _error(
        where,
        "too_long",
        f"feature {feature!r}: a category of {length:,} characters (at most "
        f"{MAX_CATEGORY_CHARS:,} for one the model has not seen)",
        feature,
    )


def _longest_unseen(col: Any, known: frozenset[str]) -> int:
    """The length of the longest value of an Arrow string column (a dictionary column's
    dictionaries) that is over :data:`MAX_CATEGORY_CHARS` and not in ``known``; 0 when
    there is none (or the column holds no strings)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        parts = [chunk.dictionary for chunk in col.chunks]
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        parts = list(col.chunks)
    else:
        return 0
    longest = 0
    for part in parts:
        long = pc.filter(part, pc.greater(pc.utf8_length(part), MAX_CATEGORY_CHARS))
        for value in set(long.to_pylist()) - known:
            longest = max(longest, len(value))
    return longest


def _category_labels(col: Any) -> tuple[list[Any], list[tuple[int, Any]]]:
    """A categorical column's values with numbers and booleans as the category labels
    training gave them (``0`` → ``"0"``, ``1.0`` → ``"1"``, ``true`` → ``"True"``), and the
    ``(record, value)`` of values that name no category (objects, arrays, ±inf)."""
    out: list[Any] = []
    bad: list[tuple[int, Any]] = []
    for r, v in enumerate(col):
        t = type(v)
        if t is str or v is None:
            out.append(v)
        elif (t is int or t is bool) or (t is float and math.isfinite(v)):
            out.append(category_label(v))
        else:
            bad.append((r, v))
            out.append(None)
    return out, bad


def _value_kind(dtype: Any) -> str | None:
    """``"boolean"`` or ``"whole"`` for a training dtype (as ``str(series.dtype)``) whose
    values are booleans or integers; None for floats, unknown or absent dtypes."""
    text = str(dtype or "").lower()
    if text in ("bool", "boolean"):
        return "boolean"
    if text.startswith(("int", "uint")):
        return "whole"
    return None


def _loc(row: int, name: str) -> list[Any]:
    return ["body", "records", row, "features", name]


def _column_loc(row: int, name: str) -> list[Any]:
    return ["body", "columns", name, row]


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _getter(cols: list[str]) -> Any:
    if not cols:
        return lambda f: ()
    if len(cols) == 1:
        c = cols[0]
        return lambda f: (f[c],)
    return itemgetter(*cols)


def category_label(value: Any) -> str:
    """Canonical string for a category value (``1.0`` and ``1`` both become ``"1"``), as in
    training (:func:`churn_assets.lib.models.spec.category_label`)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def frame_to_arrays(frame: Any, numeric: list[str], categorical: list[str]) -> tuple[Any, Any]:
    """A table's feature columns (pyarrow, or anything with ``to_arrow()`` such as polars) as
    ``(num, cat)`` with FrameCleaner's semantics: numeric → float64 (booleans 0/1, nulls and
    ±inf → NaN); categorical → canonical strings with nulls as ``"__missing__"``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = frame if isinstance(frame, pa.Table) else frame.to_arrow()
    n = table.num_rows
    num = np.empty((n, len(numeric)), dtype=np.float64)
    for i, c in enumerate(numeric):
        col = table.column(c)
        if pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        v = pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        v = np.array(v, dtype=np.float64)
        v[~np.isfinite(v)] = np.nan
        num[:, i] = v
    cat = np.empty((n, len(categorical)), dtype=object)
    for j, c in enumerate(categorical):
        # by dictionary: every cell refers to one string object per category (a million
        # customers' categories as separate strings cost 50+ bytes each)
        col = table.column(c)
        if not pa.types.is_dictionary(col.type):
            col = pc.dictionary_encode(col)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        labels = np.array(
            [
                MISSING_CATEGORY
                if v is None or (isinstance(v, float) and math.isnan(v))
                else v
                if isinstance(v, str)
                else category_label(v)
                for v in col.dictionary.to_pylist()
            ]
            + [MISSING_CATEGORY],
            dtype=object,
        )
        codes = pc.fill_null(col.indices, len(labels) - 1).to_numpy(zero_copy_only=False)
        cat[:, j] = labels[codes]
    return num, cat
