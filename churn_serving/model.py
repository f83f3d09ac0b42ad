"""A loaded deployment (:class:`ModelBundle`): verified models, schema, customer table, and
the fallback chain that answers every record.

Fallback chain, per output and per record (levels in order):

1. ``champion``: the manifest's ``classifier`` / ``regressor`` pipeline;
2. ``fallback_model``: the manifest's simple ``classifier_fallback`` / ``regressor_fallback``;
3. ``business_rules``: the manifest's one-feature rule (``business_rules``: above / at or
   below ``threshold`` of ``feature``);
4. ``base_rate``: the training base rates (``base_rates``).

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
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from churn_assets.lib import deployment as dep
from churn_serving.predictors import UNSEEN_PROBE, Predictor
from churn_serving.schema import (
    DEFAULT_SLACK,
    MISSING_CATEGORY,
    FeatureSchema,
    RequestError,
    frame_to_arrays,
)

log = logging.getLogger("churn_serving.model")

LEVELS = ("champion", "fallback_model", "business_rules", "base_rate")
OUTPUTS = ("churn_probability", "expected_total_sales")
FEATURES_TABLE = "assets/current_features.parquet"
#: Reference rows used to verify each fast path against its pipeline at load time.
VERIFY_ROWS = 512


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


class UnknownCustomers(Exception):
    """Some customer ids are not in the current_features table."""

    def __init__(self, positions: list[int], ids: list[str]):
        super().__init__(f"unknown customer ids: {ids[:5]}")
        self.positions = positions
        self.ids = ids


@dataclass(frozen=True)
class CustomerTable:
    """The latest ``current_features`` table, as arrays for id lookups."""

    index: dict[str, int]
    num: np.ndarray
    cat: np.ndarray
    source: str
    signature: Any
    loaded_at: str

    @classmethod
    def from_frame(
        cls, frame: Any, schema: FeatureSchema, source: str, signature: Any
    ) -> CustomerTable:
        """Build from a polars frame with ``customer_id`` and the deployed feature columns."""
        import polars as pl

        missing = [c for c in ["customer_id", *schema.columns] if c not in frame.columns]
        if missing:
            raise ValueError(f"{source} lacks the deployed feature columns {missing}")
        ids = frame.get_column("customer_id").cast(pl.Utf8).to_list()
        num, cat = frame_to_arrays(frame, schema.numeric, schema.categorical)
        index = {cid: i for i, cid in enumerate(ids) if cid is not None}
        return cls(index, num, cat, source, signature, utcnow())

    def lookup(self, ids: list[str], positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of ``ids``; :class:`UnknownCustomers` lists any id not found."""
        get = self.index.get
        idx = [get(i, -1) for i in ids]
        if -1 in idx:
            bad = [k for k, v in enumerate(idx) if v < 0]
            raise UnknownCustomers([positions[k] for k in bad], [ids[k] for k in bad])
        return self.num[idx], self.cat[idx]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"source": self.source, "customers": len(self.index), "loaded_at": self.loaded_at}


@dataclass
class ChainResult:
    """Answers of the fallback chain for n records."""

    churn_probability: np.ndarray
    churn_level: np.ndarray  # int8 index into LEVELS
    threshold: np.ndarray
    churn_label: np.ndarray
    expected_total_sales: np.ndarray
    sales_level: np.ndarray


