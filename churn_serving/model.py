"""A loaded deployment (:class:`ModelBundle`): verified models, schema, customer table, and
the fallback chain that answers every record.

Fallback chain, per output and per record (levels in order):

1. ``champion``: the manifest's ``classifier`` / ``regressor`` pipeline;
2. ``fallback_model``: the manifest's simple ``classifier_fallback`` / ``regressor_fallback``;
3. ``business_rules``: the manifest's one-feature rule (``business_rules``: above / at or
   below ``threshold`` of ``feature``);
4. ``base_rate``: the training base rates (``base_rates``).

A version without a value model (a churn-only data set: no ``regressor`` roles) answers
``expected_total_sales`` as null at level ``no_value_model``.

Each model answers through ONNX Runtime when the version holds its verified ONNX graph and
the graph agrees again with the pipeline's stored answers when the version is loaded;
otherwise the scikit-learn pipeline answers (when scikit-learn is installed; the slim
serving image has none, and such a model is then skipped by the fallback chain).

Id lookups: when a version or a new ``current_features`` table is loaded, every customer of
the table is answered once through this chain (in chunks, one thread, in the poll thread
before the swap) and kept beside the table (:attr:`CustomerTable.answers`); a lookup then
takes its customer's answer instead of calling the models: the same answer the request would
get, since the models and the features are the same. When a model raises during that pass
(or ``CHURN_SERVING_PRECOMPUTE_LOOKUPS=false``), lookups run the chain per request, as
feature records always do.

A level is skipped for the whole batch when its model is absent or raises, and for single
records when it returns a non-finite value (or a probability outside [0, 1]); rules skip
records whose rule feature is missing (null). The churn label is ``probability >=
threshold`` with the threshold stored for the model that answered (the champion's for the
rule and base-rate levels).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from churn_assets.lib import deployment as dep
from churn_serving.onnx_predictor import OnnxPredictor, compare
from churn_serving.schema import (
    DEFAULT_SLACK,
    FeatureSchema,
    RequestError,
    frame_to_arrays,
)

log = logging.getLogger("churn_serving.model")

LEVELS = ("champion", "fallback_model", "business_rules", "base_rate", "no_value_model")
#: Level of ``expected_total_sales`` (answered as null) when the version has no value model.
NO_VALUE_MODEL = LEVELS.index("no_value_model")
OUTPUTS = ("churn_probability", "expected_total_sales")
FEATURES_TABLE = "assets/current_features.parquet"
#: Verification rows and each pipeline's answers, written with the version.
VERIFICATION_FILE = "onnx_verification.parquet"
#: Prefix of category-share features (a category the table lacks has share 0).
CATEGORY_SHARE_PREFIX = "cat_share_"
#: Rows per model call when the customer table's answers are computed.
ANSWER_CHUNK = 4096
#: Tables up to this many customers keep each id lookup's answer as encoded JSON once it has
#: been asked for (about 330 bytes per customer asked); larger ones encode per request.
ANSWER_JSON_MAX_ROWS = 2_000_000


class IntegrityError(dep.DeploymentError):
    """A version's manifest or an artifact is missing or fails its sha256: refused."""


def utcnow() -> str:
    """Now, ISO 8601 in UTC."""
    return dt.datetime.now(dt.UTC).isoformat()


class FallbackStats:
    """Process-wide counts of answers by output and level, and model errors by role."""

    def __init__(self, metrics: Any = None) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self.since = utcnow()
        self.records = 0
        self.by_level: dict[str, dict[str, int]] = {o: dict.fromkeys(LEVELS, 0) for o in OUTPUTS}
        self.errors: dict[str, dict[str, Any]] = {}

    def add(self, churn_counts: np.ndarray, sales_counts: np.ndarray, n: int) -> None:
        """Add per-level counts (arrays of len(LEVELS)) of one request."""
        with self._lock:
            self.records += n
            for out, counts in zip(OUTPUTS, (churn_counts, sales_counts), strict=True):
                d = self.by_level[out]
                for level, c in zip(LEVELS, counts.tolist(), strict=True):
                    d[level] += int(c)

    def add_uniform(self, churn_level: int, sales_level: int, n: int) -> None:
        """Add n records answered at one level per output (level codes)."""
        with self._lock:
            self.records += n
            self.by_level["churn_probability"][LEVELS[churn_level]] += n
            self.by_level["expected_total_sales"][LEVELS[sales_level]] += n

    def model_error(self, role: str, error: BaseException) -> None:
        """Record that ``role`` raised at predict time."""
        with self._lock:
            e = self.errors.setdefault(role, {"count": 0})
            e["count"] += 1
            e["last_error"] = f"{type(error).__name__}: {error}"[:500]
            e["last_at"] = utcnow()
        if self.metrics is not None:
            self.metrics.model_errors.labels(role=role).inc()

    def snapshot(self) -> dict[str, Any]:
        """JSON-able copy for /fallback-stats."""
        with self._lock:
            out: dict[str, Any] = {
                "since": self.since,
                "records": self.records,
                "levels": list(LEVELS),
                "by_output": {k: dict(v) for k, v in self.by_level.items()},
                "model_errors": {k: dict(v) for k, v in self.errors.items()},
            }
        if self.records:
            out["fallback_share"] = {
                k: 1.0 - v["champion"] / self.records for k, v in out["by_output"].items()
            }
        return out


