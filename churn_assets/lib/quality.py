"""Framework-free data-quality rules, validated with Great Expectations 1.x.

A :class:`Rule` is declared once and yields two things:

* a Great Expectations (GX) 1.x expectation, used by :func:`validate` to produce the verdict and
  the report (counts, percentages, sample values), and
* a polars expression (:meth:`Rule.bad_rows`) marking the offending rows, used by
  :func:`bad_row_reasons` to quarantine them. Asking GX for complete unexpected-index lists on
  millions of rows is far too slow, so GX only returns summaries (``result_format="SUMMARY"``
  with a partial unexpected list) and polars does the row-level work.

Both sides follow GX's null semantics so that their counts agree: ``not_null`` counts nulls (and
NaN in float columns, since pandas cannot tell them apart), while ``unique``, ``between`` and
``in_set`` ignore missing values; their percentages are relative to the non-missing rows.

This module must not import dagster, and imports great_expectations (about 4 s) and pandas
lazily, inside the functions that need them, so that importing it stays cheap.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

__all__ = [
    "KINDS",
    "TYPE_NAMES",
    "Rule",
    "RuleResult",
    "ValidationReport",
    "bad_row_reasons",
    "validate",
]

logger = logging.getLogger(__name__)

#: Rule kinds checked row by row (they have a :meth:`Rule.bad_rows` expression).
ROW_KINDS: frozenset[str] = frozenset({"not_null", "unique", "between", "in_set"})
#: Every supported rule kind.
KINDS: frozenset[str] = ROW_KINDS | {"type", "row_count", "column_exists"}
#: Kinds that are column map expectations in GX, and so honour ``mostly``.
_MOSTLY_KINDS: frozenset[str] = ROW_KINDS | {"type"}

# pandas dtype names accepted by ExpectColumnValuesToBeInTypeList for each logical type, as the
# validation copy made by `_to_pandas` encodes them. GX compares a non-object column's dtype with
# np.dtype(name) (so "datetime64[ns]" does not match "datetime64[us]": every unit is listed) and
# checks an object column value by value with isinstance (hence "str" and "bool").
# `_to_pandas` casts Categorical/Enum to String, drops time zones (after converting to UTC),
# casts Decimal to Float64 and stores Date as datetime64[s], a unit no polars Datetime maps to,
# so that dates and timestamps stay distinguishable.
_TYPE_LISTS: dict[str, tuple[str, ...]] = {
    "numeric": (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64",
    ),
    "string": ("str",),
    "datetime": ("datetime64[ns]", "datetime64[us]", "datetime64[ms]"),
    "date": ("datetime64[s]",),
    "boolean": ("bool",),
}  # fmt: skip
#: Logical type names accepted by rules of kind ``"type"``.
TYPE_NAMES: frozenset[str] = frozenset(_TYPE_LISTS)

_DATE_PANDAS_DTYPE = "datetime64[s]"
_SAMPLE_SIZE = 10
_GX_KEY = "churn_rule_key"


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One data-quality rule.

    Attributes:
        kind: ``"not_null" | "unique" | "between" | "in_set" | "type" | "row_count" |
            "column_exists"``.
        column: Column the rule applies to (``None`` only for ``row_count``).
        min_value: Inclusive lower bound (``between``, ``row_count``).
        max_value: Inclusive upper bound (``between``, ``row_count``).
        value_set: Allowed values (``in_set``); a list is converted to a tuple.
        dtype: Expected logical type for ``type``: ``"numeric" | "string" | "datetime" | "date" |
            "boolean"``. Categorical and Enum columns count as ``"string"``.
        mostly: Minimum fraction of good (non-missing) rows for the rule to pass, as GX
            ``mostly``; ignored by the table-level kinds.
        blocking: Whether a failure must stop downstream work.
        description: Human text; :meth:`describe` generates one when empty.
        hint: What to do about a failure, added to its message.
    """

    kind: str
    column: str | None
    min_value: float | None = None
    max_value: float | None = None
    value_set: tuple | None = None
    dtype: str | None = None
    mostly: float = 1.0
    blocking: bool = True
    description: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.kind != "row_count" and not self.column:
            raise ValueError(f"rule {self.kind!r} needs a column")
        if self.kind in {"between", "row_count"} and (
            self.min_value is None and self.max_value is None
        ):
            raise ValueError(f"rule {self.kind!r} needs min_value and/or max_value")
        if self.kind == "in_set":
            if self.value_set is None:
                raise ValueError("rule 'in_set' needs a value_set")
            if not isinstance(self.value_set, tuple):
                object.__setattr__(self, "value_set", tuple(self.value_set))
        if self.kind == "type" and self.dtype not in TYPE_NAMES:
            raise ValueError(f"rule 'type' needs dtype in {sorted(TYPE_NAMES)}, got {self.dtype!r}")
        if not 0.0 <= self.mostly <= 1.0:
            raise ValueError(f"mostly must be within [0, 1], got {self.mostly}")

    @property
    def row_level(self) -> bool:
        """Whether the rule is checked row by row (and so has a :meth:`bad_rows` expression)."""
        return self.kind in ROW_KINDS

    def describe(self) -> str:
        """Return :attr:`description`, or a generated one when it is empty."""
        if self.description:
            return self.description
        col = self.column
        if self.kind == "not_null":
            text = f"{col} must not be null"
        elif self.kind == "unique":
            text = f"{col} must be unique"
        elif self.kind == "between":
            parts = []
            if self.min_value is not None:
                parts.append(f"≥ {_fmt_num(self.min_value)}")
            if self.max_value is not None:
                parts.append(f"≤ {_fmt_num(self.max_value)}")
            text = f"{col} must be " + " and ".join(parts)
        elif self.kind == "in_set":
            text = f"{col} must be in {_fmt_set(self.value_set or ())}"
        elif self.kind == "type":
            text = f"{col} must be of type {self.dtype}"
        elif self.kind == "row_count":
            text = f"table must have {_fmt_bounds(self.min_value, self.max_value)} rows"
        else:
            text = f"column {col} must exist"
        if self.mostly < 1.0 and self.kind in _MOSTLY_KINDS:
            text += f" (for at least {_fmt_num(self.mostly * 100)}% of rows)"
        return text

    def bad_rows(self, schema: Mapping[str, Any] | None = None) -> pl.Expr | None:
        """Return a boolean expression, True where a row violates the rule (never null).

        Nulls are handled as GX does: ``not_null`` flags them, ``unique``/``between``/``in_set``
        never flag them. Returns ``None`` for the rules that are not row-level (``type``,
        ``row_count``, ``column_exists``): their failures are schema or table problems that
        quarantining rows cannot fix.

        Args:
            schema: The frame's schema (``df.schema``). When given, the expression matches GX
                exactly on polars dtypes where that needs the dtype: NaN counts as missing in
                float columns (pandas cannot tell it from null), ``value_set`` is cast to the
                column's dtype (polars >= 2 refuses ``is_in`` across dtypes), and categorical
                columns are compared as strings. :func:`bad_row_reasons` always passes it.
        """
        if not self.row_level:
            return None
        col = pl.col(self.column)
        dtype = schema.get(self.column) if schema is not None else None
        missing = col.is_null()
        if dtype is not None and dtype.is_float():
            missing = missing | col.is_nan()
        present = ~missing

        if self.kind == "not_null":
            expr = missing
        elif self.kind == "unique":
            expr = col.is_duplicated() & present
        elif self.kind == "between":
            out_of_range = pl.lit(False)
            if self.min_value is not None:
                out_of_range = out_of_range | (col < self.min_value)
            if self.max_value is not None:
                out_of_range = out_of_range | (col > self.max_value)
            expr = out_of_range.fill_null(False) & present
        else:  # in_set
            values = list(self.value_set or ())
            if dtype is None:
                allowed = col.is_in(values)
            elif isinstance(dtype, pl.Categorical | pl.Enum):
                allowed = col.cast(pl.String).is_in(
                    pl.Series(values, dtype=pl.String, strict=False).implode()
                )
            else:
                allowed = col.is_in(pl.Series(values, dtype=dtype, strict=False).implode())
            expr = (~allowed).fill_null(False) & present
        return expr.fill_null(False)

    def reason(self) -> str:
        """Short row-level text, used in the ``_reason`` column of :func:`bad_row_reasons`."""
        col = f"column {self.column!r}"
        if self.kind == "not_null":
            return f"{col} is null"
        if self.kind == "unique":
            return f"{col} is duplicated"
        if self.kind == "between":
            return f"{col} {_fmt_range_violation(self.min_value, self.max_value)}"
        if self.kind == "in_set":
            return f"{col} not in {_fmt_set(self.value_set or ())}"
        return self.describe()

    def _gx_kwargs(self) -> tuple[str, dict[str, Any]]:
        """Return (GX expectation class name, constructor kwargs) for this rule."""
        mostly = {"mostly": self.mostly} if self.mostly < 1.0 else {}
        if self.kind == "not_null":
            return "ExpectColumnValuesToNotBeNull", {"column": self.column, **mostly}
        if self.kind == "unique":
            return "ExpectColumnValuesToBeUnique", {"column": self.column, **mostly}
        if self.kind == "between":
            bounds = {
                k: v
                for k, v in (("min_value", self.min_value), ("max_value", self.max_value))
                if v is not None
            }
            return "ExpectColumnValuesToBeBetween", {"column": self.column, **bounds, **mostly}
        if self.kind == "in_set":
            values = [_gx_value(v) for v in self.value_set or ()]
            return "ExpectColumnValuesToBeInSet", {
                "column": self.column,
                "value_set": values,
                **mostly,
            }
        if self.kind == "type":
            return "ExpectColumnValuesToBeInTypeList", {
                "column": self.column,
                "type_list": list(_TYPE_LISTS[self.dtype or ""]),
                **mostly,
            }
        if self.kind == "row_count":
            bounds = {}
            if self.min_value is not None:
                bounds["min_value"] = math.ceil(self.min_value)
            if self.max_value is not None:
                bounds["max_value"] = math.floor(self.max_value)
            return "ExpectTableRowCountToBeBetween", bounds
        return "ExpectColumnToExist", {"column": self.column}

    def to_dict(self) -> dict[str, Any]:
        """Return a json-serialisable description of the rule."""
        return {
            "kind": self.kind,
            "column": self.column,
            "min_value": self.min_value,
            "max_value": self.max_value,
            "value_set": None if self.value_set is None else [_jsonable(v) for v in self.value_set],
            "dtype": self.dtype,
            "mostly": self.mostly,
            "blocking": self.blocking,
            "description": self.describe(),
        }


