"""Customer-value (future ``total_sales``) regression model set.

Candidates (each ONE sklearn ``Pipeline``): ``naive_baseline`` (``naive_total_sales`` when
present, else the training mean), ``ridge``, ``poly_ridge`` (degree-2 numeric terms),
``random_forest``, ``hist_gradient_boosting``, ``xgboost``, ``lightgbm`` and two heavy-tail
variants: ``lightgbm_tweedie`` (Tweedie objective, log link) and ``hgb_log_target``
(HistGradientBoosting on ``log1p(y)``, predictions ``expm1`` floored at 0).

Protocol: fitted on TRAIN, k-fold CV on TRAIN, champion chosen on VALIDATION (the naive
baseline is never champion, but always trained and kept in the leaderboard), metrics on
HOLDOUT, including ``r2_gain_vs_naive`` / ``rmse_gain_vs_naive`` / ``mae_gain_vs_naive``
(model minus naive for R², naive minus model for the errors: positive = better than naive).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline

from . import _common
from .estimators import NaiveBaselineRegressor, expm1_nonneg, log1p_nonneg
from .leaderboard import CandidateResult, ModelSetResult
from .metrics import greater_is_better, regression_metrics
from .preprocessing import (
    categorical_positions,
    frame_cleaner,
    linear_preprocessor,
    tree_pipeline,
    tree_preprocessor,
)
from .spec import NAIVE_COLUMN, FeatureSpec

LABEL = "total_sales"
NAIVE = "naive_baseline"
ALL_CANDIDATES: tuple[str, ...] = (
    NAIVE,
    "ridge",
    "poly_ridge",
    "random_forest",
    "hist_gradient_boosting",
    "xgboost",
    "lightgbm",
    "lightgbm_tweedie",
    "hgb_log_target",
)
SIMPLE_CANDIDATES: frozenset[str] = frozenset({NAIVE, "ridge"})
#: Metrics usable as primary metric.
CV_METRICS: tuple[str, ...] = ("r2", "rmse", "mae")
FOREST_CANDIDATES: frozenset[str] = frozenset({"random_forest"})


def _naive(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    # Reads the raw frame: uses naive_total_sales whenever the input has it.
    return Pipeline([("model", NaiveBaselineRegressor(column=NAIVE_COLUMN))])


def _ridge(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    from sklearn.linear_model import Ridge

    return Pipeline(
        [
            ("clean", frame_cleaner(spec)),
            ("prep", linear_preprocessor(spec)),
            ("model", Ridge(alpha=1.0)),
        ]
    )


def _poly_ridge(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    from sklearn.linear_model import Ridge

    return Pipeline(
        [
            ("clean", frame_cleaner(spec)),
            ("prep", linear_preprocessor(spec, poly_degree=2)),
            ("model", Ridge(alpha=10.0)),
        ]
    )


def _random_forest(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(
        n_estimators=150,
        min_samples_leaf=5,
        max_features=0.33,
        max_samples=0.5,
        n_jobs=n_jobs,
        random_state=seed,
    )
    return tree_pipeline(spec, model, impute_numeric=True)


def _hgb(spec: FeatureSpec, seed: int, **kwargs: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        categorical_features=categorical_positions(spec),
        early_stopping=False,
        random_state=seed,
        **kwargs,
    )


def _hist_gradient_boosting(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    return Pipeline(
        [
            ("clean", frame_cleaner(spec)),
            ("prep", tree_preprocessor(spec, impute_numeric=False)),
            ("model", _hgb(spec, seed)),
        ]
    )


def _hgb_log_target(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    from sklearn.compose import TransformedTargetRegressor

    model = TransformedTargetRegressor(
        regressor=_hgb(spec, seed),
        func=log1p_nonneg,
        inverse_func=expm1_nonneg,
        check_inverse=False,
    )
    return tree_pipeline(spec, model)


def _xgboost(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    from xgboost import XGBRegressor

    model = XGBRegressor(
        n_estimators=400,
        learning_rate=0.05,
        max_depth=4,
        min_child_weight=5,
        subsample=0.8,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        tree_method="hist",
        n_jobs=n_jobs,
        random_state=seed,
    )
    return tree_pipeline(spec, model)


def _lgbm(seed: int, n_jobs: int, **kwargs: Any) -> Any:
    from lightgbm import LGBMRegressor

    params: dict[str, Any] = {
        "n_estimators": 400,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 20,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "deterministic": True,
        "force_row_wise": True,
        "n_jobs": n_jobs,
        "random_state": seed,
        "verbose": -1,
    }
    params.update(kwargs)
    return LGBMRegressor(**params)


def _lightgbm(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    return Pipeline(
        [
            ("clean", frame_cleaner(spec)),
            ("prep", tree_preprocessor(spec, impute_numeric=False)),
            ("model", _lgbm(seed, n_jobs)),
        ]
    )


def _lightgbm_tweedie(spec: FeatureSpec, seed: int, n_jobs: int) -> Any:
    # Tweedie (compound Poisson-gamma, log link): zero mass + heavy right tail; predictions
    # are exp(raw score) > 0.
    model = _lgbm(seed, n_jobs, objective="tweedie", tweedie_variance_power=1.5)
    return tree_pipeline(spec, model)


_FACTORIES: dict[str, Callable[[FeatureSpec, int, int], Any]] = {
    NAIVE: _naive,
    "ridge": _ridge,
    "poly_ridge": _poly_ridge,
    "random_forest": _random_forest,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "lightgbm_tweedie": _lightgbm_tweedie,
    "hgb_log_target": _hgb_log_target,
}


def build_regressor(name: str, spec: FeatureSpec, *, seed: int = 42, n_jobs: int = 1) -> Pipeline:
    """Unfitted pipeline of regression candidate ``name`` (``n_jobs`` threads, <= 2)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown regression candidate {name!r}; known: {ALL_CANDIDATES}")
    return _FACTORIES[name](spec, seed, n_jobs)


