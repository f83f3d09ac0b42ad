"""Metrics for the classification and regression model sets."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

#: Whether a larger value is better, per metric name (used for ranking / champion choice).
GREATER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "accuracy": True,
    "brier": False,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
    "r2_gain_vs_naive": True,
    "rmse_gain_vs_naive": True,
    "mae_gain_vs_naive": True,
}


def greater_is_better(metric: str) -> bool:
    """Direction of ``metric``; raises ``KeyError`` for unknown metric names."""
    try:
        return GREATER_IS_BETTER[metric]
    except KeyError:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(GREATER_IS_BETTER)}") from None


def choose_threshold(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Probability threshold that maximises F1 on ``(y_true, proba)``.

    Predict positive when ``proba >= threshold``.  Returns 0.5 when there are no positives.
    Ties are broken towards the larger threshold (fewer positives).
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    if y.sum() == 0 or len(y) == 0:
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 == f1.max())
    return float(thresholds[best[-1]])


def classification_metrics(y_true: ArrayLike, proba: ArrayLike, threshold: float) -> dict:
    """ROC-AUC, PR-AUC (average precision), F1, precision, recall, accuracy at ``threshold``,
    Brier score and log loss.  Rank metrics are NaN when only one class is present."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    pred = (p >= threshold).astype(int)
    two_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if two_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if two_classes else float("nan"),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "brier": float(skm.brier_score_loss(y, p)),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
    }


def roc_auc_interval(
    auc: float, positives: int, negatives: int, confidence: float = 0.9
) -> tuple[float, float]:
    """Two-sided normal interval of a ROC-AUC measured on ``positives`` and ``negatives``
    rows, with the Hanley-McNeil (1982) standard error; clipped to [0, 1]. It says how far
    a holdout this size can move the figure (9 rows: about ±0.3; 2,000 rows: about ±0.02).

    At a perfect (or perfectly wrong) ranking that error is 0, which would claim certainty
    from a handful of rows (a perfect ranking is common there: 5 churned and 15 retained
    customers of a population at 0.98 rank perfectly on half of such holdouts); there the
    interval is Wilson's for a proportion of 1 (or 0) seen on as many rows as the smaller
    class has (6 churned customers, all ranked first: 90% interval 0.69-1.00)."""
    from scipy.stats import norm

    if positives < 1 or negatives < 1 or auc != auc:
        return float("nan"), float("nan")
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (
        auc * (1.0 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    z = float(norm.ppf(0.5 + confidence / 2.0))
    if var <= 0:  # a perfect ranking: Wilson's interval on the smaller class's rows
        n = min(positives, negatives)
        centre = (auc + z * z / (2 * n)) / (1 + z * z / n)
        spread = z * float(np.sqrt(auc * (1 - auc) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        return max(0.0, centre - spread), min(1.0, centre + spread)
    half = z * float(np.sqrt(var))
    return max(0.0, auc - half), min(1.0, auc + half)


def regression_metrics(y_true: ArrayLike, pred: ArrayLike) -> dict:
    """RMSE, MAE and R² of ``pred`` against ``y_true``."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(pred, dtype=float)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
        "mae": float(skm.mean_absolute_error(y, p)),
        "r2": float(skm.r2_score(y, p)),
    }
