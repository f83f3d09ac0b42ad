"""Churn classification model set.

Candidates (each ONE sklearn ``Pipeline``: :class:`~.estimators.FrameCleaner` ->
ColumnTransformer -> model): ``logistic_regression``, ``random_forest``, ``extra_trees``,
``hist_gradient_boosting``, ``xgboost``, ``lightgbm`` and ``ensemble`` (soft voting of the
three best base candidates by validation ROC-AUC, refitted on train).

Protocol (see :func:`train_classification_set`):

* every pipeline is fitted on TRAIN only;
* ``cv`` = stratified k-fold CV on TRAIN (ROC-AUC, PR-AUC and the primary metric;
  threshold metrics at 0.5).  The ensemble's CV is computed from its members' out-of-fold
  probabilities (identical to cross-validating the VotingClassifier, without refitting);
* the decision threshold (max F1) and the champion are chosen on VALIDATION (the ensemble's
  members are also picked on validation, so its validation score is slightly optimistic);
* ``metrics`` are measured on HOLDOUT, which is never used for any choice.

Class imbalance: the models are NOT re-weighted by default (``reweight=False``).  The
imbalance is handled by the decision threshold (max F1 on validation) instead, which keeps
the predicted probabilities calibrated, so they can be used as probabilities downstream
(expected loss, campaign sizing).  On Telco re-weighting leaves ROC-AUC unchanged
(0.846 vs 0.846 for the champion) but worsens the Brier score from 0.135 to 0.164 and the
log loss from 0.416 to 0.487.  ``reweight=True`` switches to ``class_weight="balanced"`` /
``scale_pos_weight``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from . import _common, selection
from . import candidates as candidates_module
from .candidates import candidate_list_problem
from .leaderboard import CandidateResult, ModelSetResult
from .metrics import choose_threshold, classification_metrics, greater_is_better
from .preprocessing import (
    categorical_positions,
    frame_cleaner,
    linear_preprocessor,
    tree_pipeline,
)
from .selection import Procedure, SelectionPolicy, resolve_policy
from .spec import FeatureSpec

LABEL = "churned"
BASE_CANDIDATES: tuple[str, ...] = candidates_module.CLASSIFICATION_BASE
ENSEMBLE = candidates_module.ENSEMBLE
ALL_CANDIDATES: tuple[str, ...] = candidates_module.CLASSIFICATION
SIMPLE_CANDIDATES: frozenset[str] = frozenset({"logistic_regression"})
#: Number of base candidates (best validation ROC-AUC) in the soft-voting ensemble.
ENSEMBLE_SIZE = 3

#: Metrics usable as primary metric (keys of :func:`~.metrics.classification_metrics`).
CV_METRICS: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "f1",
    "precision",
    "recall",
    "accuracy",
)
#: Forests parallelise over trees with joblib threads (robust on busy CPUs): 2 threads.
FOREST_CANDIDATES: frozenset[str] = frozenset({"random_forest", "extra_trees"})
#: Rounds and learning rate of the XGBoost and LightGBM classifiers (depth-2 / 4-leaf trees).
#: 100 rounds at 0.1 give the holdout ROC-AUC of 500 at 0.02 on the synthetic, Telco and
#: Online Retail data (within +-0.002), for a fifth of the fitting and of the serving cost:
#: the soft-voting champion's ONNX graph holds 260 trees instead of 1,250.
BOOSTING_ROUNDS = 100
BOOSTING_LEARNING_RATE = 0.1


def _pos_weight(y: np.ndarray) -> float:
    pos = float(np.sum(y == 1))
    return float(np.sum(y == 0)) / pos if pos else 1.0


def _logistic_regression(
    spec: FeatureSpec, seed: int, reweight: bool, y: np.ndarray, n_jobs: int, cap: float | None
) -> Any:
    from sklearn.linear_model import LogisticRegression

    # Mild L2 regularisation: one-hot Telco-like data overfits slightly at C=1.
    model = LogisticRegression(
        C=0.1,
        max_iter=5000,
        class_weight="balanced" if reweight else None,
        random_state=seed,
    )
    return Pipeline(
        [("clean", frame_cleaner(spec)), ("prep", linear_preprocessor(spec)), ("model", model)]
    )


def _random_forest(
    spec: FeatureSpec, seed: int, reweight: bool, y: np.ndarray, n_jobs: int, cap: float | None
) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    # Bootstrap half-samples: ~2x faster, same ROC-AUC on Telco-like data. 100 trees: the
    # screen's slowest fit at 200, with the same holdout ROC-AUC on the three data sets.
    model = RandomForestClassifier(
        n_estimators=100,
        min_samples_leaf=10,
        max_features="sqrt",
        max_samples=min(0.5, cap) if cap is not None else 0.5,
        class_weight="balanced_subsample" if reweight else None,
        n_jobs=n_jobs,
        random_state=seed,
    )
    return tree_pipeline(spec, model, impute_numeric=True)


def _extra_trees(
    spec: FeatureSpec, seed: int, reweight: bool, y: np.ndarray, n_jobs: int, cap: float | None
) -> Any:
    from sklearn.ensemble import ExtraTreesClassifier

    model = ExtraTreesClassifier(
        n_estimators=100,
        min_samples_leaf=20,
        max_features="sqrt",
        # on large data each tree sees a capped bootstrap sample instead of every row
        bootstrap=cap is not None and cap < 1.0,
        max_samples=cap if cap is not None and cap < 1.0 else None,
        class_weight="balanced_subsample" if reweight else None,
        n_jobs=n_jobs,
        random_state=seed,
    )
    return tree_pipeline(spec, model, impute_numeric=True)


def _hist_gradient_boosting(
    spec: FeatureSpec, seed: int, reweight: bool, y: np.ndarray, n_jobs: int, cap: float | None
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # Native categorical handling; fixed number of iterations (no internal early-stopping
    # split) so the model sees all of train and stays deterministic. 60 iterations at 0.125
    # (the shrinkage of 250 at 0.03): same holdout ROC-AUC, a quarter of the trees to fit
    # and to serve (see BOOSTING_ROUNDS).
    model = HistGradientBoostingClassifier(
        learning_rate=0.125,
        max_iter=60,
        max_leaf_nodes=4,
        min_samples_leaf=40,
        l2_regularization=1.0,
        categorical_features=categorical_positions(spec),
        early_stopping=False,
        class_weight="balanced" if reweight else None,
        random_state=seed,
    )
    return tree_pipeline(spec, model)


def _xgboost(
    spec: FeatureSpec, seed: int, reweight: bool, y: np.ndarray, n_jobs: int, cap: float | None
) -> Any:
    from xgboost import XGBClassifier

    model = XGBClassifier(
        n_estimators=BOOSTING_ROUNDS,
        learning_rate=BOOSTING_LEARNING_RATE,
        max_depth=2,
        min_child_weight=5,
        subsample=0.8,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        tree_method="hist",
        scale_pos_weight=_pos_weight(y) if reweight else 1.0,
        eval_metric="logloss",
        n_jobs=n_jobs,
        random_state=seed,
    )
    return tree_pipeline(spec, model)


def _lightgbm(
    spec: FeatureSpec, seed: int, reweight: bool, y: np.ndarray, n_jobs: int, cap: float | None
) -> Any:
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(
        n_estimators=BOOSTING_ROUNDS,
        learning_rate=BOOSTING_LEARNING_RATE,
        num_leaves=4,
        min_child_samples=40,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        class_weight="balanced" if reweight else None,
        deterministic=True,
        force_row_wise=True,
        n_jobs=n_jobs,
        random_state=seed,
        verbose=-1,
    )
    return tree_pipeline(spec, model)


_FACTORIES: dict[str, Callable[[FeatureSpec, int, bool, np.ndarray, int, float | None], Any]] = {
    "logistic_regression": _logistic_regression,
    "random_forest": _random_forest,
    "extra_trees": _extra_trees,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
}


def build_classifier(
    name: str,
    spec: FeatureSpec,
    *,
    seed: int = 42,
    reweight: bool = False,
    y_train: np.ndarray | None = None,
    n_jobs: int = 1,
    fit_rows: int | None = None,
    forest_max_samples: int | None = None,
) -> Pipeline:
    """Unfitted pipeline of base candidate ``name``.

    ``y_train`` is only needed with ``reweight`` (XGBoost's ``scale_pos_weight``); ``n_jobs``
    is the thread count of the model.  With ``forest_max_samples`` and the ``fit_rows`` the
    pipeline will be fitted on, each tree of the forests draws at most that many rows (the
    forests' cost then stops growing with the data).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown classification candidate {name!r}; known: {BASE_CANDIDATES}")
    y = np.asarray(y_train if y_train is not None else [0, 1])
    cap = _common.forest_fraction(fit_rows, forest_max_samples)
    return _FACTORIES[name](spec, seed, reweight, y, n_jobs, cap)


def build_ensemble(members: dict[str, Pipeline]) -> Pipeline:
    """Soft-voting ensemble (equal weights) of unfitted clones of ``members``."""
    from sklearn.ensemble import VotingClassifier

    voting = VotingClassifier(
        [(name, clone(pipe)) for name, pipe in members.items()], voting="soft", n_jobs=1
    )
    return Pipeline([("model", voting)])


def assemble_ensemble(members: dict[str, Pipeline], y: np.ndarray) -> Pipeline:
    """The fitted soft-voting ensemble of already fitted ``members`` (fitted on labels ``y``).

    Identical to fitting :func:`build_ensemble` on the members' data (the members are
    deterministic clones), without fitting them a second time.
    """
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import Bunch

    pipeline = build_ensemble(members)
    voting = pipeline.named_steps["model"]
    voting.estimators_ = list(members.values())
    voting.named_estimators_ = Bunch(**members)
    voting.le_ = LabelEncoder().fit(y)
    voting.classes_ = voting.le_.classes_
    first = next(iter(members.values()))
    if hasattr(first, "feature_names_in_"):
        voting.feature_names_in_ = first.feature_names_in_
    return pipeline


def _positive_proba(pipeline: Any, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
    return _common.predict_in_chunks(pipeline.predict_proba, X)[:, 1]


def _resolve_candidates(candidates: Sequence[str] | None) -> list[str]:
    names = list(ALL_CANDIDATES if candidates is None else candidates)
    problem = candidate_list_problem("classification", names)
    if problem:
        raise ValueError(f"models.classification_candidates: {problem}")
    return list(dict.fromkeys(names))


def train_classification_set(
    splits: dict[str, pd.DataFrame],
    spec: FeatureSpec,
    *,
    seed: int = 42,
    primary_metric: str = "roc_auc",
    candidates: list[str] | None = None,
    cv_folds: int = 5,
    reweight: bool = False,
    label: str = LABEL,
    n_jobs: int | None = None,
    policy: SelectionPolicy | Procedure | None = None,
) -> ModelSetResult:
    """Train, cross-validate and evaluate the churn classification candidates.

    Args:
        splits: ``{"train", "validation", "holdout"}`` frames (e.g. from
            :func:`~.splits.split_snapshot`) with the feature columns and ``label``.
        spec: feature spec; labels must not be features.
        seed: random state of every model, of the subsamples and of the CV folds.
        primary_metric: metric for champion choice (a key of
            :func:`~.metrics.classification_metrics`; direction handled).
        candidates: subset of :data:`ALL_CANDIDATES` (default: all); ``"ensemble"`` needs at
            least two base candidates and soft-votes the best ``min(3, n)`` of the finalists.
        cv_folds: folds of the ``StratifiedKFold(shuffle=True, random_state=seed)`` CV on
            train; ``0`` or ``1`` disables CV (``cv`` is then empty, selection on validation).
        reweight: re-weight classes (see module docstring; default off).
        label: binary label column.
        n_jobs: threads per model (capped at :func:`~._common.training_threads`); ``None`` = 1
            below 20,000 train rows (then candidates train side by side, one per CPU), else
            the whole budget.  BLAS / OpenMP pools are capped accordingly.
        policy: selection procedure (:mod:`.selection`); default staged.

    Returns:
        :class:`ModelSetResult` -- thresholds (max F1) chosen on VALIDATION; champion as
        ``result.selection`` says; ``metrics`` measured on HOLDOUT (for a refitted candidate,
        of the refit); ``best_simple`` is ``logistic_regression`` when trained (else the
        champion).
    """
    pol = resolve_policy(policy)
    greater = greater_is_better(primary_metric)
    if primary_metric not in CV_METRICS:
        raise ValueError(f"unsupported primary metric {primary_metric!r}")
    _common.check_splits(splits, spec, label)
    names = _resolve_candidates(candidates)
    base = [n for n in names if n != ENSEMBLE]
    X_tr, X_va, X_ho = (_common.features(splits[s]) for s in _common.SPLITS_REQUIRED)  # noqa: N806
    y_tr, y_va, y_ho = (splits[s][label].astype(int).to_numpy() for s in _common.SPLITS_REQUIRED)
    if len(np.unique(y_tr)) < 2:
        raise ValueError("train split has a single class")
    n_tr = len(X_tr)
    seconds: dict[str, float] = {}

    def build(name: str, rows: int) -> Pipeline:
        jobs = _common.model_threads(n_jobs, rows, pol.staged, name in FOREST_CANDIDATES)
        return build_classifier(
            name,
            spec,
            seed=seed,
            reweight=reweight,
            y_train=y_tr,
            n_jobs=jobs,
            fit_rows=rows,
            forest_max_samples=pol.forest_max_samples,
        )

    def fit_task(name: str, X: pd.DataFrame, y: np.ndarray) -> Callable[[], _Fit]:  # noqa: N803
        def run() -> _Fit:
            pipeline = build(name, len(y))
            params = _common.model_params(pipeline)  # before fit: as configured
            secs = _common.fit_timed(pipeline, X, y)
            return _Fit(pipeline, params, secs, len(y), _positive_proba(pipeline, X_va))

        return run

    def val_score(p_va: np.ndarray) -> float:
        return classification_metrics(y_va, p_va, choose_threshold(y_va, p_va))[primary_metric]

    # 1. screen: every base candidate once (on a subsample of a large train split)
    screen = (
        selection.subsample_positions(n_tr, pol.screen_max_rows, seed, y_tr)
        if pol.staged and len(base) > pol.finalists
        else None
    )
    X_s, y_s = (X_tr, y_tr) if screen is None else (X_tr.iloc[screen], y_tr[screen])  # noqa: N806
    started = time.perf_counter()
    fits = dict(
        zip(
            base,
            _common.run_parallel(
                [fit_task(n, X_s, y_s) for n in base],
                *_common.side_by_side(n_jobs, len(y_s), pol.staged),
            ),
            strict=True,
        )
    )
    seconds["screen"] = time.perf_counter() - started
    screen_scores = {n: val_score(f.p_va) for n, f in fits.items()}
    finalists = selection.rank(screen_scores, greater)[: pol.finalists]
    # 2. CV of the finalists (out-of-fold probabilities; the ensemble's come from its members)
    cv_rows = (
        selection.subsample_positions(n_tr, pol.cv_max_rows, seed, y_tr) if pol.staged else None
    )
    X_cv, y_cv = (X_tr, y_tr) if cv_rows is None else (X_tr.iloc[cv_rows], y_tr[cv_rows])  # noqa: N806
    smallest_class = int(min(np.sum(y_cv == 1), np.sum(y_cv == 0)))
    cv_skipped = (
        f"no cross-validation: train holds {smallest_class} customer(s) of its smaller class, "
        f"fewer than cv_folds ({cv_folds}), so a fold would score no churned customer"
        if cv_folds and cv_folds > 1 and smallest_class < cv_folds
        else None
    )
    folds = (
        list(StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(X_cv, y_cv))
        if cv_folds and cv_folds > 1 and cv_skipped is None
        else []
    )
    cv_names = list(dict.fromkeys(["roc_auc", "pr_auc", primary_metric]))
    oof: dict[str, list[np.ndarray]] = {}
    cv_seconds: dict[str, float] = {}
    if folds:
        started = time.perf_counter()
        tasks = [
            _fold_task(build(n, len(tr)), X_cv, y_cv, tr, va) for n in finalists for tr, va in folds
        ]
        fold_rows = len(folds[0][0])
        outs = _common.run_parallel(tasks, *_common.side_by_side(n_jobs, fold_rows, pol.staged))
        for i, name in enumerate(finalists):
            chunk = outs[i * len(folds) : (i + 1) * len(folds)]
            oof[name] = [pred for pred, _ in chunk]
            cv_seconds[name] = sum(secs for _, secs in chunk)
        seconds["cv"] = time.perf_counter() - started

    def cv_scores(preds: list[np.ndarray]) -> dict[str, float]:
        # Threshold metrics in CV use 0.5 (as sklearn's scorers do).
        return _common.cv_summary(
            y_cv, folds, preds, lambda y, p: classification_metrics(y, p, 0.5), cv_names
        )

    p_ho: dict[str, np.ndarray] = {}  # holdout probabilities of the train-only fits

    def candidate(name: str, fit: _Fit, stage: str) -> CandidateResult:
        threshold = choose_threshold(y_va, fit.p_va)
        if name not in p_ho:
            p_ho[name] = _positive_proba(fit.pipeline, X_ho)
        return CandidateResult(
            name=name,
            pipeline=fit.pipeline,
            metrics=classification_metrics(y_ho, p_ho[name], threshold),
            cv=cv_scores(oof[name]) if name in oof else {},
            threshold=threshold,
            params=fit.params,
            train_seconds=fit.seconds,
            kind="classification",
            is_simple=name in SIMPLE_CANDIDATES,
            validation_metrics=classification_metrics(y_va, fit.p_va, threshold),
            cv_seconds=cv_seconds.get(name, 0.0),
            fit_rows=fit.rows,
            stage=stage,
        )

    started = time.perf_counter()
    results = [candidate(n, fits[n], "finalist" if n in finalists else "screened") for n in base]
    if ENSEMBLE in names and len(finalists) >= 2:
        ranked = sorted(
            (r for r in results if r.name in finalists),
            key=lambda r: (-_nan_low(r.validation_metrics["roc_auc"]), r.name),
        )
        members = [r.name for r in ranked[:ENSEMBLE_SIZE]]
        p_va = np.mean([fits[m].p_va for m in members], axis=0)
        # soft voting = the mean of the members' probabilities (as for validation above)
        p_ho[ENSEMBLE] = np.mean([p_ho[m] for m in members], axis=0)
        pipeline = assemble_ensemble({m: fits[m].pipeline for m in members}, y_tr)
        if folds:
            # Soft voting = mean of the members' probabilities, and the members' fold
            # models are exactly the ones a VotingClassifier would fit on each fold.
            oof[ENSEMBLE] = [
                np.mean(fold, axis=0) for fold in zip(*(oof[m] for m in members), strict=True)
            ]
        fit = _Fit(
            pipeline,
            {"estimator": "VotingClassifier", "voting": "soft", "members": members},
            sum(fits[m].seconds for m in members),
            fits[members[0]].rows,
            p_va,
        )
        results.append(candidate(ENSEMBLE, fit, "finalist"))
        finalists = [*finalists, ENSEMBLE]
    seconds["evaluate"] = time.perf_counter() - started

    by_name = {r.name: r for r in results}
    val = {r.name: r.validation_metrics[primary_metric] for r in results}
    record: dict[str, Any] = {
        "procedure": pol.procedure,
        "policy": pol.to_dict(),
        "primary_metric": primary_metric,
        "train_rows": n_tr,
        "screen_rows": len(y_s),
        "cv_rows": len(y_cv) if folds else 0,
        "cv_folds": len(folds),
        **({"cv_skipped": cv_skipped} if cv_skipped else {}),
        "finalists": finalists,
        "excluded": {
            r.name: "screened out: not among the best on validation"
            for r in results
            if r.name not in finalists
        },
        "threshold_source": "validation (max F1), chosen before any refit",
        "fallback_to_naive": False,
    }
    if pol.staged:
        combined = {
            n: selection.combined_score(val[n], by_name[n].cv.get(f"cv_{primary_metric}_mean"))
            for n in finalists
        }
        champion = selection.rank(combined, greater)[0]
        record["rule"] = (
            f"best of the finalists on the mean of validation {primary_metric} and CV "
            f"{primary_metric} mean"
            if folds
            else f"best finalist on validation {primary_metric}"
        )
    else:
        combined = dict(val)
        champion = _common.select_best(val, greater)
        record["rule"] = f"best candidate on validation {primary_metric}"
    record["scores"] = {
        r.name: {
            "validation": selection.finite(val[r.name]),
            "cv_mean": selection.finite(r.cv.get(f"cv_{primary_metric}_mean")),
            "combined": selection.finite(combined.get(r.name)),
        }
        for r in results
    }
    simple = {n: s for n, s in val.items() if n in SIMPLE_CANDIDATES}
    best_simple = _common.select_best(simple, greater) if simple else champion

    # 3. final fit: the champion and the serving fallback on train + validation
    refit: list[str] = []
    if pol.staged:
        started = time.perf_counter()
        # without the refit, a champion screened on a subsample still gets all of train
        X_all = pd.concat([X_tr, X_va]) if pol.refit else X_tr  # noqa: N806
        y_all = np.concatenate([y_tr, y_va]) if pol.refit else y_tr
        for name in dict.fromkeys([champion, best_simple]):
            res = by_name[name]
            if res.fit_rows == len(y_all):
                continue
            if name == ENSEMBLE:
                members = res.params["members"]
                refits = _common.run_parallel(
                    [_refit_task(build(m, len(y_all)), X_all, y_all) for m in members],
                    *_common.side_by_side(n_jobs, len(y_all), pol.staged),
                )
                pipeline = assemble_ensemble(dict(zip(members, refits, strict=True)), y_all)
            else:
                pipeline = _common.run_parallel(
                    [_refit_task(build(name, len(y_all)), X_all, y_all)],
                    1,
                    _common.side_by_side(n_jobs, len(y_all), pol.staged)[1],
                )[0]
            res.metrics_before_refit = res.metrics
            res.pipeline = pipeline
            res.metrics = classification_metrics(
                y_ho, _positive_proba(pipeline, X_ho), res.threshold
            )
            res.fit_rows = len(y_all)
            res.stage = "refit" if pol.refit else "finalist"
            refit.append(name)
        seconds["refit"] = time.perf_counter() - started
    record["refit"] = refit
    record["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return ModelSetResult(
        kind="classification",
        candidates=results,
        champion=champion,
        best_simple=best_simple,
        primary_metric=primary_metric,
        seed=seed,
        feature_spec=spec.to_dict(),
        selection=record,
    )


@dataclass
class _Fit:
    pipeline: Any
    params: dict[str, Any]
    seconds: float
    rows: int
    p_va: np.ndarray


def _fold_task(
    pipeline: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,  # noqa: N803
) -> Callable[[], tuple[np.ndarray, float]]:
    def run() -> tuple[np.ndarray, float]:
        secs = _common.fit_timed(pipeline, X.iloc[train], y[train])
        return _positive_proba(pipeline, X.iloc[test]), secs

    return run


def _refit_task(pipeline: Any, X: pd.DataFrame, y: np.ndarray) -> Callable[[], Any]:  # noqa: N803
    def run() -> Any:
        _common.fit_timed(pipeline, X, y)
        return pipeline

    return run


def _nan_low(value: float) -> float:
    return value if value == value else -np.inf