def train_regression_set(
    splits: dict[str, pd.DataFrame],
    spec: FeatureSpec,
    *,
    seed: int = 42,
    primary_metric: str = "r2",
    candidates: list[str] | None = None,
    cv_folds: int = 5,
    label: str = LABEL,
    n_jobs: int | None = None,
) -> ModelSetResult:
    """Train, cross-validate and evaluate the regression candidates.

    Args:
        splits: ``{"train", "validation", "holdout"}`` frames (e.g. from
            :func:`~.splits.split_random`) with the features and ``label`` (>= 0).
        spec: feature spec (``naive_total_sales`` may be a feature).
        seed: random state of every model and of the CV folds.
        primary_metric: ``"r2"`` (default), ``"rmse"`` or ``"mae"``.
        candidates: subset of :data:`ALL_CANDIDATES`; ``naive_baseline`` is ALWAYS trained
            (it is the reference of the ``*_gain_vs_naive`` metrics) and stays in the
            leaderboard.
        cv_folds: folds of ``KFold(shuffle=True, random_state=seed)`` on train; ``0``/``1``
            disables CV.
        label: target column.
        n_jobs: threads per model (capped at 2); ``None`` = 1 below 20,000 train rows
            (faster there), else 2.  BLAS / OpenMP pools are capped accordingly.

    Returns:
        :class:`ModelSetResult` with ``threshold=None`` for every candidate; the champion
        is the best non-naive candidate on VALIDATION (even when the naive baseline is
        better -- then its ``r2_gain_vs_naive`` is negative); ``best_simple`` is the better
        of ``ridge`` and ``naive_baseline`` on validation.
    """
    greater = greater_is_better(primary_metric)
    if primary_metric not in CV_METRICS:
        raise ValueError(f"unsupported primary metric {primary_metric!r}; use r2, rmse or mae")
    _common.check_splits(splits, spec, label)
    names = list(ALL_CANDIDATES if candidates is None else candidates)
    unknown = [n for n in names if n not in ALL_CANDIDATES]
    if unknown:
        raise ValueError(f"unknown regression candidates {unknown}; known: {ALL_CANDIDATES}")
    names = list(dict.fromkeys([NAIVE, *names]))
    if len(names) < 2:
        raise ValueError("need at least one candidate besides naive_baseline")

    X_tr, X_va, X_ho = (_common.features(splits[s]) for s in _common.SPLITS_REQUIRED)  # noqa: N806
    y_tr, y_va, y_ho = (
        splits[s][label].astype("float64").to_numpy() for s in _common.SPLITS_REQUIRED
    )
    if not (np.isfinite(y_tr).all() and np.isfinite(y_va).all() and np.isfinite(y_ho).all()):
        raise ValueError(f"label {label!r} has missing or infinite values")
    if min(y_tr.min(), y_va.min(), y_ho.min()) < 0:
        raise ValueError(f"label {label!r} must be >= 0 (floor refunds upstream)")
    cv_names = list(dict.fromkeys(["r2", "rmse", primary_metric]))
    folds = (
        list(KFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(X_tr))
        if cv_folds and cv_folds > 1
        else []
    )

    threads = _common.resolve_n_jobs(n_jobs, len(X_tr))
    forest_threads = _common.forest_n_jobs(n_jobs, len(X_tr))
    results: list[CandidateResult] = []
    with _common.thread_limit(threads):
        for name in names:
            jobs = forest_threads if name in FOREST_CANDIDATES else threads
            pipeline = build_regressor(name, spec, seed=seed, n_jobs=jobs)
            params = _common.model_params(pipeline)  # before fit: as configured
            seconds = _common.fit_timed(pipeline, X_tr, y_tr)
            val_metrics = regression_metrics(y_va, pipeline.predict(X_va))
            ho_metrics = regression_metrics(y_ho, pipeline.predict(X_ho))
            cv_scores, cv_seconds = {}, 0.0
            if folds:
                preds, cv_seconds = _common.cv_predictions(
                    pipeline, X_tr, y_tr, folds, lambda model, X: model.predict(X)
                )
                cv_scores = _common.cv_summary(y_tr, folds, preds, regression_metrics, cv_names)
            results.append(
                CandidateResult(
                    name=name,
                    pipeline=pipeline,
                    metrics=ho_metrics,
                    cv=cv_scores,
                    threshold=None,
                    params=params,
                    train_seconds=seconds,
                    kind="regression",
                    is_simple=name in SIMPLE_CANDIDATES,
                    validation_metrics=val_metrics,
                    cv_seconds=cv_seconds,
                )
            )

    naive = next(r for r in results if r.name == NAIVE)
    for res in results:
        for metrics, ref in (
            (res.metrics, naive.metrics),
            (res.validation_metrics, naive.validation_metrics),
        ):
            base = dict(metrics)
            metrics["r2_gain_vs_naive"] = base["r2"] - ref["r2"]
            metrics["rmse_gain_vs_naive"] = ref["rmse"] - base["rmse"]
            metrics["mae_gain_vs_naive"] = ref["mae"] - base["mae"]

    val_scores = {r.name: r.validation_metrics[primary_metric] for r in results}
    champion = _common.select_best({k: v for k, v in val_scores.items() if k != NAIVE}, greater)
    simple = {k: v for k, v in val_scores.items() if k in SIMPLE_CANDIDATES}
    best_simple = _common.select_best(simple, greater)
    return ModelSetResult(
        kind="regression",
        candidates=results,
        champion=champion,
        best_simple=best_simple,
        primary_metric=primary_metric,
        seed=seed,
        feature_spec=spec.to_dict(),
    )
