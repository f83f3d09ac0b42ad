"""Small sklearn-compatible building blocks used inside the model pipelines.

Everything here ends up inside persisted pipelines, so the class / function paths are part
of the persistence allow-list (:mod:`churn_assets.lib.models.persistence`).  Renaming or
moving them breaks loading of previously saved models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .spec import NAIVE_COLUMN, category_label

#: Category used for nulls in categorical features.
MISSING_CATEGORY = "__missing__"


class FrameCleaner(TransformerMixin, BaseEstimator):
    """Select the feature columns and normalise their types.

    Numeric columns become ``float64`` (bool -> 0/1, pandas NA and +-inf -> NaN);
    categorical columns become ``object`` columns of canonical strings with nulls mapped to
    ``"__missing__"``.
    Output is a DataFrame with numeric columns first, then categorical ones.  A missing
    feature column raises ``KeyError``; extra columns are dropped.
    """

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None):
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: Any = None) -> FrameCleaner:  # noqa: N803 (sklearn API)
        """Check the columns are present and remember the feature names."""
        self._check(X)
        self.feature_names_out_ = np.asarray(
            [*(self.numeric or []), *(self.categorical or [])], dtype=object
        )
        return self

    def _check(self, X: Any) -> None:  # noqa: N803
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"FrameCleaner needs a pandas DataFrame, got {type(X).__name__}")
        cols = [*(self.numeric or []), *(self.categorical or [])]
        missing = [c for c in cols if c not in X.columns]
        if missing:
            raise KeyError(f"feature columns missing from input: {missing}")

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
        """Return the cleaned feature frame (same index as ``X``)."""
        check_is_fitted(self, "feature_names_out_")
        self._check(X)
        out: dict[str, Any] = {}
        for col in self.numeric or []:
            s = X[col]
            if pd.api.types.is_bool_dtype(s.dtype):
                s = s.astype("float64")
            values = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy(copy=True)
            values[~np.isfinite(values)] = np.nan  # +-inf -> missing
            out[col] = values
        for col in self.categorical or []:
            s = X[col]
            mask = s.isna().to_numpy()
            values = s.astype(object).map(category_label).to_numpy(dtype=object)
            values[mask] = MISSING_CATEGORY
            out[col] = values
        return pd.DataFrame(out, index=X.index, columns=list(self.feature_names_out_))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_


class NaiveBaselineRegressor(RegressorMixin, BaseEstimator):
    """Naive forecast: predicts ``X[column]`` if that column was present at fit time,
    otherwise the training mean of ``y``.

    Nulls in the naive column are replaced by the training mean and predictions are floored
    at 0 (sales cannot be negative).  If the column was present at fit time it must be
    present at predict time (``KeyError`` otherwise) -- silently switching to the mean would
    change the model.
    """

    def __init__(self, column: str = NAIVE_COLUMN):
        self.column = column

    def fit(self, X: pd.DataFrame, y: Any) -> NaiveBaselineRegressor:  # noqa: N803
        """Record the training mean and whether the naive column is available."""
        y_arr = np.asarray(y, dtype=float)
        self.mean_ = float(np.mean(y_arr)) if len(y_arr) else 0.0
        self.uses_column_ = bool(isinstance(X, pd.DataFrame) and self.column in X.columns)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Naive column (nulls -> training mean, floored at 0) or the training mean."""
        check_is_fitted(self, "mean_")
        n = len(X)
        if not self.uses_column_:
            return np.full(n, self.mean_, dtype=float)
        if not isinstance(X, pd.DataFrame) or self.column not in X.columns:
            raise KeyError(f"naive baseline needs column {self.column!r}")
        values = pd.to_numeric(X[self.column], errors="coerce").astype("float64")
        return np.maximum(values.fillna(self.mean_).to_numpy(), 0.0)


class NaiveBlendRegressor(RegressorMixin, BaseEstimator):
    """``weight * regressor + (1 - weight) * naive forecast``, floored at 0.

    Shrinks a value model toward the naive baseline (:class:`NaiveBaselineRegressor` on
    ``column``); ``weight=1`` is the model alone, ``0`` the naive forecast alone.  ``fit``
    fits both on the same rows.
    """

    def __init__(self, regressor: Any = None, weight: float = 1.0, column: str = NAIVE_COLUMN):
        self.regressor = regressor
        self.weight = weight
        self.column = column

    def fit(self, X: pd.DataFrame, y: Any) -> NaiveBlendRegressor:  # noqa: N803
        """Fit the model (a clone of ``regressor``) and the naive baseline on ``X``, ``y``."""
        from sklearn.base import clone

        if not 0.0 <= float(self.weight) <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight!r}")
        if self.regressor is None:
            raise ValueError("NaiveBlendRegressor needs a regressor")
        self.regressor_ = clone(self.regressor).fit(X, y)
        self.naive_ = NaiveBaselineRegressor(column=self.column).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """The blend of the two forecasts, floored at 0."""
        check_is_fitted(self, "regressor_")
        w = float(self.weight)
        blend = w * np.asarray(self.regressor_.predict(X), dtype=float)
        return np.maximum(blend + (1.0 - w) * self.naive_.predict(X), 0.0)


def expm1_nonneg(x: np.ndarray) -> np.ndarray:
    """Inverse of ``log1p`` for log-target models, floored at 0."""
    return np.maximum(np.expm1(x), 0.0)


def log1p_nonneg(x: np.ndarray) -> np.ndarray:
    """``log1p`` of the target floored at 0 (targets are sales, >= 0)."""
    return np.log1p(np.maximum(np.asarray(x, dtype=float), 0.0))
