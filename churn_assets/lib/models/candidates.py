"""The names of the candidate models of each model set (no training code: the data set
config checks its candidate lists against them when it loads)."""

from __future__ import annotations

#: Churn candidates trained on their own; ``ensemble`` averages the best of them.
CLASSIFICATION_BASE: tuple[str, ...] = (
    "logistic_regression",
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "xgboost",
    "lightgbm",
)
ENSEMBLE = "ensemble"
CLASSIFICATION: tuple[str, ...] = (*CLASSIFICATION_BASE, ENSEMBLE)

#: The value model set's naive forecast: always trained, the baseline every value model
#: must beat.
NAIVE = "naive_baseline"
REGRESSION: tuple[str, ...] = (
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


def candidate_list_problem(kind: str, names: list[str]) -> str | None:
    """Why ``names`` cannot be the candidate list of the ``kind`` ("classification" or
    "regression") model set, or None when it can."""
    known = CLASSIFICATION if kind == "classification" else REGRESSION
    unknown = [n for n in names if n not in known]
    if unknown:
        return f"unknown {kind} candidate(s) {unknown}; known: {', '.join(known)}"
    if kind == "classification" and not [n for n in names if n != ENSEMBLE]:
        return f"needs at least one candidate besides {ENSEMBLE!r} (it averages the others)"
    if kind == "regression" and not [n for n in names if n != NAIVE]:
        return f"needs at least one candidate besides {NAIVE!r} (always trained, as the baseline)"
    return None
