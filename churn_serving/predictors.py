"""Model predictors: the deployed scikit-learn pipelines, with a numpy fast path.

A deployed pipeline (``FrameCleaner`` → ``ColumnTransformer`` → estimator) spends most of a
single-row prediction building and checking pandas frames (about 6 ms per call here, against
tens of microseconds of actual model work). :func:`compile_pipeline` turns a *fitted* pipeline
into a function of two arrays,

* ``num``: float64 ``(n, n_numeric)`` in the manifest's numeric feature order (NaN = missing),
* ``cat``: object ``(n, n_categorical)`` of canonical category strings (``"__missing__"`` for
  nulls, exactly what ``FrameCleaner`` produces),

using the fitted parameters of each step (imputer statistics, scaler means, encoder lookup
tables probed from the fitted encoders, the estimator's own booster or coefficients).

The fast path is never trusted blindly: :class:`Predictor` compares it with the pipeline on
the deployment's reference sample plus probe rows (missing numerics, unseen categories) when
the version is loaded, and uses it only when every prediction agrees within
:data:`FAST_PATH_TOLERANCE`; otherwise (or for step types it does not know) the pipeline
itself is called on a pandas frame. Either way the answers are the pipeline's.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Largest accepted |fast path − pipeline| (relative to max(1, |pipeline|)).
FAST_PATH_TOLERANCE = 1e-9
#: Stand-in for a category no encoder has seen, used to probe the encoders' unknown handling.
UNSEEN_PROBE = "\x00churn-serving-unseen\x00"

ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class BatchThreads:
    """OpenMP threads for LightGBM predictions of at least ``min_rows`` rows (big batches,
    which run in a worker thread); everything else predicts on one thread."""

    threads: int = 1
    min_rows: int = 2048


#: Process-wide setting (``CHURN_SERVING_BATCH_THREADS``), set by the app at start-up.
BATCH_THREADS = BatchThreads()


class CompileError(ValueError):
    """The pipeline contains a step the fast path does not reproduce."""


class _Frame:
    """The cleaned feature frame as two arrays, with column lookup by name."""

    __slots__ = ("num", "cat")

    def __init__(self, num: np.ndarray, cat: np.ndarray):
        self.num = num
        self.cat = cat


@dataclass(frozen=True)
class _Layout:
    """Where each feature lives: ('num', i) or ('cat', j)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    def locate(self, name: str) -> tuple[str, int]:
        if name in self.numeric:
            return "num", self.numeric.index(name)
        if name in self.categorical:
            return "cat", self.categorical.index(name)
        raise CompileError(f"column {name!r} is not a deployed feature")

    def selector(self, names: list[str]) -> Callable[[_Frame], np.ndarray]:
        """A function returning the 2-D block of ``names`` (all numeric or all categorical)."""
        where = [self.locate(n) for n in names]
        kinds = {k for k, _ in where}
        if len(kinds) != 1:
            raise CompileError(f"columns {names} mix numeric and categorical features")
        kind = kinds.pop()
        idx = np.asarray([i for _, i in where], dtype=np.intp)
        contiguous = bool(len(idx)) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
        if kind == "num":
            if contiguous:
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                return lambda f: f.num[:, lo:hi]
            return lambda f: f.num[:, idx]
        if contiguous:
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            return lambda f: f.cat[:, lo:hi]
        return lambda f: f.cat[:, idx]


def _cls(obj: Any) -> str:
    return type(obj).__name__


# --------------------------------------------------------------------------- transformers


