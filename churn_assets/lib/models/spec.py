"""Feature specification and feature schema for the model sets.

The feature spec says which columns of the ``customer_features`` table are model inputs and
how they are treated (numeric vs categorical).  The feature schema adds the observed ranges
and categories so that serving can validate requests against what the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Columns that are never features (ids, labels, bookkeeping).
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "customer_id",
    "churned",
    "total_sales",
    "cutoff",
    "split_group",
)

#: A numeric column with fewer values than this in the training rows is not a feature.
MIN_FEATURE_VALUES = 10

#: Optional column with the naive regression forecast (allowed as a feature).
NAIVE_COLUMN = "naive_total_sales"


def _is_categorical_dtype(dtype: Any) -> bool:
    return (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    )


def _is_numeric_dtype(dtype: Any) -> bool:
    # bool counts as numeric (0/1); datetimes / timedeltas are never features.
    return pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_datetime64_any_dtype(dtype)
        and not pd.api.types.is_timedelta64_dtype(dtype)
    )


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns are features, split into numeric and categorical ones.

    Numeric features are float / int / bool columns; categorical features are str /
    object / pandas ``category`` columns (nulls allowed).  Order is preserved and is the
    order the pipelines see the columns in.
    """

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    #: Columns :meth:`infer` left out, and why (not part of the spec's identity).
    left_out: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"columns both numeric and categorical: {sorted(overlap)}")
        # Frozen dataclass: normalise to plain lists of str without mutating semantics.
        object.__setattr__(self, "numeric", [str(c) for c in self.numeric])
        object.__setattr__(self, "categorical", [str(c) for c in self.categorical])

    @property
    def columns(self) -> list[str]:
        """All feature columns: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @classmethod
    def infer(cls, df: pd.DataFrame, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> FeatureSpec:
        """Infer the spec from dtypes, skipping ``exclude`` and non-feature dtypes.

        ``split_group`` is excluded by default as well; datetime columns are never features.
        ``naive_total_sales`` (when present) is kept as a numeric feature.
        """
        excluded = set(exclude)
        numeric: list[str] = []
        categorical: list[str] = []
        left_out: dict[str, str] = {}
        for col in df.columns:
            if col in excluded:
                continue
            dtype = df[col].dtype
            if _is_numeric_dtype(dtype):
                # a column (almost) without values teaches nothing, and a cross-validation
                # fold whose rows all lack it broke the tree models' binning
                known = int(df[col].notna().sum())
                if known < MIN_FEATURE_VALUES:
                    left_out[str(col)] = (
                        f"{known} value(s) in {len(df)} training rows (fewer than "
                        f"{MIN_FEATURE_VALUES})"
                    )
                    continue
                numeric.append(str(col))
            elif _is_categorical_dtype(dtype):
                categorical.append(str(col))
        if not numeric and not categorical:
            why = "; ".join(f"'{c}': {w}" for c, w in left_out.items())
            raise ValueError(
                "no feature columns to train on: the training table has no attribute or "
                "behaviour column"
                + (f" with values ({why[:300]})" if why else "")
                + "; list the customer table's attributes in the data set config (customers."
                "attributes), or add transactions"
            )
        return cls(numeric=numeric, categorical=categorical, left_out=left_out)

    def missing_columns(self, df: pd.DataFrame) -> list[str]:
        """Feature columns absent from ``df``."""
        return [c for c in self.columns if c not in df.columns]

    def to_dict(self, df: pd.DataFrame | None = None) -> dict[str, Any]:
        """JSON-able description: column lists, dtypes and (given a frame) the schema.

        Without a frame the dtypes are the logical types (``numeric`` / ``categorical``);
        with one they are the pandas dtypes and ``schema`` is :func:`feature_schema`.
        """
        out: dict[str, Any] = {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "dtypes": {c: "numeric" for c in self.numeric}
            | {c: "categorical" for c in self.categorical},
        }
        if df is not None:
            out["dtypes"] = {c: str(df[c].dtype) for c in self.columns if c in df.columns}
            out["schema"] = feature_schema(df, self)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict` (extra keys ignored)."""
        return cls(
            numeric=list(data.get("numeric", [])), categorical=list(data.get("categorical", []))
        )


def _json_float(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def category_label(value: Any) -> str:
    """Canonical string for a category value (``1.0`` and ``1`` both become ``"1"``)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def feature_schema(df: pd.DataFrame, spec: FeatureSpec) -> dict[str, dict[str, Any]]:
    """Observed schema per feature column, JSON-serialisable.

    ``{column: {"type": "numeric", "dtype", "min", "max", "nullable"}}`` for numeric columns
    and ``{column: {"type": "categorical", "dtype", "categories", "nullable"}}`` for
    categorical ones (categories as canonical strings, sorted; nulls are not a category).
    ``min`` / ``max`` are over finite values (``None`` if there are none); ``nullable`` is
    true when the column has nulls or +-inf (the pipelines treat both as missing).
    Used by serving to validate requests.
    """
    missing = spec.missing_columns(df)
    if missing:
        raise KeyError(f"feature columns missing from frame: {missing}")
    schema: dict[str, dict[str, Any]] = {}
    for col in spec.numeric:
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        values = values.where(np.isfinite(values))  # +-inf count as missing (as in training)
        schema[col] = {
            "type": "numeric",
            "dtype": str(df[col].dtype),
            "min": _json_float(values.min()),
            "max": _json_float(values.max()),
            "nullable": bool(values.isna().any()),
        }
    for col in spec.categorical:
        series = df[col]
        cats = sorted({category_label(v) for v in series.dropna().unique()})
        schema[col] = {
            "type": "categorical",
            "dtype": str(series.dtype),
            "categories": cats,
            "nullable": bool(series.isna().any()),
        }
    return schema