# --------------------------------------------------------------------------------------------
# Results and report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule.

    ``unexpected_count`` is the number of bad rows. For ``row_count`` and ``column_exists`` it is
    0 or 1. When a column rule cannot be evaluated because its column is missing, every row counts
    as bad; for a failed ``type`` rule every non-null value does. ``unexpected_percent`` uses GX's
    denominator: all rows for ``not_null``, the non-missing rows for the other column rules.
    """

    rule: Rule
    success: bool
    unexpected_count: int
    element_count: int
    unexpected_percent: float
    sample_values: list
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return a json-serialisable dict."""
        return {
            "rule": self.rule.to_dict(),
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "unexpected_percent": self.unexpected_percent,
            "sample_values": [_jsonable(v) for v in self.sample_values],
            "message": self.message,
        }


@dataclass(frozen=True)
class ValidationReport:
    """All rule results for one table."""

    table: str
    results: list[RuleResult]
    success: bool
    blocking_success: bool

    def failures(self) -> list[RuleResult]:
        """Return the results of the rules that failed, in rule order."""
        return [r for r in self.results if not r.success]

    def blocking_failures(self) -> list[RuleResult]:
        """Return the results of the blocking rules that failed."""
        return [r for r in self.results if not r.success and r.rule.blocking]

    def to_markdown(self) -> str:
        """Render the report as a markdown table (rule, column, bad rows, %, ok, detail)."""
        verdict = "passed" if self.success else ("failed" if not self.blocking_success else "warn")
        lines = [
            f"**{_md_escape(self.table)}**: {verdict} "
            f"({len(self.results) - len(self.failures())}/{len(self.results)} rules passed)",
            "",
            "| rule | column | bad rows | % | ok | detail |",
            "| --- | --- | ---: | ---: | :---: | --- |",
        ]
        for r in self.results:
            if r.success:
                ok = "✅"
            elif r.rule.blocking:
                ok = "❌"
            else:
                ok = "⚠️"
            lines.append(
                f"| {r.rule.kind} | {_md_escape(r.rule.column or '')} | "
                f"{r.unexpected_count:,} | {_fmt_pct(r.unexpected_percent)} | {ok} | "
                f"{_md_escape(r.message)} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Return a json-serialisable dict."""
        return {
            "table": self.table,
            "success": self.success,
            "blocking_success": self.blocking_success,
            "n_rules": len(self.results),
            "n_failed": len(self.failures()),
            "results": [r.to_dict() for r in self.results],
        }


# --------------------------------------------------------------------------------------------
# Validation with Great Expectations
# --------------------------------------------------------------------------------------------


def validate(df: pl.DataFrame, rules: Sequence[Rule], table: str) -> ValidationReport:
    """Run the rules as one GX 1.x ExpectationSuite on an ephemeral context over ``df``.

    ``df`` is converted to pandas (see :func:`_to_pandas`), the whole frame is validated (no
    sampling) with ``result_format="SUMMARY"`` and a partial unexpected list of 10 values.
    Rules on a column missing from ``df`` (except ``column_exists``, which GX checks) produce a
    failed result naming the column without being sent to GX; a rule GX cannot evaluate (e.g.
    ``between`` on a string column) produces a failed result carrying GX's error message.
    The context is in memory only: nothing is written to disk, progress bars and analytics are
    off.
    """
    rules = list(rules)
    n_rows = df.height
    columns = set(df.columns)

    kinds: dict[str, set[str]] = {}
    for rule in rules:
        if rule.column in columns:
            kinds.setdefault(rule.column, set()).add(rule.kind)
    # a timestamp column checked for nulls and bounds only reaches GX as float µs since the
    # epoch: GX compares datetime64 values as objects (54M lines: minutes and +7 GB)
    as_epoch = {
        c
        for c, ks in kinds.items()
        if ks <= {"not_null", "between"} and isinstance(df.schema[c], pl.Datetime)
    }

    # Rules sharing the same GX configuration (e.g. differing only in `blocking`) share one
    # expectation: GX de-duplicates equal expectations in a suite.
    keys: dict[tuple, int] = {}
    rule_keys: list[int | None] = []
    specs: list[tuple[str, dict[str, Any]]] = []
    for rule in rules:
        if rule.kind not in {"row_count", "column_exists"} and rule.column not in columns:
            rule_keys.append(None)
            continue
        name, kwargs = rule._gx_kwargs()
        if rule.column in as_epoch:
            kwargs = {
                k: _epoch_us(v) if k in ("min_value", "max_value") else v for k, v in kwargs.items()
            }
        key = (name, repr(sorted(kwargs.items())))
        if key not in keys:
            keys[key] = len(specs)
            specs.append((name, kwargs))
        rule_keys.append(keys[key])

    gx_results: dict[int, Any] = {}
    pdf = None
    if specs:
        referenced = {r.column for r, k in zip(rules, rule_keys, strict=True) if k is not None}
        pdf = _to_pandas(
            df,
            [c for c in df.columns if c in referenced],
            nullness_only={c for c, ks in kinds.items() if ks == {"not_null"}},
            as_epoch=as_epoch,
        )
        gx_results = _run_suite(pdf, specs, table)

    results: list[RuleResult] = []
    for rule, key in zip(rules, rule_keys, strict=True):
        if key is None:
            results.append(_missing_column_result(rule, n_rows))
        else:
            results.append(_to_rule_result(rule, gx_results.get(key), df, pdf))

    return ValidationReport(
        table=table,
        results=results,
        success=all(r.success for r in results),
        blocking_success=all(r.success for r in results if r.rule.blocking),
    )


def _gx():
    """Import great_expectations with analytics off (lazy: the import takes ~4 s)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def _new_context():
    """Return a fresh in-memory GX context: no files, no progress bars, no analytics."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suite(pdf: Any, specs: list[tuple[str, dict[str, Any]]], table: str) -> dict[int, Any]:
    """Validate ``pdf`` against the expectations in ``specs``; return results by spec index."""
    gx = _gx()
    context = _new_context()
    source = context.data_sources.add_pandas(name=f"{table}_source")
    asset = source.add_dataframe_asset(name=table)
    batch_definition = asset.add_batch_definition_whole_dataframe(name=f"{table}_whole")
    batch = batch_definition.get_batch(batch_parameters={"dataframe": pdf})

    suite = gx.ExpectationSuite(name=f"{table}_quality")
    for index, (name, kwargs) in enumerate(specs):
        expectation_cls = getattr(gx.expectations, name)
        suite.add_expectation(expectation_cls(**kwargs, meta={_GX_KEY: index}))

    outcome = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": _SAMPLE_SIZE},
    )
    by_key: dict[int, Any] = {}
    for result in outcome.results:
        meta = result.expectation_config.meta or {}
        if _GX_KEY in meta:
            by_key[int(meta[_GX_KEY])] = result
    return by_key