def _short(value: str, limit: int = 100) -> str:
    """``repr`` of an id from a request, cut to ``limit`` characters (a 10 MB id is not
    echoed back whole)."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} chars)"


def plain_customer_id(cid: str) -> str:
    """A customer id as ingestion stores it (``churn_assets.lib.ingest.plain_id``): a
    number a float column exported loses its ``.0`` (``17850.0``), or its ``,0`` with a
    decimal comma (``15240,0``); other ids (``C0003.0``) are kept as they are."""
    return re.sub(r"^(\d+)[.,]0$", r"\1", cid)


class UnknownCustomers(Exception):
    """Some customer ids are not in the current_features table."""

    def __init__(self, positions: list[int], ids: list[str]):
        super().__init__(f"unknown customer ids: {ids[:5]}")
        self.positions = positions
        self.ids = ids


@dataclass
class ChainResult:
    """Answers of the fallback chain for n records. ``churn_uniform`` / ``sales_uniform``
    are the level code every record shares (None when the levels differ): the usual case,
    every record answered by the champions, is then counted without a histogram."""

    churn_probability: np.ndarray
    churn_level: np.ndarray  # int8 index into LEVELS
    threshold: np.ndarray
    churn_label: np.ndarray
    expected_total_sales: np.ndarray
    sales_level: np.ndarray
    churn_uniform: int | None = None
    sales_uniform: int | None = None

    def __len__(self) -> int:
        return len(self.churn_probability)

    def take(self, rows: Any) -> ChainResult:
        """The answers of ``rows`` (indices), in that order."""
        return ChainResult(
            self.churn_probability[rows],
            self.churn_level[rows],
            self.threshold[rows],
            self.churn_label[rows],
            self.expected_total_sales[rows],
            self.sales_level[rows],
            self.churn_uniform,
            self.sales_uniform,
        )

    @classmethod
    def concat(cls, parts: list[ChainResult]) -> ChainResult:
        """Parts one after the other."""
        if len(parts) == 1:
            return parts[0]
        churn = {p.churn_uniform for p in parts}
        sales = {p.sales_uniform for p in parts}
        return cls(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _RESULT_ARRAYS),
            churn.pop() if len(churn) == 1 else None,
            sales.pop() if len(sales) == 1 else None,
        )

    @classmethod
    def scatter(cls, n: int, parts: list[tuple[Any, ChainResult]]) -> ChainResult:
        """n answers put together from ``(positions, answers)`` parts covering 0..n-1."""
        arrays = [
            np.empty(n, dtype=np.int8 if "level" in name or "label" in name else float)
            for name in _RESULT_ARRAYS
        ]
        for rows, part in parts:
            for out, name in zip(arrays, _RESULT_ARRAYS, strict=True):
                out[rows] = getattr(part, name)
        churn = {p.churn_uniform for _, p in parts}
        sales = {p.sales_uniform for _, p in parts}
        return cls(
            *arrays,
            churn.pop() if len(churn) == 1 else None,
            sales.pop() if len(sales) == 1 else None,
        )


_RESULT_ARRAYS = (
    "churn_probability",
    "churn_level",
    "threshold",
    "churn_label",
    "expected_total_sales",
    "sales_level",
)


@dataclass(frozen=True)
class CustomerTable:
    """The latest ``current_features`` table, as arrays for id lookups: ``index`` maps a
    customer id to its row of ``num`` (float64) and ``cat`` (canonical strings).

    ``answers`` holds every customer's answer through the version's fallback chain,
    computed once when the table or the version is loaded (off the request path), so that
    an id lookup indexes arrays instead of calling the models; ``answers_info`` says how long
    that took, or why lookups are answered per request instead (a model raised, or
    ``CHURN_SERVING_PRECOMPUTE_LOOKUPS=false``)."""

    index: dict[str, int]
    num: np.ndarray
    cat: np.ndarray
    source: str
    signature: Any
    loaded_at: str
    answers: ChainResult | None = None
    answers_info: dict[str, Any] | None = None
    #: Per row, that customer's answer as encoded JSON once a lookup has asked for it (None
    #: until then); set with ``answers`` (same version), absent for very large tables.
    answer_json: list[bytes | None] | None = None
    #: Row → {feature: value} of the categories the version did not see in training, for the
    #: rows that have any: a lookup reports them as a feature record with the row would.
    unseen: dict[int, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_frame(
        cls, frame: Any, schema: FeatureSchema, source: str, signature: Any
    ) -> CustomerTable:
        """Build from a table (pyarrow or polars) with ``customer_id`` and the deployed
        feature columns. Extra columns are ignored; a category-share feature the table lacks
        (a category it does not know) is 0 for every customer."""
        import pyarrow as pa

        table = frame if isinstance(frame, pa.Table) else frame.to_arrow()
        have = set(table.column_names)
        fill = [c for c in schema.numeric if c not in have and c.startswith(CATEGORY_SHARE_PREFIX)]
        missing = [c for c in ["customer_id", *schema.columns] if c not in have and c not in fill]
        if missing:
            raise ValueError(f"{source} lacks the deployed feature columns {missing}")
        for c in fill:
            table = table.append_column(c, pa.array(np.zeros(table.num_rows)))
        ids = table.column("customer_id").cast(pa.string()).to_pylist()
        num, cat = frame_to_arrays(table, schema.numeric, schema.categorical)
        index = {cid: i for i, cid in enumerate(ids) if cid is not None}
        return cls(index, num, cat, source, signature, utcnow(), unseen=unseen_rows(cat, schema))

    def unseen_of(self, rows: list[int]) -> dict[int, dict[str, str]]:
        """Position in ``rows`` → the unseen categories of that row (rows without any are
        left out)."""
        if not self.unseen:
            return {}
        get = self.unseen.get
        return {k: u for k, r in enumerate(rows) if (u := get(r))}

    def rows(self, ids: list[str], positions: list[int]) -> list[int]:
        """Row numbers of ``ids``; :class:`UnknownCustomers` lists any id not found."""
        get = self.index.get
        idx = [get(i, -1) for i in ids]
        if -1 in idx:
            bad = [k for k, v in enumerate(idx) if v < 0]
            raise UnknownCustomers([positions[k] for k in bad], [ids[k] for k in bad])
        return idx

    def lookup(self, ids: list[str], positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of ``ids``; :class:`UnknownCustomers` lists any id not found."""
        idx = self.rows(ids, positions)
        return self.num[idx], self.cat[idx]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "source": self.source,
            "customers": len(self.index),
            "loaded_at": self.loaded_at,
            "answers": self.answers_info or {"precomputed": False},
        }