def _compile_imputer(imp: Any) -> ArrayFn:
    mv = imp.missing_values
    if not (isinstance(mv, float) and math.isnan(mv)):
        raise CompileError(f"SimpleImputer(missing_values={mv!r}) is not supported")
    stats = np.asarray(imp.statistics_, dtype=np.float64).copy()
    keep = np.ones(len(stats), dtype=bool)
    if imp.strategy != "constant":
        if getattr(imp, "keep_empty_features", False):
            stats[np.isnan(stats)] = 0.0
        else:
            keep = ~np.isnan(stats)
    all_kept = bool(keep.all())
    indicator = getattr(imp, "indicator_", None) if imp.add_indicator else None
    if indicator is not None:
        if getattr(indicator, "features", "missing-only") != "missing-only":
            raise CompileError("MissingIndicator(features='all') is not supported")
        ind_cols = np.asarray(indicator.features_, dtype=np.intp)
    else:
        ind_cols = None

    def impute(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        mask = np.isnan(x)
        out = np.where(mask, stats, x) if mask.any() else x
        if not all_kept:
            out = out[:, keep]
        if ind_cols is not None:
            out = np.hstack([out, mask[:, ind_cols].astype(np.float64)])
        return out

    return impute


def _compile_scaler(sc: Any) -> ArrayFn:
    mean = np.asarray(sc.mean_, dtype=np.float64) if sc.with_mean else None
    scale = np.asarray(sc.scale_, dtype=np.float64) if sc.with_std else None

    def scale_fn(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if mean is not None:
            x = x - mean
        if scale is not None:
            x = x / scale
        return x

    return scale_fn


def _compile_poly(pf: Any) -> ArrayFn:
    powers = np.asarray(pf.powers_, dtype=np.float64)

    def poly(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.prod(np.power(x[:, None, :], powers[None, :, :]), axis=2)

    return poly


def _compile_encoder(enc: Any) -> ArrayFn:
    """One-hot / ordinal encoders, as per-column lookup tables probed from the encoder."""
    import pandas as pd

    cats = [list(c) for c in enc.categories_]
    n_in = len(cats)
    name = _cls(enc)
    if name == "OneHotEncoder":
        widths = list(getattr(enc, "_n_features_outs", []) or [])
        if len(widths) != n_in:
            raise CompileError("OneHotEncoder without per-feature output widths")
    elif name == "OrdinalEncoder":
        widths = [1] * n_in
    else:  # pragma: no cover - guarded by the caller
        raise CompileError(name)
    names_in = getattr(enc, "feature_names_in_", None)

    def transform(block: np.ndarray) -> np.ndarray:
        arg: Any = pd.DataFrame(block, columns=list(names_in)) if names_in is not None else block
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = enc.transform(arg)
        if hasattr(out, "toarray"):
            out = out.toarray()
        return np.asarray(out, dtype=np.float64)

    tables: list[tuple[dict[Any, int], np.ndarray, int]] = []
    starts: list[int] = []
    start = 0
    base = [c[0] if c else UNSEEN_PROBE for c in cats]
    for j in range(n_in):
        values = [*cats[j], UNSEEN_PROBE]
        probe = np.empty((len(values), n_in), dtype=object)
        probe[:] = base
        probe[:, j] = values
        unknown = len(values) - 1
        try:
            out = transform(probe)
        except ValueError:  # handle_unknown="error": unseen categories must raise as well
            out = transform(probe[:-1])
            unknown = -1
        block = np.ascontiguousarray(out[:, start : start + widths[j]])
        lookup: dict[Any, int] = {}
        for i, v in enumerate(cats[j]):
            if isinstance(v, float) and math.isnan(v):
                raise CompileError("encoder categories contain NaN")
            lookup[v] = i
        tables.append((lookup, block, unknown))
        starts.append(start)
        start += widths[j]
    total = transform(np.asarray([base], dtype=object)).shape[1]
    if start != total:
        raise CompileError(f"{name}: output width {total} != sum of feature widths {start}")

    # Single rows: one block-diagonal table whose rows are zero outside their feature's
    # columns, so that a row's encoding is the sum of one table row per feature (adding
    # exact zeros does not change a value, NaN codes included).
    offsets = np.cumsum([0, *[len(b) for _, b, _ in tables]])
    stacked = np.zeros((int(offsets[-1]), total), dtype=np.float64)
    global_lookup: list[tuple[dict[Any, int], int]] = []
    for j, (lookup, block, unknown) in enumerate(tables):
        off = int(offsets[j])
        stacked[off : off + len(block), starts[j] : starts[j] + widths[j]] = block
        global_lookup.append(
            ({v: i + off for v, i in lookup.items()}, unknown + off if unknown >= 0 else -1)
        )

    def encode(x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 1:
            idx = [get(v, unk) for (get, unk), v in zip(single, x[0].tolist(), strict=True)]
            if -1 in idx:
                raise ValueError(f"{name}: unknown category")
            return stacked[idx].sum(axis=0, keepdims=True)
        outs = []
        for j, (lookup, block, unknown) in enumerate(tables):
            get = lookup.get
            idx = [get(v, unknown) for v in x[:, j].tolist()]
            if unknown < 0 and -1 in idx:
                raise ValueError(f"{name}: unknown category in column {j}")
            outs.append(block[idx])
        return outs[0] if len(outs) == 1 else np.hstack(outs)

    single = [(lookup.get, unk) for lookup, unk in global_lookup]
    return encode


def _compile_array(t: Any) -> ArrayFn:
    """An array → array transformer."""
    if isinstance(t, str):
        if t == "passthrough":
            return lambda x: x
        raise CompileError(f"transformer {t!r}")
    name = _cls(t)
    if name == "FunctionTransformer":
        if t.func is not None:
            raise CompileError("FunctionTransformer with a function")
        return lambda x: x
    if name == "SimpleImputer":
        return _compile_imputer(t)
    if name == "StandardScaler":
        return _compile_scaler(t)
    if name == "PolynomialFeatures":
        return _compile_poly(t)
    if name in ("OneHotEncoder", "OrdinalEncoder"):
        return _compile_encoder(t)
    if name == "Pipeline":
        fns = [_compile_array(step) for _, step in t.steps if step not in (None, "passthrough")]

        def chain(x: np.ndarray) -> np.ndarray:
            for fn in fns:
                x = fn(x)
            return x

        return chain
    raise CompileError(f"transformer {name} is not supported by the fast path")


def _compile_column_transformer(ct: Any, layout: _Layout) -> Callable[[_Frame], np.ndarray]:
    if getattr(ct, "sparse_output_", False):
        raise CompileError("sparse ColumnTransformer output")
    if getattr(ct, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
        raise CompileError("ColumnTransformer with set_output")
    names_in = [str(c) for c in getattr(ct, "feature_names_in_", [])]
    to_idx = getattr(ct, "_transformer_to_input_indices", None)
    parts: list[tuple[Callable[[_Frame], np.ndarray], ArrayFn]] = []
    for name, trans, cols in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        if to_idx is not None and name in to_idx:
            col_names = [names_in[i] for i in to_idx[name]]
        elif isinstance(cols, list | tuple) and all(isinstance(c, str) for c in cols):
            col_names = list(cols)
        else:
            raise CompileError(f"ColumnTransformer part {name!r}: column selection {cols!r}")
        if not col_names:
            continue
        parts.append((layout.selector(col_names), _compile_array(trans)))
    if not parts:
        raise CompileError("ColumnTransformer with no output")

    def transform(frame: _Frame) -> np.ndarray:
        outs = [fn(select(frame)) for select, fn in parts]
        out = outs[0] if len(outs) == 1 else np.hstack(outs)
        return np.asarray(out, dtype=np.float64)

    return transform


# ---------------------------------------------------------------------------- estimators


def _positive_index(classes: Any) -> int:
    classes = list(classes)
    if len(classes) != 2:
        raise CompileError(f"not a binary classifier: classes {classes}")
    for i, c in enumerate(classes):
        if c is True or (not isinstance(c, str) and c == 1):
            return i
    return 1


class _LightGBMSingleRow:
    """LightGBM's single-row C API (``LGBM_BoosterPredictForMatSingleRowFast``): the same
    trees and output as ``Booster.predict`` without its per-call Python and array checks
    (about 40 of the 50 microseconds of a one-row prediction). One prepared config per
    booster, guarded by a lock (the config holds a buffer)."""

    def __init__(self, lib: Any, handle: Any, ncol: int):
        import ctypes
        import threading

        self._lib = lib
        self._handle = handle
        self._ncol = ncol
        self._lock = threading.Lock()
        self._out = np.empty(1, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._len = ctypes.c_int64()
        self._len_ref = ctypes.byref(self._len)
        self._c_void_p = ctypes.c_void_p

    @classmethod
    def create(cls, booster: Any) -> _LightGBMSingleRow | None:
        """The fast single-row predictor of ``booster``, or None if the C API is missing."""
        try:
            import ctypes

            from lightgbm.basic import (
                _C_API_DTYPE_FLOAT64,
                _C_API_PREDICT_NORMAL,
                _LIB,
                _c_str,
                _safe_call,
            )

            handle = ctypes.c_void_p()
            ncol = int(booster.num_feature())
            num_iteration = booster.best_iteration if booster.best_iteration > 0 else -1
            _safe_call(
                _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                    booster._handle,
                    ctypes.c_int(_C_API_PREDICT_NORMAL),
                    ctypes.c_int(0),
                    ctypes.c_int(num_iteration),
                    ctypes.c_int(_C_API_DTYPE_FLOAT64),
                    ctypes.c_int32(ncol),
                    _c_str("num_threads=1"),
                    ctypes.byref(handle),
                )
            )
            return cls(_LIB, handle, ncol)
        except Exception:  # an older / different LightGBM: use Booster.predict
            return None

    def predict(self, x: np.ndarray) -> np.ndarray:
        row = np.ascontiguousarray(x[0], dtype=np.float64)
        if row.shape[0] != self._ncol:
            raise ValueError(f"expected {self._ncol} features, got {row.shape[0]}")
        with self._lock:
            rc = self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                self._handle, self._c_void_p(row.ctypes.data), self._len_ref, self._out_ptr
            )
            if rc != 0:
                raise RuntimeError(self._lib.LGBM_GetLastError().decode())
            return self._out.copy()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._lib.LGBM_FastConfigFree(self._handle)


def _compile_estimator(est: Any, kind: str) -> ArrayFn:
    """A fitted estimator on a float matrix → positive-class probability or value."""
    name = _cls(est)
    if getattr(est, "feature_names_in_", None) is not None and not name.startswith("LGBM"):
        raise CompileError(f"{name} was fitted on a DataFrame")
    if name in ("LGBMClassifier", "LGBMRegressor"):
        booster = est.booster_
        if name == "LGBMClassifier":
            if getattr(est, "objective_", "binary") != "binary" or est.n_classes_ != 2:
                raise CompileError("LGBMClassifier is not binary")
            if _positive_index(est.classes_) != 1:
                raise CompileError("LGBMClassifier classes are not ordered (neg, pos)")
        single = _LightGBMSingleRow.create(booster)

        def lgbm(x: np.ndarray) -> np.ndarray:
            n = x.shape[0]
            if single is not None and n == 1:
                return single.predict(x)
            if n >= BATCH_THREADS.min_rows and BATCH_THREADS.threads > 1:
                return booster.predict(x, num_threads=BATCH_THREADS.threads)
            return booster.predict(x)

        return lgbm
    if kind == "classifier":
        pos = _positive_index(getattr(est, "classes_", [0, 1]))
        if name == "LogisticRegression" and np.asarray(est.coef_).shape[0] == 1:
            from scipy.special import expit

            coef = np.asarray(est.coef_, dtype=np.float64)[0]
            intercept = float(np.asarray(est.intercept_, dtype=np.float64)[0])
            if pos != 1:
                raise CompileError("LogisticRegression classes are not ordered (neg, pos)")
            return lambda x: expit(x @ coef + intercept)
        if not hasattr(est, "predict_proba"):
            raise CompileError(f"{name} has no predict_proba")
        return lambda x: est.predict_proba(x)[:, pos]
    if name in ("Ridge", "LinearRegression", "Lasso", "ElasticNet") and np.ndim(est.coef_) == 1:
        coef = np.asarray(est.coef_, dtype=np.float64)
        intercept = float(est.intercept_)
        return lambda x: x @ coef + intercept
    if name == "TransformedTargetRegressor":
        inner = _compile_estimator(est.regressor_, "regressor")
        inverse = est.transformer_.inverse_transform

        def ttr(x: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(inverse(inner(x).reshape(-1, 1))).reshape(-1)

        return ttr
    return lambda x: est.predict(x)


# ------------------------------------------------------------------------------ pipelines


def _compile_frame_model(model: Any, kind: str, layout: _Layout) -> Callable[[_Frame], np.ndarray]:
    """A model taking the (cleaned) feature frame."""
    name = _cls(model)
    if name == "Pipeline":
        steps = [s for _, s in model.steps if s not in (None, "passthrough")]
        if not steps:
            raise CompileError("empty pipeline")
        if _cls(steps[0]) == "FrameCleaner":
            cleaner = steps.pop(0)
            for col in cleaner.numeric or []:
                if layout.locate(col)[0] != "num":
                    raise CompileError(f"{col} is categorical in the manifest, numeric here")
            for col in cleaner.categorical or []:
                if layout.locate(col)[0] != "cat":
                    raise CompileError(f"{col} is numeric in the manifest, categorical here")
            if not steps:
                raise CompileError("pipeline ends with FrameCleaner")
            if _cls(steps[0]) != "ColumnTransformer":
                raise CompileError(f"FrameCleaner followed by {_cls(steps[0])}")
            head = _compile_column_transformer(steps.pop(0), layout)
            if not steps:
                raise CompileError("pipeline has no estimator")
            middle = [_compile_array(s) for s in steps[:-1]]
            final = _compile_estimator(steps[-1], kind)

            def run(frame: _Frame) -> np.ndarray:
                x = head(frame)
                for fn in middle:
                    x = fn(x)
                return np.asarray(final(x), dtype=np.float64).reshape(-1)

            return run
        if len(steps) == 1:
            return _compile_frame_model(steps[0], kind, layout)
        raise CompileError("pipeline without FrameCleaner")
    if name == "VotingClassifier":
        if model.voting != "soft":
            raise CompileError("hard voting")
        pos = _positive_index(model.classes_)
        members = [_compile_frame_model(m, "classifier", layout) for m in model.estimators_]
        member_pos = [_positive_index(m.classes_) for m in model.estimators_]
        if pos != 1 or any(p != 1 for p in member_pos):
            raise CompileError("voting classes are not ordered (neg, pos)")
        weights = model._weights_not_none
        w = None if weights is None else np.asarray(weights, dtype=np.float64)

        def vote(frame: _Frame) -> np.ndarray:
            probas = np.vstack([m(frame) for m in members])
            return np.average(probas, axis=0, weights=w)

        return vote
    if name == "NaiveBaselineRegressor":
        mean = float(model.mean_)
        if not model.uses_column_:
            return lambda frame: np.full(frame.num.shape[0], mean, dtype=np.float64)
        where, i = layout.locate(model.column)
        if where != "num":
            raise CompileError("naive column is categorical")

        def naive(frame: _Frame) -> np.ndarray:
            v = frame.num[:, i]
            return np.maximum(np.where(np.isnan(v), mean, v), 0.0)

        return naive
    raise CompileError(f"{name} is not supported by the fast path")


def compile_pipeline(
    pipeline: Any, kind: str, numeric: list[str], categorical: list[str]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``f(num, cat) -> 1-D float64``: the pipeline's positive-class probability
    (``kind="classifier"``) or prediction (``kind="regressor"``) without pandas.

    Raises:
        CompileError: the pipeline has a step the fast path cannot reproduce.
    """
    layout = _Layout(tuple(numeric), tuple(categorical))
    fn = _compile_frame_model(pipeline, kind, layout)

    def predict(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        return fn(_Frame(num, cat))

    return predict


# ------------------------------------------------------------------------------ predictor


def pin_threads(model: Any, depth: int = 0) -> None:
    """Set ``n_jobs=1`` on every estimator inside ``model`` (single-row predictions pay
    thread start-up otherwise); predictions do not change."""
    if depth > 8 or model is None or isinstance(model, str):
        return
    if hasattr(model, "n_jobs") and not _cls(model).startswith(("LGBM", "XGB")):
        with contextlib.suppress(Exception):  # a read-only attribute: leave it
            model.n_jobs = 1
    for attr in ("steps", "transformers_", "estimators_"):
        for item in getattr(model, attr, None) or []:
            sub = item[1] if isinstance(item, tuple) else item
            pin_threads(sub, depth + 1)
    for attr in ("regressor_", "estimator"):
        sub = getattr(model, attr, None)
        if sub is not None and not isinstance(sub, type):
            pin_threads(sub, depth + 1)


def _rel_diff(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max absolute difference, max difference relative to max(1, |expected|)); NaN on both
    sides counts as equal, NaN on one side as infinitely different."""
    if got.size == 0:
        return 0.0, 0.0
    both_nan = np.isnan(got) & np.isnan(expected)
    diff = np.nan_to_num(np.where(both_nan, 0.0, np.abs(got - expected)), nan=np.inf)
    scale = np.maximum(1.0, np.nan_to_num(np.abs(expected), nan=1.0))
    return float(diff.max()), float((diff / scale).max())


class Predictor:
    """One deployed pipeline: ``predict(num, cat)`` through the fast path when it has been
    verified against the pipeline, otherwise through the pipeline on a pandas frame."""

    def __init__(
        self,
        role: str,
        pipeline: Any,
        kind: str,
        numeric: list[str],
        categorical: list[str],
        *,
        use_fast_path: bool = True,
    ):
        self.role = role
        self.pipeline = pipeline
        self.kind = kind
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.columns = [*self.numeric, *self.categorical]
        self.fast: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        self.fast_path = "off"
        self.max_abs_diff: float | None = None
        self._pos = 1
        if kind == "classifier":
            try:
                self._pos = _positive_index(pipeline.classes_)
            except Exception:  # not a binary classifier: calls will fail and fall back
                self._pos = 1
        pin_threads(pipeline)
        if use_fast_path:
            try:
                self.fast = compile_pipeline(pipeline, kind, self.numeric, self.categorical)
                self.fast_path = "compiled, not verified"
            except CompileError as e:
                self.fast_path = f"pipeline ({e})"
            except Exception as e:  # a surprising model: never fail the load over the fast path
                self.fast_path = f"pipeline (compile failed: {type(e).__name__}: {e})"

    def predict_pipeline(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """The pipeline itself on a pandas frame built from the arrays."""
        import pandas as pd

        data: dict[str, Any] = {}
        for i, c in enumerate(self.numeric):
            data[c] = num[:, i]
        for j, c in enumerate(self.categorical):
            data[c] = cat[:, j]
        frame = pd.DataFrame(data, columns=self.columns)
        if self.kind == "classifier":
            return np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)[:, self._pos]
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64).reshape(-1)

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Positive-class probability or predicted value per row (may raise)."""
        if self.fast is not None:
            return self.fast(num, cat)
        return self.predict_pipeline(num, cat)

    def verify(self, num: np.ndarray, cat: np.ndarray) -> None:
        """Keep the fast path only if it matches the pipeline on these rows."""
        if self.fast is None:
            return
        try:
            expected = self.predict_pipeline(num, cat)
        except Exception as e:  # the pipeline itself fails: keep its behaviour (raise)
            self.fast = None
            self.fast_path = f"pipeline (pipeline fails on the reference rows: {e})"
            return
        n_single = min(3, len(num))
        try:
            got = np.asarray(self.fast(num, cat), dtype=np.float64)
            single = [self.fast(num[i : i + 1], cat[i : i + 1]) for i in range(n_single)]
            single_arr = np.concatenate(single) if single else np.zeros(0)
        except Exception as e:
            self.fast = None
            self.fast_path = f"pipeline (fast path failed: {type(e).__name__}: {e})"
            return
        if got.shape != expected.shape:
            self.fast = None
            self.fast_path = "pipeline (fast path shape differs)"
            return
        diffs = [_rel_diff(got, expected), _rel_diff(single_arr, expected[:n_single])]
        self.max_abs_diff = max(d[0] for d in diffs)
        if any(d[1] > FAST_PATH_TOLERANCE for d in diffs):
            self.fast = None
            self.fast_path = f"pipeline (fast path differs by {self.max_abs_diff:.3g})"
            return
        self.fast_path = "compiled"

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for /model-info."""
        return {
            "role": self.role,
            "kind": self.kind,
            "fast_path": self.fast_path,
            "fast_path_max_abs_diff": self.max_abs_diff,
        }