def _epoch_us(value: Any) -> Any:
    """A datetime bound as float µs since 1970-01-01 (naive = UTC), as :func:`_to_pandas`
    gives a column in ``as_epoch``; anything else as it is."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return (value - _dt.datetime(1970, 1, 1)) / _dt.timedelta(microseconds=1)
    return value


def _to_pandas(
    df: pl.DataFrame,
    columns: Sequence[str],
    nullness_only: set[str] | frozenset = frozenset(),
    as_epoch: set[str] | frozenset = frozenset(),
) -> Any:
    """Convert ``columns`` of ``df`` to a numpy-backed pandas frame that GX handles predictably.

    Categorical/Enum become strings (object), tz-aware datetimes become naive UTC, Decimal
    becomes Float64 and Date becomes ``datetime64[s]`` (see ``_TYPE_LISTS``). Nulls become
    NaN/None/NaT as usual; integer columns with nulls become float64. A text column in
    ``nullness_only`` (checked by ``not_null`` rules alone) becomes float32, NaN where null:
    the same verdict and counts without a Python string a row (54M customer ids held 3 GB).
    A datetime column in ``as_epoch`` becomes float64 µs since the epoch (UTC).
    """
    import pandas as pd

    if not columns:  # e.g. only row_count rules: keep the row count
        return pd.DataFrame(index=pd.RangeIndex(df.height))
    df = df.select(columns)
    casts: list[pl.Expr] = []
    date_columns: list[str] = []
    for name, dtype in df.schema.items():
        if name in as_epoch:
            casts.append(pl.col(name).dt.epoch("us").cast(pl.Float64))
        elif name in nullness_only and (
            dtype in (pl.String, pl.Binary) or isinstance(dtype, pl.Categorical | pl.Enum)
        ):
            casts.append(
                pl.when(pl.col(name).is_not_null()).then(pl.lit(0.0, pl.Float32)).alias(name)
            )
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            casts.append(pl.col(name).cast(pl.String))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            casts.append(pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None))
        elif isinstance(dtype, pl.Decimal):
            casts.append(pl.col(name).cast(pl.Float64))
        elif dtype == pl.Date:
            date_columns.append(name)
    if casts:
        df = df.with_columns(casts)
    pdf = df.to_pandas()
    for name in date_columns:
        pdf[name] = pdf[name].astype(_DATE_PANDAS_DTYPE)
    return pdf


def _missing_column_result(rule: Rule, n_rows: int) -> RuleResult:
    return RuleResult(
        rule=rule,
        success=False,
        unexpected_count=n_rows,
        element_count=n_rows,
        unexpected_percent=100.0 if n_rows else 0.0,
        sample_values=[],
        message=f"column {rule.column!r} is missing, so rule {rule.kind!r} could not be evaluated",
    )


def _exception_message(gx_result: Any) -> str | None:
    """Return the first error message in a GX result's exception_info, if any."""
    info = getattr(gx_result, "exception_info", None) or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            message = str(item.get("exception_message") or "unknown error").strip()
            return message.splitlines()[0][:300] if message else "unknown error"
    return None


