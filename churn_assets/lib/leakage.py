"""Label leakage: a column that predicts churn almost perfectly on its own.

Such a column is nearly always recorded after the outcome (a "churn value" beside the churn
label, a churn reason blank for those who stayed, a churn score from another model), and a
model trained with it is perfect on paper and useless in service. Each column is judged
alone and out of fold: its per-value churn rate (numbers in 20 quantile bins, a missing value
as a value of its own) learnt on one half of the rows scores the other half.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

#: A single column at or above this out-of-fold ROC-AUC is taken for a leak (a whole model
#: on the shipped data sets reaches 0.75-0.97; no single feature of theirs reaches 0.95).
LEAK_ROC_AUC = 0.99
#: Rows judged (a seeded sample beyond this).
MAX_ROWS = 200_000
BINS = 20


def _keys(values: pl.Series) -> pl.Series:
    """A value per row: the text, or the quantile bin of a number; missing as its own."""
    if values.dtype.is_numeric() or values.dtype == pl.Boolean:
        x = values.cast(pl.Float64).to_frame("x")
        x = x.select(pl.when(pl.col("x").is_finite()).then(pl.col("x"))).to_series()
        ranks = x.rank("min") / max(x.drop_nulls().len(), 1)
        keys = (ranks * BINS).floor().cast(pl.Int64).cast(pl.String)
    else:
        keys = values.cast(pl.String)
    return keys.fill_null("<missing>")


def single_column_roc_auc(values: pl.Series, churned: np.ndarray, seed: int = 0) -> float:
    """Out-of-fold ROC-AUC of ``values`` alone for the 0/1 ``churned``; 0.5 when the label
    has one class or the column one value."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(churned, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    fold = np.random.default_rng(seed).permutation(len(y)) % 2
    frame = pl.DataFrame({"k": _keys(values), "y": y, "fold": fold})
    prior = float(y.mean())
    scores = np.empty(len(y))
    for f in (0, 1):
        rates = (
            frame.filter(pl.col("fold") != f)
            .group_by("k")
            .agg(((pl.col("y").sum() + prior) / (pl.len() + 1)).alias("rate"))
        )
        part = frame.with_row_index("i").filter(pl.col("fold") == f)
        scored = part.join(rates, on="k", how="left").sort("i")
        scores[scored["i"].to_numpy()] = scored["rate"].fill_null(prior).to_numpy()
    return float(roc_auc_score(y, scores))


def leaking_columns(
    frame: pl.DataFrame,
    churned: np.ndarray,
    columns: Iterable[str],
    threshold: float = LEAK_ROC_AUC,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """The columns of ``frame`` whose single-column ROC-AUC reaches ``threshold``, and every
    column's ROC-AUC (highest first). ``churned`` is 0/1 per row of ``frame``."""
    y = np.asarray(churned)
    if frame.height > MAX_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(frame.height, MAX_ROWS, replace=False))
        frame, y = frame[rows], y[rows]
    aucs = {c: single_column_roc_auc(frame[c], y, seed) for c in columns}
    ranked = dict(sorted(aucs.items(), key=lambda kv: -kv[1]))
    return {c: a for c, a in ranked.items() if a >= threshold}, ranked
