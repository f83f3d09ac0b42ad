"""Train one model set of a data set from its training set, as the data set's config says."""

from __future__ import annotations

from typing import Any, Literal

from churn_assets.lib.datasets import DatasetConfig
from churn_assets.lib.models.leaderboard import ModelSetResult
from churn_assets.lib.models.selection import Procedure, SelectionPolicy
from churn_assets.lib.models.spec import DEFAULT_EXCLUDE, FeatureSpec


def train_model_set(
    kind: Literal["classification", "regression"],
    cfg: DatasetConfig,
    splits: dict[str, Any],
    *,
    cv_folds: int | None = None,
    policy: SelectionPolicy | Procedure | None = None,
) -> tuple[ModelSetResult, FeatureSpec]:
    """The ``kind`` model set trained on ``splits`` (train / validation / holdout frames) with
    the config's seed, metric and candidates; ``cv_folds`` overrides the config's folds;
    ``policy`` the selection procedure (default: staged, see
    :mod:`churn_assets.lib.models.selection`)."""
    spec = FeatureSpec.infer(splits["train"], exclude=(*DEFAULT_EXCLUDE, "split"))
    m = cfg.models
    folds = m.cv_folds if cv_folds is None else cv_folds
    if kind == "classification":
        from churn_assets.lib.models.classification import train_classification_set

        result = train_classification_set(
            splits,
            spec,
            seed=cfg.seed,
            primary_metric=m.classification_metric,
            candidates=m.classification_candidates,
            cv_folds=folds,
            policy=policy,
        )
    elif kind == "regression":
        from churn_assets.lib.models.regression import train_regression_set

        result = train_regression_set(
            splits,
            spec,
            seed=cfg.seed,
            primary_metric=m.regression_metric,
            candidates=m.regression_candidates,
            cv_folds=folds,
            policy=policy,
        )
    else:
        raise ValueError(f"unknown model set kind {kind!r}")
    return result, spec