def _to_rule_result(rule: Rule, gx_result: Any, df: pl.DataFrame, pdf: Any) -> RuleResult:
    """Translate one GX ExpectationValidationResult into a :class:`RuleResult`."""
    n_rows = df.height
    if gx_result is None:  # should not happen; never report a silent pass
        return RuleResult(rule, False, 0, n_rows, 0.0, [], f"{_subject(rule)}: no GX result")
    error = _exception_message(gx_result)
    if error is not None:
        return RuleResult(
            rule=rule,
            success=False,
            unexpected_count=0,
            element_count=n_rows,
            unexpected_percent=0.0,
            sample_values=[],
            message=f"{_subject(rule)}: rule {rule.kind!r} could not be evaluated: {error}",
        )
    success = bool(gx_result.success)
    res = dict(gx_result.result or {})

    if rule.kind == "row_count":
        observed = int(res.get("observed_value", n_rows))
        message = (
            f"table has {observed:,} rows, expected {_fmt_bounds(rule.min_value, rule.max_value)}"
        )
        return _table_result(rule, success, observed, message)
    if rule.kind == "column_exists":
        message = f"column {rule.column!r} " + ("exists" if success else "is missing")
        return _table_result(rule, success, n_rows, message)
    if rule.kind == "type" and "unexpected_count" not in res:
        return _type_result(rule, success, df, pdf)

    element_count = int(res.get("element_count", n_rows) or 0)
    unexpected = int(res.get("unexpected_count", 0) or 0)
    missing = int(res.get("missing_count", 0) or 0)
    percent = float(res.get("unexpected_percent") or 0.0)
    polars_dtype = df.schema.get(rule.column or "")
    samples = [_sample(v, polars_dtype) for v in res.get("partial_unexpected_list") or []]
    samples = samples[:_SAMPLE_SIZE]

    if rule.kind == "not_null":
        basis = f"{element_count:,} rows"
        what = "are null"
    else:
        nonmissing = element_count - missing
        basis = f"{nonmissing:,} non-null rows" if missing else f"{element_count:,} rows"
        if rule.kind == "unique":
            what = "have duplicated values"
        elif rule.kind == "between":
            what = _fmt_range_violation(rule.min_value, rule.max_value)
        elif rule.kind == "in_set":
            what = f"not in {_fmt_set(rule.value_set or ())}"
        else:
            what = f"are not of type {rule.dtype}"
    message = f"{_subject(rule)}: {unexpected:,} of {basis} ({_fmt_pct(percent)}) {what}"
    message += _mostly_note(rule, success, unexpected)
    if not success and rule.hint:
        message += f" ({rule.hint})"
    return RuleResult(rule, success, unexpected, element_count, percent, samples, message)