@dataclass
class ModelBundle:
    """Everything needed to answer /predict for one deployed version (immutable once
    built; a reload builds a new one and swaps the reference)."""

    version: str
    manifest: dict[str, Any]
    pointer: dict[str, Any]
    schema: FeatureSchema
    predictors: dict[str, Any]
    role_errors: dict[str, str] = field(default_factory=dict)
    customers: CustomerTable | None = None
    customers_error: str | None = None
    customers_signature: Any = None
    loaded_at: str = field(default_factory=utcnow)
    stats: FallbackStats | None = None
    #: Answer the customer table once when it is loaded (id lookups then index the answers).
    precompute_lookups: bool = True

    def __post_init__(self) -> None:
        # read once: the request path uses them for every record
        models = self.manifest.get("models") or {}
        t = (models.get("classifier") or {}).get("threshold")
        self._threshold = float(t) if t is not None else 0.5
        t = (models.get("classifier_fallback") or {}).get("threshold")
        self._fallback_threshold = float(t) if t is not None else self._threshold
        self._has_value_model = bool(models.get("regressor") or models.get("regressor_fallback"))

    # ------------------------------------------------------------------ properties

    @property
    def threshold(self) -> float:
        """The champion's stored threshold (0.5 if the manifest has none)."""
        return self._threshold

    @property
    def fallback_threshold(self) -> float:
        """The fallback classifier's stored threshold (the champion's if none)."""
        return self._fallback_threshold

    @property
    def has_value_model(self) -> bool:
        """Whether the version has a value model (``regressor`` roles)."""
        return self._has_value_model

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for /model-info."""
        models = {}
        for role, entry in (self.manifest.get("models") or {}).items():
            p = self.predictors.get(role)
            models[role] = {
                "candidate": entry.get("candidate"),
                "file": entry.get("file"),
                "sha256": entry.get("sha256"),
                "threshold": entry.get("threshold"),
                "metrics": entry.get("metrics"),
                "model_uri": entry.get("model_uri"),
                "registered_model": entry.get("registered_model"),
                "registered_version": entry.get("registered_version"),
                "loaded": p is not None,
                "load_error": self.role_errors.get(role),
                "runtime": getattr(p, "runtime", None),
                "runtime_reason": getattr(p, "reason", None),
                "verification": getattr(p, "verification", None),
                "onnx": entry.get("onnx"),
            }
        return {
            "version": self.version,
            "dataset": self.manifest.get("dataset"),
            "created_at": self.manifest.get("created_at"),
            "loaded_at": self.loaded_at,
            "pointer": {k: self.pointer.get(k) for k in ("version", "updated_at", "reason")},
            "features": {"numeric": self.schema.numeric, "categorical": self.schema.categorical},
            "models": models,
            "threshold": self.threshold,
            "base_rates": self.manifest.get("base_rates"),
            "business_rules": self.manifest.get("business_rules"),
            "fallback_levels": list(LEVELS),
            "has_value_model": self.has_value_model,
            "gate": self.manifest.get("gate"),
            "customers": self.customers.describe() if self.customers else None,
            "customers_error": self.customers_error,
        }

    # --------------------------------------------------------------------- predict

    def lookup_rows(
        self, ids: list[str], positions: list[int], *, columnar: bool = False
    ) -> list[int]:
        """Rows of known customers in the current_features table.

        Raises:
            RequestError: 404 naming unknown ids; 503 when the table is unavailable.
        """
        return self.find_rows(ids, positions, columnar=columnar)[0]

    def find_rows(
        self, ids: list[str], positions: list[int], *, columnar: bool = False
    ) -> tuple[list[int], bool]:
        """:meth:`lookup_rows`, and whether some id was found only in another spelling
        (``17850.0`` for ``17850``).

        Raises:
            RequestError: 404 naming unknown ids; 503 when the table is unavailable.
        """
        if self.customers is None:
            raise RequestError(
                503,
                "customer_id lookups are unavailable: "
                + (self.customers_error or "no current_features table"),
            )
        try:
            return self.customers.rows(ids, positions), False
        except UnknownCustomers as e:
            unknown = e
        plain = [plain_customer_id(cid) for cid in ids]
        if plain != ids:  # "17850.0" as a float column exported it: stored as "17850"
            try:
                return self.customers.rows(plain, positions), True
            except UnknownCustomers as still:  # named as sent
                sent = dict(zip(positions, ids, strict=True))
                unknown = UnknownCustomers(still.positions, [sent[p] for p in still.positions])
        definition = self.manifest.get("feature_definition") or {}
        days = definition.get("active_within_days")
        exits = definition.get("exit_events")
        why = "not in the latest current_features" + (
            f", which holds the customers active in the {days} days before its cut-off"
            if days
            else ""
        )
        if exits:
            why += (
                f"; customers whose last activity is an exit event ({', '.join(exits)}) "
                "are left out until they come back"
            )
        index = self.customers.index

        def near(cid: str) -> str:
            """A known id the unknown one may have meant: the same digits with the leading
            zeros a spreadsheet or an integer column dropped ("7" for "007")."""
            if not cid.isdigit() or len(cid) > 30:
                return ""
            for width in range(len(cid) + 1, len(cid) + 8):
                if cid.zfill(width) in index:
                    return (
                        f"; did you mean {cid.zfill(width)!r}? (ids are text: leading zeros count)"
                    )
            return ""

        detail = [
            {
                "loc": ["body", "columns", "customer_id", pos]
                if columnar
                else ["body", "records", pos, "customer_id"],
                "msg": f"unknown customer_id {_short(cid)} ({why}){near(str(cid))}",
                "type": "unknown_customer_id",
                "field": "customer_id",
            }
            for pos, cid in zip(unknown.positions[:100], unknown.ids[:100], strict=True)
        ]
        # detail names the first 100 (each with why); unknown_positions holds every one, so a
        # client can drop them all and send the rest again
        raise RequestError(
            404, detail, error_count=len(unknown.ids), unknown_positions=list(unknown.positions)
        )

    def lookup(self, ids: list[str], positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Features of known customers from the current_features table.

        Raises:
            RequestError: 404 naming unknown ids; 503 when the table is unavailable.
        """
        idx = self.lookup_rows(ids, positions)
        return self.customers.num[idx], self.customers.cat[idx]  # type: ignore[union-attr]

    def _run_model(
        self,
        role: str,
        num: np.ndarray,
        cat: np.ndarray,
        pending: np.ndarray | None,
        strict: bool = False,
        background: bool = False,
    ) -> np.ndarray | None:
        """``role``'s answers for the ``pending`` rows (None: every row); None when the model
        is absent or raises (``strict``: the error propagates instead of being counted)."""
        p = self.predictors.get(role)
        if p is None:
            return None
        try:
            if pending is not None:
                num, cat = num[pending], cat[pending]
            predict = getattr(p, "predict_background", None) if background else None
            out = (predict or p.predict)(num, cat)
            out = np.asarray(out, dtype=np.float64).reshape(-1)
            if len(out) != len(num):
                raise ValueError(f"{role} returned {len(out)} values for {len(num)} rows")
            return out
        except Exception as e:  # any model failure → next level
            if strict:
                raise
            log.warning("model %s failed at predict time: %s", role, e)
            if self.stats is not None:
                self.stats.model_error(role, e)
            return None

    def _chain(
        self,
        output: str,
        num: np.ndarray,
        cat: np.ndarray,
        roles: tuple[str, str],
        strict: bool = False,
        background: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(values, level codes, the level shared by every record or None)."""
        n = len(num)
        proba = output == "churn_probability"
        first = self._run_model(roles[0], num, cat, None, strict, background)
        if first is not None and _all_valid(first, proba):
            # the usual case: the champion answers every record
            return first, np.zeros(n, dtype=np.int8), 0
        everyone = np.arange(n)
        values = np.full(n, np.nan)
        levels = np.zeros(n, dtype=np.int8)
        pending = everyone
        if first is not None:
            ok = _valid(first, proba)
            values[ok] = first[ok]
            pending = everyone[~ok]
        for level, role in enumerate(roles):
            if level == 0:
                continue
            if not len(pending):
                break
            out = self._run_model(role, num, cat, pending, strict, background)
            if out is None:
                continue
            ok = _valid(out, proba)
            if ok.all():
                values[pending] = out
                levels[pending] = level
                pending = pending[:0]
            else:
                values[pending[ok]] = out[ok]
                levels[pending[ok]] = level
                pending = pending[~ok]
        if len(pending):
            rules = self.manifest.get("business_rules") or {}
            feat = rules.get("feature")
            above_v = rules.get(f"{output}_above")
            below_v = rules.get(f"{output}_at_or_below")
            thr = rules.get("threshold")
            if feat in self.schema.numeric and None not in (above_v, below_v, thr):
                x = num[pending, self.schema.numeric.index(feat)]
                has = ~np.isnan(x)
                hit = pending[has]
                values[hit] = np.where(x[has] > float(thr), float(above_v), float(below_v))
                levels[hit] = 2
                pending = pending[~has]
        if len(pending):
            base = (self.manifest.get("base_rates") or {}).get(output)
            values[pending] = float(base) if base is not None else 0.0
            levels[pending] = 3
        first_level = int(levels[0])
        return values, levels, first_level if (levels == first_level).all() else None

    def predict_arrays(
        self, num: np.ndarray, cat: np.ndarray, *, strict: bool = False, background: bool = False
    ) -> ChainResult:
        """Answer every row through the fallback chain (never raises for model failures;
        with ``strict`` a model's error propagates instead). ``background``: models run on
        one thread whatever the batch size (work off the request path)."""
        n = len(num)
        proba, churn_level, churn_uniform = self._chain(
            "churn_probability", num, cat, ("classifier", "classifier_fallback"), strict, background
        )
        if self._has_value_model:
            sales, sales_level, sales_uniform = self._chain(
                "expected_total_sales",
                num,
                cat,
                ("regressor", "regressor_fallback"),
                strict,
                background,
            )
            sales = np.maximum(sales, 0.0)
        else:
            sales = np.full(n, np.nan)
            sales_level = np.full(n, NO_VALUE_MODEL, dtype=np.int8)
            sales_uniform = NO_VALUE_MODEL
        if churn_uniform == 1:
            threshold = np.full(n, self._fallback_threshold)
        elif churn_uniform is not None:
            threshold = np.full(n, self._threshold)
        else:
            threshold = np.where(churn_level == 1, self._fallback_threshold, self._threshold)
        label = (proba >= threshold).astype(np.int8)
        return ChainResult(
            proba, churn_level, threshold, label, sales, sales_level, churn_uniform, sales_uniform
        )

    def answer_table(self, table: CustomerTable | None) -> CustomerTable | None:
        """``table`` with every customer's answer (:attr:`CustomerTable.answers`), computed in
        chunks on one thread; unchanged when precomputing is off or already done. When a
        model raises, lookups are answered per request instead (as feature records are) and
        ``answers_info`` says why."""
        if table is None or table.answers is not None:
            return table
        if not self.precompute_lookups:
            return replace(table, answers_info={"precomputed": False, "reason": "disabled"})
        start = time.perf_counter()
        n = len(table.num)
        try:
            parts = [
                self.predict_arrays(
                    table.num[i : i + ANSWER_CHUNK],
                    table.cat[i : i + ANSWER_CHUNK],
                    strict=True,
                    background=True,
                )
                for i in range(0, n, ANSWER_CHUNK)
            ]
        except Exception as e:
            reason = f"a model raised: {type(e).__name__}: {e}"[:500]
            log.warning("version %s: lookups answered per request (%s)", self.version, reason)
            return replace(table, answers_info={"precomputed": False, "reason": reason})
        answers = ChainResult.concat(parts) if parts else None
        info = {"precomputed": answers is not None, "rows": n}
        info["seconds"] = round(time.perf_counter() - start, 3)
        cache = [None] * n if answers is not None and n <= ANSWER_JSON_MAX_ROWS else None
        return replace(table, answers=answers, answers_info=info, answer_json=cache)

    def answered(self) -> ModelBundle:
        """This bundle with its customer table answered (itself when nothing changes)."""
        table = self.answer_table(self.customers)
        return self if table is self.customers else replace(self, customers=table)

    def with_customers(self, table: CustomerTable | None, error: str | None, sig: Any) -> Any:
        """A copy of this bundle with another customer table (the models are shared)."""
        return replace(
            self,
            customers=self.answer_table(table),
            customers_error=error,
            customers_signature=sig,
        )


def _all_valid(values: np.ndarray, proba: bool) -> bool:
    """Whether every value is an acceptable answer (finite; a probability in [0, 1])."""
    if len(values) == 1:  # a single record: plain floats are cheaper than array reductions
        v = float(values[0])
        return 0.0 <= v <= 1.0 if proba else math.isfinite(v)
    if proba:  # NaN fails both comparisons
        return bool(values.min() >= 0.0) and bool(values.max() <= 1.0)
    return bool(np.isfinite(values).all())


def _valid(values: np.ndarray, proba: bool) -> np.ndarray:
    """Per value: acceptable as an answer."""
    ok = np.isfinite(values)
    if proba:
        ok &= (values >= 0) & (values <= 1)
    return ok


# -------------------------------------------------------------------------- loading


def file_signature(storage: Any, rel: str) -> Any:
    """Something that changes when the file changes (size + mtime / ETag), or None."""
    try:
        info = storage.fs.info(storage._path(rel))
    except FileNotFoundError:
        return None
    return (
        info.get("size"),
        info.get("mtime") or info.get("LastModified") or info.get("last_modified"),
        info.get("ETag") or info.get("etag"),
        info.get("ino"),
    )


def load_customers(
    storage: Any, schema: FeatureSchema
) -> tuple[CustomerTable | None, str | None, Any]:
    """(table, error, signature) of the latest current_features table."""
    sig = file_signature(storage, FEATURES_TABLE)
    if sig is None:
        return None, f"no current_features table at {storage.url(FEATURES_TABLE)}", None
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(storage.read_bytes(FEATURES_TABLE)))
        return CustomerTable.from_frame(table, schema, storage.url(FEATURES_TABLE), sig), None, sig
    except Exception as e:
        return None, f"current_features unusable: {type(e).__name__}: {e}", sig


def read_verified_artifacts(storage: Any, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Every artifact of a version, each checked against the manifest's sha256.

    Raises:
        IntegrityError: an artifact is missing, unreadable or does not match.
    """
    version = manifest["version"]
    artifacts = manifest.get("artifacts") or {}
    out: dict[str, bytes] = {}
    problems = []
    for name, meta in artifacts.items():
        try:
            data = storage.read_bytes(f"{dep.version_dir(version)}/{name}")
        except FileNotFoundError:
            problems.append(f"{name}: missing")
            continue
        if dep.sha256(data) != meta.get("sha256"):
            problems.append(f"{name}: sha256 mismatch")
            continue
        out[name] = data
    for role, entry in (manifest.get("models") or {}).items():
        if entry and entry.get("file") not in artifacts:
            problems.append(f"{role}: {entry.get('file')} is not listed in the artifacts")
    if problems:
        raise IntegrityError(f"refusing version {version}: {'; '.join(problems)}")
    return out


def read_verification_rows(
    data: bytes, numeric: list[str], categorical: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(num, cat, pipeline answers per role) from a version's verification file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    num, cat = frame_to_arrays(table, numeric, categorical)
    expected = {
        name.removeprefix("expected__"): table.column(name).cast(pa.float64()).to_numpy()
        for name in table.column_names
        if name.startswith("expected__")
    }
    return num, cat, expected


@dataclass
class ServedModel:
    """One deployed model as it answers: ``runtime`` is ``onnxruntime`` or ``scikit-learn``;
    ``reason`` says why the pipeline answers instead of the graph; ``verification`` is the
    load-time comparison of the graph with the pipeline's stored answers."""

    predictor: Any
    runtime: str
    reason: str | None = None
    verification: dict[str, Any] | None = None

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Positive-class probability or predicted value per row (may raise)."""
        return self.predictor.predict(num, cat)

    def predict_background(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """:meth:`predict` on one thread whatever the number of rows (work done beside the
        event loop, such as answering the customer table, leaves it the other cores)."""
        predict = getattr(self.predictor, "predict_background", self.predictor.predict)
        return predict(num, cat)


def _verify_graph(
    p: OnnxPredictor, rows: Any, role: str, threshold: float | None
) -> dict[str, Any]:
    """The graph against the pipeline's stored answers: whole batch and single rows."""
    if rows is None or role not in rows[2]:
        return {"ok": False, "reason": "the version holds no verification rows for this model"}
    num, cat, expected = rows[0], rows[1], rows[2][role]
    result = compare(p.predict(num, cat), expected, p.kind, threshold)
    k = min(8, len(num))
    single = np.concatenate([p.predict(num[i : i + 1], cat[i : i + 1]) for i in range(k)])
    single_result = compare(single, expected[:k], p.kind, threshold)
    if result["ok"] and not single_result["ok"]:
        return {**single_result, "rows": result["rows"]}
    return result


def load_model(
    role: str,
    entry: dict[str, Any],
    artifacts: dict[str, bytes],
    schema: FeatureSchema,
    rows: Any,
    *,
    batch_threads: int = 1,
) -> ServedModel:
    """The model of ``role``: its verified ONNX graph, else its pipeline.

    Raises:
        Exception: neither can answer (e.g. no verified graph and no scikit-learn).
    """
    kind = "classifier" if role.startswith("classifier") else "regressor"
    onnx = entry.get("onnx") or {}
    threshold = entry.get("threshold")
    if onnx.get("verified") and onnx.get("file") in artifacts:
        try:
            p = OnnxPredictor(
                artifacts[onnx["file"]],
                kind,
                schema.numeric,
                schema.categorical,
                batch_threads=batch_threads,
            )
            check = _verify_graph(p, rows, role, threshold)
            if check["ok"]:
                return ServedModel(p, "onnxruntime", verification=check)
            why = f"ONNX graph differs from the pipeline at load: {check.get('reason')}"
        except Exception as e:
            why = f"ONNX graph unusable: {type(e).__name__}: {e}"[:500]
    elif onnx:
        why = onnx.get("reason") or "ONNX graph not verified at deployment"
    else:
        why = "the version has no ONNX graph"
    try:
        from churn_serving.pipeline_predictor import PipelinePredictor
    except ImportError as e:  # the slim serving image
        raise RuntimeError(f"{why}; the pipeline needs scikit-learn ({e})") from e
    p = PipelinePredictor(artifacts[entry["file"]], kind, schema.numeric, schema.categorical)
    return ServedModel(p, "scikit-learn", reason=why)


def load_bundle(
    storage: Any,
    pointer: dict[str, Any],
    *,
    slack: float = DEFAULT_SLACK,
    stats: FallbackStats | None = None,
    aliases: dict[str, str] | None = None,
    batch_threads: int = 1,
    precompute_lookups: bool = True,
    answer_now: bool = True,
) -> ModelBundle:
    """Load, verify and prepare the version ``pointer`` names (nothing is swapped here).
    With ``precompute_lookups`` every customer of the table is answered once: here, or
    later by :meth:`ModelBundle.answered` when ``answer_now`` is False (the sidecar swaps
    the version in first, then its answers).

    Raises:
        IntegrityError: the manifest or an artifact is missing or fails its sha256.
    """
    version = pointer["version"]
    try:
        manifest = dep.read_manifest(storage, version)
    except dep.DeploymentError as e:
        raise IntegrityError(str(e)) from e
    if manifest.get("version", version) != version:
        raise IntegrityError(f"manifest of {version} names version {manifest.get('version')}")
    manifest = {**manifest, "version": version}
    artifacts = read_verified_artifacts(storage, manifest)
    schema = FeatureSchema(manifest, slack=slack, aliases=aliases)
    if not schema.columns:
        raise IntegrityError(f"version {version}: the manifest lists no features")
    rows = None
    if VERIFICATION_FILE in artifacts:
        try:
            rows = read_verification_rows(
                artifacts[VERIFICATION_FILE], schema.numeric, schema.categorical
            )
        except Exception as e:
            log.warning("version %s: verification rows unusable: %s", version, e)
    predictors: dict[str, ServedModel | None] = {}
    role_errors: dict[str, str] = {}
    models = manifest.get("models") or {}
    value_roles = ("regressor", "regressor_fallback")
    churn_only = not any(models.get(r) for r in value_roles)  # no value label: not degraded
    for role in dep.MODEL_ROLES:
        entry = models.get(role)
        if not entry:
            predictors[role] = None
            if not (churn_only and role in value_roles):
                role_errors[role] = "not in the manifest"
            continue
        try:
            predictors[role] = load_model(
                role, entry, artifacts, schema, rows, batch_threads=batch_threads
            )
        except Exception as e:  # an intact but unloadable model: serve with the fallbacks
            predictors[role] = None
            role_errors[role] = f"{type(e).__name__}: {e}"[:500]
            log.error("version %s: %s could not be loaded: %s", version, role, e)
    customers, customers_error, sig = load_customers(storage, schema)
    bundle = ModelBundle(
        version=version,
        manifest=manifest,
        pointer=pointer,
        schema=schema,
        predictors=predictors,
        role_errors=role_errors,
        customers=customers,
        customers_error=customers_error,
        customers_signature=sig,
        stats=stats,
        precompute_lookups=precompute_lookups,
    )
    if answer_now:
        bundle.customers = bundle.answer_table(customers)  # not shared yet: set in place
    return bundle


def unseen_rows(cat: np.ndarray, schema: FeatureSchema) -> dict[int, dict[str, str]]:
    """Row → {feature: value} of the categories of ``cat`` the version did not see in
    training (the missing marker aside), for the rows that have any."""
    from churn_serving.schema import MISSING_CATEGORY

    out: dict[int, dict[str, str]] = {}
    for j, name in enumerate(schema.categorical):
        if not schema.cat_has_categories[j]:
            continue
        col = cat[:, j].tolist()
        new = set(col) - schema.known[j] - {MISSING_CATEGORY}  # usually none: one pass
        if not new:
            continue
        for r, v in enumerate(col):
            if v in new:
                out.setdefault(r, {})[name] = str(v)
    return out
