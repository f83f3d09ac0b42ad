"""Shared helpers for the model-set trainers (timing, CV, parameter capture)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.base import clone

from .spec import FeatureSpec

T = TypeVar("T")

#: Label columns: never passed to the pipelines.
LABEL_COLUMNS: tuple[str, ...] = ("churned", "total_sales")
#: Environment variable overriding the training thread count (a positive integer).
THREADS_ENV = "CHURN_TRAINING_THREADS"
#: Up to this many training rows the models run single-threaded: on small data the
#: OpenMP fork/join overhead (and spin-waiting when the CPUs are shared) costs more than it
#: gains -- measured 5-20x slower fits for the boosters on a busy 2-core machine.
SINGLE_THREAD_BELOW_ROWS = 20_000
SPLITS_REQUIRED: tuple[str, ...] = ("train", "validation", "holdout")


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup quota under ``root`` (v2 ``cpu.max``, else the v1 CFS
    quota); None when unlimited or unknown."""
    try:
        with open(f"{root}/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(f"{root}/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open(f"{root}/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (>= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def training_threads() -> int:
    """Thread budget of one model: ``$CHURN_TRAINING_THREADS`` if set, else
    :func:`available_cpus` (read at call time, so a pod's CPU limit is honoured)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return threads
    return available_cpus()


def resolve_n_jobs(n_jobs: int | None, n_rows: int) -> int:
    """Threads to use: ``n_jobs`` capped to [1, :func:`training_threads`]; ``None`` -> 1 for
    small data (up to :data:`SINGLE_THREAD_BELOW_ROWS` rows), else the whole budget."""
    budget = training_threads()
    if n_jobs is None:
        return 1 if n_rows <= SINGLE_THREAD_BELOW_ROWS else budget
    return max(1, min(int(n_jobs), budget))


def forest_n_jobs(n_jobs: int | None, n_rows: int) -> int:
    """Threads for random forests / extra trees: joblib threads do not spin-wait, so they
    use the whole budget unless ``n_jobs`` was given explicitly."""
    return training_threads() if n_jobs is None else resolve_n_jobs(n_jobs, n_rows)


def forest_fraction(fit_rows: int | None, max_samples: int | None) -> float | None:
    """Share of ``fit_rows`` a forest's tree may draw so that it sees at most ``max_samples``
    rows; ``None`` when there is no cap or the data is small enough."""
    if fit_rows is None or max_samples is None or fit_rows <= max_samples:
        return None
    return max_samples / fit_rows


def thread_limit(n_jobs: int) -> Any:
    """Context manager capping BLAS / OpenMP pools (e.g. HistGradientBoosting) to ``n_jobs``."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n_jobs)


def run_parallel(tasks: Sequence[Callable[[], T]], workers: int, threads_each: int) -> list[T]:
    """Run ``tasks`` (results in order) on ``workers`` threads, each task under a BLAS / OpenMP
    limit of ``threads_each``.  The fits release the GIL, so on small data two single-threaded
    fits side by side beat one fit on two threads (less fork/join and spin-waiting)."""

    def limited(task: Callable[[], T]) -> T:
        with thread_limit(threads_each):
            return task()

    if workers <= 1 or len(tasks) <= 1:
        return [limited(task) for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        return list(pool.map(limited, tasks))


def check_splits(splits: dict[str, pd.DataFrame], spec: FeatureSpec, label: str) -> None:
    """Raise a clear error if a split or a needed column is missing."""
    missing_splits = [s for s in SPLITS_REQUIRED if s not in splits]
    if missing_splits:
        raise KeyError(f"splits missing: {missing_splits} (need {list(SPLITS_REQUIRED)})")
    for name in SPLITS_REQUIRED:
        frame = splits[name]
        missing = spec.missing_columns(frame)
        if missing:
            raise KeyError(f"split {name!r} lacks feature columns {missing}")
        if label not in frame.columns:
            raise KeyError(f"split {name!r} lacks label column {label!r}")
        if len(frame) == 0:
            raise ValueError(f"split {name!r} is empty")
        leaked = set(spec.columns) & set(LABEL_COLUMNS)
        if leaked:
            raise ValueError(f"labels used as features: {sorted(leaked)}")


def features(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without label columns (pipelines select their own feature columns)."""
    return frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame.columns])


#: Rows a pipeline predicts at a time. Its intermediate arrays grow with the rows it is
#: given: poly_ridge's degree-2 terms are ~740 float64 columns, copied by each step, so
#: 474k validation rows at once took ~7 GB (the 1M-customer demo's peak).
PREDICT_CHUNK_ROWS = 50_000


def predict_in_chunks(
    predict: Callable[[Any], Any],
    X: Any,
    rows: int = PREDICT_CHUNK_ROWS,  # noqa: N803
) -> np.ndarray:
    """``predict(X)`` on at most ``rows`` rows of ``X`` (a DataFrame or an array) at a
    time, concatenated: the same predictions, row by row, in bounded memory."""
    n = len(X)
    if n <= rows:
        return np.asarray(predict(X))
    take = X.iloc if hasattr(X, "iloc") else X
    return np.concatenate([np.asarray(predict(take[i : i + rows])) for i in range(0, n, rows)])


def predict_single_threaded(estimator: Any) -> Any:
    """Set ``n_jobs=1`` on the fitted forests inside ``estimator`` (in place; returned).

    Forests sum their trees' predictions from several threads in completion order, so with
    ``n_jobs > 1`` predictions differ in the last bits from run to run.  Training with 2
    threads is deterministic; predicting with 1 keeps metrics bit-identical for a seed.
    """
    from sklearn.ensemble._forest import BaseForest

    if isinstance(estimator, BaseForest):
        estimator.n_jobs = 1
    for _, step in getattr(estimator, "steps", []):
        predict_single_threaded(step)
    for member in getattr(estimator, "estimators_", []) or []:
        if not isinstance(estimator, BaseForest):
            predict_single_threaded(member)
    for attr in ("regressor_",):
        if hasattr(estimator, attr):
            predict_single_threaded(getattr(estimator, attr))
    return estimator


def fit_timed(pipeline: Any, X: pd.DataFrame, y: np.ndarray) -> float:  # noqa: N803
    """Fit in place (then :func:`predict_single_threaded`); return wall seconds."""
    start = time.perf_counter()
    pipeline.fit(X, y)
    seconds = time.perf_counter() - start
    predict_single_threaded(pipeline)
    return seconds


def cv_predictions(
    pipeline: Any,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    predict: Callable[[Any, pd.DataFrame], np.ndarray],
) -> tuple[list[np.ndarray], float]:
    """Fit an unfitted clone per fold; return the out-of-fold predictions and wall seconds."""
    start = time.perf_counter()
    preds = []
    for train_idx, val_idx in folds:
        model = clone(pipeline)
        model.fit(X.iloc[train_idx], y[train_idx])
        predict_single_threaded(model)
        preds.append(np.asarray(predict(model, X.iloc[val_idx])))
    return preds, time.perf_counter() - start


def cv_summary(
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    preds: list[np.ndarray],
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    names: Iterable[str],
) -> dict[str, float]:
    """``{cv_<name>_mean, cv_<name>_sd}`` (sample sd) of ``metric_fn`` over the folds."""
    per_fold = [
        metric_fn(y[val_idx], pred) for (_, val_idx), pred in zip(folds, preds, strict=True)
    ]
    out: dict[str, float] = {}
    for name in names:
        vals = np.asarray([m[name] for m in per_fold], dtype=float)
        out[f"cv_{name}_mean"] = float(np.mean(vals))
        out[f"cv_{name}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def model_params(pipeline: Any) -> dict[str, Any]:
    """JSON-able hyper-parameters of the pipeline's final step (callables / objects dropped)."""
    model = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    params = {"estimator": type(model).__name__}
    for key, value in sorted(model.get_params(deep=False).items()):
        if isinstance(value, float) and not math.isfinite(value):
            params[key] = str(value)  # keep the JSON strict (no NaN / Infinity)
        elif callable(value) and hasattr(value, "__qualname__"):
            params[key] = f"{value.__module__}.{value.__qualname__}"
        elif _jsonable(value):
            params[key] = list(value) if isinstance(value, tuple) else value
    inner = getattr(model, "regressor", None)
    if inner is not None:
        params["regressor"] = model_params(inner)
    return params


def select_best(scores: dict[str, float], metric_greater_is_better: bool) -> str:
    """Name with the best score (ties -> alphabetical first; NaN never wins)."""
    valid = {k: v for k, v in scores.items() if v == v}
    if not valid:
        return sorted(scores)[0]
    sign = -1.0 if metric_greater_is_better else 1.0
    return min(valid, key=lambda k: (sign * valid[k], k))


def thread_plan(n_jobs: int | None, n_rows: int, staged: bool) -> tuple[int, int, int]:
    """``(threads, forest_threads, workers)`` of one model set: threads per model, per
    forest, and how many candidates fit side by side (staged procedure only)."""
    threads = resolve_n_jobs(n_jobs, n_rows)
    forest_threads = forest_n_jobs(n_jobs, n_rows)
    workers = max(1, training_threads() // threads) if staged else 1
    return threads, forest_threads, workers


def side_by_side(n_jobs: int | None, rows: int, staged: bool) -> tuple[int, int]:
    """``(workers, threads_each)`` for a phase that fits several candidates on ``rows`` rows
    each: the plan follows the rows of the fits themselves (a 20k-row screen of a 1M-row
    train split runs like a small data set: candidates side by side, one thread each)."""
    threads, _, workers = thread_plan(n_jobs, rows, staged)
    return workers, 1 if workers > 1 else threads


def model_threads(n_jobs: int | None, rows: int, staged: bool, forest: bool) -> int:
    """Threads of one model fitted on ``rows`` rows (1 when candidates fit side by side)."""
    threads, forest_threads, workers = thread_plan(n_jobs, rows, staged)
    return 1 if workers > 1 else forest_threads if forest else threads