def _table_result(rule: Rule, success: bool, element_count: int, message: str) -> RuleResult:
    """Result of a table-level rule: one violation (1) or none (0)."""
    return RuleResult(
        rule=rule,
        success=success,
        unexpected_count=0 if success else 1,
        element_count=element_count,
        unexpected_percent=0.0 if success else 100.0,
        sample_values=[],
        message=message,
    )


def _type_result(rule: Rule, success: bool, df: pl.DataFrame, pdf: Any) -> RuleResult:
    """Result of a ``type`` rule checked on the column's dtype (GX's non-object path)."""
    column = rule.column or ""
    series = df.get_column(column)
    pandas_dtype = str(pdf[column].dtype) if pdf is not None else "?"
    dtypes = f"polars {series.dtype}, pandas {pandas_dtype}"
    if success:
        message = f"column {column!r} is {rule.dtype} ({dtypes})"
        return RuleResult(rule, True, 0, df.height, 0.0, [], message)
    non_null = series.drop_nulls()
    samples = [_sample(v, series.dtype) for v in non_null.head(_SAMPLE_SIZE).to_list()]
    return RuleResult(
        rule=rule,
        success=False,
        unexpected_count=non_null.len(),
        element_count=df.height,
        unexpected_percent=100.0 if non_null.len() else 0.0,
        sample_values=samples,
        message=f"column {column!r} is not {rule.dtype} ({dtypes})",
    )