@dataclass
class ModelBundle:
    """Everything needed to answer /predict for one deployed version (immutable once
    built; a reload builds a new one and swaps the reference)."""

    version: str
    manifest: dict[str, Any]
    pointer: dict[str, Any]
    schema: FeatureSchema
    predictors: dict[str, Predictor | None]
    role_errors: dict[str, str] = field(default_factory=dict)
    customers: CustomerTable | None = None
    customers_error: str | None = None
    customers_signature: Any = None
    loaded_at: str = field(default_factory=utcnow)
    stats: FallbackStats | None = None

    # ------------------------------------------------------------------ properties

    @property
    def threshold(self) -> float:
        """The champion's stored threshold (0.5 if the manifest has none)."""
        t = (self.manifest.get("models", {}).get("classifier") or {}).get("threshold")
        return float(t) if t is not None else 0.5

    @property
    def fallback_threshold(self) -> float:
        """The fallback classifier's stored threshold (the champion's if none)."""
        t = (self.manifest.get("models", {}).get("classifier_fallback") or {}).get("threshold")
        return float(t) if t is not None else self.threshold

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
                "fast_path": p.fast_path if p else None,
                "fast_path_max_abs_diff": p.max_abs_diff if p else None,
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
            "gate": self.manifest.get("gate"),
            "customers": self.customers.describe() if self.customers else None,
            "customers_error": self.customers_error,
        }

    # --------------------------------------------------------------------- predict

    def lookup(self, ids: list[str], positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Features of known customers from the current_features table.

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
            return self.customers.lookup(ids, positions)
        except UnknownCustomers as e:
            detail = [
                {
                    "loc": ["body", "records", pos, "customer_id"],
                    "msg": f"unknown customer_id {cid!r} (not in the latest current_features)",
                    "type": "unknown_customer_id",
                    "field": "customer_id",
                }
                for pos, cid in zip(e.positions[:100], e.ids[:100], strict=True)
            ]
            raise RequestError(404, detail, error_count=len(e.ids)) from None

    def _run_model(
        self, role: str, num: np.ndarray, cat: np.ndarray, pending: np.ndarray
    ) -> np.ndarray | None:
        p = self.predictors.get(role)
        if p is None:
            return None
        try:
            if len(pending) == len(num):
                out = p.predict(num, cat)
            else:
                out = p.predict(num[pending], cat[pending])
            out = np.asarray(out, dtype=np.float64).reshape(-1)
            if len(out) != len(pending):
                raise ValueError(f"{role} returned {len(out)} values for {len(pending)} rows")
            return out
        except Exception as e:  # any model failure → next level
            log.warning("model %s failed at predict time: %s", role, e)
            if self.stats is not None:
                self.stats.model_error(role, e)
            return None

    def _chain(
        self, output: str, num: np.ndarray, cat: np.ndarray, roles: tuple[str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(num)
        proba = output == "churn_probability"
        everyone = np.arange(n)
        first = self._run_model(roles[0], num, cat, everyone)
        if first is not None:  # the usual case: the champion answers every record
            ok = np.isfinite(first)
            if proba:
                ok &= (first >= 0) & (first <= 1)
            if ok.all():
                return first, np.zeros(n, dtype=np.int8)
        values = np.full(n, np.nan)
        levels = np.zeros(n, dtype=np.int8)
        pending = everyone
        if first is not None:
            values[ok] = first[ok]
            pending = everyone[~ok]
        for level, role in enumerate(roles):
            if level == 0:
                continue
            if not len(pending):
                break
            out = self._run_model(role, num, cat, pending)
            if out is None:
                continue
            ok = np.isfinite(out)
            if proba:
                ok &= (out >= 0) & (out <= 1)
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
        return values, levels

    def predict_arrays(self, num: np.ndarray, cat: np.ndarray) -> ChainResult:
        """Answer every row through the fallback chain (never raises for model failures)."""
        proba, churn_level = self._chain(
            "churn_probability", num, cat, ("classifier", "classifier_fallback")
        )
        sales, sales_level = self._chain(
            "expected_total_sales", num, cat, ("regressor", "regressor_fallback")
        )
        np.clip(sales, 0.0, None, out=sales)
        threshold = np.where(churn_level == 1, self.fallback_threshold, self.threshold)
        label = (proba >= threshold).astype(np.int8)
        return ChainResult(proba, churn_level, threshold, label, sales, sales_level)

    def with_customers(self, table: CustomerTable | None, error: str | None, sig: Any) -> Any:
        """A copy of this bundle with another customer table (the models are shared)."""
        return replace(self, customers=table, customers_error=error, customers_signature=sig)


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
        frame = storage.read_parquet(FEATURES_TABLE)
        table = CustomerTable.from_frame(frame, schema, storage.url(FEATURES_TABLE), sig)
        return table, None, sig
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


def _verification_rows(
    artifacts: dict[str, bytes], manifest: dict[str, Any], schema: FeatureSchema
) -> tuple[np.ndarray, np.ndarray]:
    """Reference rows plus probes (all numerics missing, unseen and missing categories)."""
    num = cat = None
    ref_name = (manifest.get("reference") or {}).get("file", "reference.parquet")
    if ref_name in artifacts:
        try:
            import polars as pl

            frame = pl.read_parquet(io.BytesIO(artifacts[ref_name]))
            if all(c in frame.columns for c in schema.columns) and frame.height:
                head = frame.head(VERIFY_ROWS)
                num, cat = frame_to_arrays(head, schema.numeric, schema.categorical)
        except Exception as e:  # fall back to synthetic rows
            log.warning("reference sample unusable for verification: %s", e)
    if num is None or cat is None:
        desc = schema.describe()["fields"]
        row_num = []
        for c in schema.numeric:
            lo, hi = desc[c]["training_min"], desc[c]["training_max"]
            row_num.append((lo + hi) / 2 if lo is not None and hi is not None else 0.0)
        row_cat = [
            (sorted(schema.known[j]) or [MISSING_CATEGORY])[0]
            for j in range(len(schema.categorical))
        ]
        num = np.asarray([row_num] * 4, dtype=np.float64).reshape(4, len(schema.numeric))
        cat = np.asarray([row_cat] * 4, dtype=object).reshape(4, len(schema.categorical))
    k = min(4, len(num))
    probe_num = num[:k].copy()
    probe_num[:] = np.nan
    probe_cat = cat[:k].copy()
    probe_cat[: k // 2 or 1] = UNSEEN_PROBE
    probe_cat[k // 2 :] = MISSING_CATEGORY
    return np.vstack([num, probe_num, num[:k]]), np.vstack([cat, cat[:k], probe_cat])


def load_bundle(
    storage: Any,
    pointer: dict[str, Any],
    *,
    slack: float = DEFAULT_SLACK,
    stats: FallbackStats | None = None,
    use_fast_path: bool = True,
) -> ModelBundle:
    """Load, verify and prepare the version ``pointer`` names (nothing is swapped here).

    Raises:
        IntegrityError: the manifest or an artifact is missing or fails its sha256.
    """
    from churn_assets.lib.models.persistence import loads_pipeline

    version = pointer["version"]
    try:
        manifest = dep.read_manifest(storage, version)
    except dep.DeploymentError as e:
        raise IntegrityError(str(e)) from e
    if manifest.get("version", version) != version:
        raise IntegrityError(f"manifest of {version} names version {manifest.get('version')}")
    manifest = {**manifest, "version": version}
    artifacts = read_verified_artifacts(storage, manifest)
    schema = FeatureSchema(manifest, slack=slack)
    if not schema.columns:
        raise IntegrityError(f"version {version}: the manifest lists no features")
    predictors: dict[str, Predictor | None] = {}
    role_errors: dict[str, str] = {}
    verify_num, verify_cat = _verification_rows(artifacts, manifest, schema)
    for role in dep.MODEL_ROLES:
        entry = (manifest.get("models") or {}).get(role)
        if not entry:
            predictors[role] = None
            role_errors[role] = "not in the manifest"
            continue
        kind = "classifier" if role.startswith("classifier") else "regressor"
        try:
            pipeline = loads_pipeline(artifacts[entry["file"]])
            p = Predictor(
                role,
                pipeline,
                kind,
                schema.numeric,
                schema.categorical,
                use_fast_path=use_fast_path,
            )
            p.verify(verify_num, verify_cat)
            predictors[role] = p
        except Exception as e:  # an intact but unloadable model: serve with the fallbacks
            predictors[role] = None
            role_errors[role] = f"{type(e).__name__}: {e}"[:500]
            log.error("version %s: %s could not be loaded: %s", version, role, e)
    customers, customers_error, sig = load_customers(storage, schema)
    return ModelBundle(
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
    )