# --------------------------------------------------------------------------------------------
# Quarantine with polars
# --------------------------------------------------------------------------------------------


def bad_row_reasons(df: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """Return the rows violating a row-level rule, plus ``_rule``, ``_column`` and ``_reason``.

    A row violating several rules appears once, with the rule kinds, columns and reasons each
    joined by ``"; "`` in rule order (rules with the same kind, column and reason, e.g. differing
    only in ``blocking``, count once). Row order and the original columns are kept (existing
    columns named ``_rule``/``_column``/``_reason`` are overwritten). Table-level rules
    (``type``, ``row_count``, ``column_exists``) are ignored, and so, with a warning, are rules
    whose column is missing or whose expression polars cannot evaluate (e.g. ``between`` on a
    string column): :func:`validate` reports those as failures.
    """
    schema = df.schema
    masks: list[tuple[Rule, pl.Expr]] = []
    seen: set[tuple[str, str | None, str]] = set()
    for rule in rules:
        if not rule.row_level or (rule.kind, rule.column, rule.reason()) in seen:
            continue
        seen.add((rule.kind, rule.column, rule.reason()))
        if rule.column not in schema:
            logger.warning("quality rule %s skipped: column %r is missing", rule.kind, rule.column)
            continue
        expr = rule.bad_rows(schema)
        if expr is not None:
            masks.append((rule, expr.alias(f"__bad_{len(masks)}")))

    try:
        mask_frame = df.select([expr for _, expr in masks]) if masks else None
    except pl.exceptions.PolarsError:
        kept = []
        for rule, expr in masks:
            try:
                df.select(expr)
            except pl.exceptions.PolarsError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
                logger.warning(
                    "quality rule %s on %r skipped: %s", rule.kind, rule.column, first_line
                )
            else:
                kept.append((rule, expr))
        masks = kept
        mask_frame = df.select([expr for _, expr in masks]) if masks else None

    extra = {"_rule": pl.String, "_column": pl.String, "_reason": pl.String}
    base = df.drop([c for c in extra if c in df.columns])
    if mask_frame is None or not masks:
        return base.clear().with_columns([pl.lit(None, dtype=t).alias(c) for c, t in extra.items()])

    names = mask_frame.columns
    # Filter first, then put the (few) bad rows beside their masks: a horizontal concat of
    # the whole frame would copy it whenever the chunks of the two sides differ.
    flagged = mask_frame.select(pl.any_horizontal([pl.col(n) for n in names])).to_series()

    def joined(values: list[str]) -> pl.Expr:
        return pl.concat_str(
            [pl.when(pl.col(n)).then(pl.lit(v)) for n, v in zip(names, values, strict=True)],
            separator="; ",
            ignore_nulls=True,
        )

    rules_used = [rule for rule, _ in masks]
    return (
        pl.concat([base.filter(flagged), mask_frame.filter(flagged)], how="horizontal")
        .with_columns(
            joined([r.kind for r in rules_used]).alias("_rule"),
            joined([r.column or "" for r in rules_used]).alias("_column"),
            joined([r.reason() for r in rules_used]).alias("_reason"),
        )
        .drop(names)
    )


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _subject(rule: Rule) -> str:
    return f"column {rule.column!r}" if rule.column else "table"


def _mostly_note(rule: Rule, success: bool, unexpected: int) -> str:
    if rule.mostly >= 1.0 or unexpected == 0:
        return ""
    if success:
        return f" (tolerated: mostly={_fmt_num(rule.mostly)})"
    return f" (exceeds mostly={_fmt_num(rule.mostly)})"


def _fmt_num(value: Any) -> str:
    """Format a number without exponent noise: 1e6 -> '1000000', 0.5 -> '0.5'; a date or
    time bound in ISO 8601."""
    if isinstance(value, _dt.date):
        return value.isoformat(sep=" ") if isinstance(value, _dt.datetime) else value.isoformat()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _fmt_pct(percent: float) -> str:
    if percent == 0 or percent >= 0.01:
        return f"{percent:.2f}%"
    return f"{percent:.2g}%"


def _fmt_set(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(_jsonable(v)) for v in list(values)[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} values)"
    return "{" + shown + "}"


def _fmt_bounds(min_value: float | None, max_value: float | None) -> str:
    if min_value is not None and max_value is not None:
        return f"between {_fmt_num(min_value)} and {_fmt_num(max_value)}"
    if min_value is not None:
        return f"≥ {_fmt_num(min_value)}"
    return f"≤ {_fmt_num(max_value if max_value is not None else math.inf)}"


def _fmt_range_violation(min_value: float | None, max_value: float | None) -> str:
    if min_value is not None and max_value is not None:
        return f"outside [{_fmt_num(min_value)}, {_fmt_num(max_value)}]"
    if min_value is not None:
        return f"below {_fmt_num(min_value)}"
    return f"above {_fmt_num(max_value if max_value is not None else math.inf)}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _jsonable(value: Any) -> Any:
    """Return ``value`` as a json-serialisable scalar (str() as a last resort)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    isoformat = getattr(value, "isoformat", None)  # pandas Timestamp
    if callable(isoformat):
        try:
            return isoformat()
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _gx_value(value: Any) -> Any:
    """A value_set member as it compares in the pandas copy made by :func:`_to_pandas`.

    Dates become midnight datetimes and aware datetimes naive UTC (pandas' ``isin`` on
    datetime64 columns only matches datetime-like values); numpy scalars become Python ones.
    """
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(_dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime.combine(value, _dt.time())
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _sample(value: Any, polars_dtype: Any) -> Any:
    """JSON-safe sample value; floats from integer columns (pandas upcast) become ints again."""
    value = _jsonable(value)
    if (
        isinstance(value, float)
        and polars_dtype is not None
        and polars_dtype.is_integer()
        and value.is_integer()
    ):
        return int(value)
    if isinstance(value, float) and isinstance(polars_dtype, pl.Datetime):
        # a column GX saw as µs since the epoch (see ``as_epoch`` in :func:`_to_pandas`)
        return (_dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=value)).isoformat()
    if isinstance(value, str) and polars_dtype == pl.Date and value.endswith("T00:00:00"):
        return value[: -len("T00:00:00")]
    return value
