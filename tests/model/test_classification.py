"""Classification model set: protocol, model behaviour and determinism."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from churn_assets.lib.models.classification import (
    ALL_CANDIDATES,
    build_classifier,
    train_classification_set,
)
from churn_assets.lib.models.leaderboard import ModelSetResult
from churn_assets.lib.models.metrics import classification_metrics
from churn_assets.lib.models.spec import FeatureSpec
from churn_assets.lib.models.splits import split_snapshot

from ._data import make_frame

N_ROWS = 900
CV_FOLDS = 3


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Predictions outside the trainers: avoid OpenMP oversubscription on busy 2-core CI."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, pd.DataFrame], FeatureSpec]:
    frame = make_frame(N_ROWS, seed=2)
    return split_snapshot(frame, seed=42), FeatureSpec.infer(frame)


@pytest.fixture(scope="module")
def result(data: tuple[dict[str, pd.DataFrame], FeatureSpec]) -> ModelSetResult:
    splits, spec = data
    return train_classification_set(splits, spec, seed=42, cv_folds=CV_FOLDS)


def test_all_candidates_trained(result: ModelSetResult) -> None:
    assert [c.name for c in result.candidates] == list(ALL_CANDIDATES)
    assert result.kind == "classification"
    assert result.best_simple == "logistic_regression"
    for cand in result.candidates:
        assert cand.kind == "classification"
        assert cand.is_simple == (cand.name == "logistic_regression")
        assert 0.0 < cand.threshold < 1.0
        assert set(cand.metrics) >= {"roc_auc", "pr_auc", "f1", "brier", "log_loss"}
        assert set(cand.cv) == {
            "cv_roc_auc_mean",
            "cv_roc_auc_sd",
            "cv_pr_auc_mean",
            "cv_pr_auc_sd",
        }
        assert cand.train_seconds > 0 and cand.params["estimator"]
        # Every candidate learns the signal.
        assert cand.metrics["roc_auc"] > 0.7, cand.name
    assert len(result.get("ensemble").params["members"]) == 3


def test_champion_chosen_on_validation(result: ModelSetResult) -> None:
    val = {c.name: c.validation_metrics["roc_auc"] for c in result.candidates}
    assert val[result.champion] == max(val.values())


def test_holdout_metrics_are_holdout(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, _ = data
    hold = splits["holdout"]
    champ = result.champion_result
    proba = champ.pipeline.predict_proba(hold)[:, 1]
    assert champ.metrics == classification_metrics(hold["churned"], proba, champ.threshold)


def test_leaderboard(result: ModelSetResult) -> None:
    board = result.leaderboard()
    assert len(board) == len(ALL_CANDIDATES)
    assert board["roc_auc"].is_monotonic_decreasing
    for col in ("roc_auc", "pr_auc", "f1", "brier", "cv_roc_auc_mean", "train_seconds"):
        assert col in board.columns
    assert board["champion"].sum() == 1
    assert result.leaderboard(by="validation")["val_roc_auc"].is_monotonic_decreasing
    md = result.leaderboard_markdown()
    assert md.count("\n") == len(ALL_CANDIDATES) + 1
    assert "(champion)" in md


def test_higher_recency_means_higher_churn_probability(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, _ = data
    base = splits["holdout"].head(25)
    low, high = base.assign(recency_days=10.0), base.assign(recency_days=330.0)
    for name in (result.champion, "logistic_regression", "ensemble"):
        pipe = result.get(name).pipeline
        p_low, p_high = pipe.predict_proba(low)[:, 1], pipe.predict_proba(high)[:, 1]
        assert (p_high > p_low).all(), name


def test_unseen_and_missing_values_at_predict_time(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, _ = data
    rows = splits["holdout"].head(4).copy()
    rows["plan"] = ["enterprise", None, "basic", "pro"]  # unseen + null
    rows["region"] = rows["region"].astype(object)
    rows.loc[rows.index[0], "region"] = "mars"
    rows["age"] = [np.nan, 40.0, np.nan, 30.0]
    for cand in result.candidates:
        proba = cand.pipeline.predict_proba(rows)[:, 1]
        assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all(), cand.name
    with pytest.raises(KeyError, match="recency_days"):
        result.champion_result.pipeline.predict_proba(rows.drop(columns=["recency_days"]))


def test_same_seed_same_metrics(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, spec = data
    again = train_classification_set(splits, spec, seed=42, cv_folds=CV_FOLDS)
    assert again.champion == result.champion
    for a, b in zip(result.candidates, again.candidates, strict=True):
        assert a.name == b.name
        assert a.metrics == b.metrics, a.name
        assert a.validation_metrics == b.validation_metrics, a.name
        assert a.cv == b.cv, a.name
        assert a.threshold == b.threshold, a.name


def test_subset_reweight_and_errors(data: tuple[dict[str, pd.DataFrame], FeatureSpec]) -> None:
    splits, spec = data
    res = train_classification_set(
        splits, spec, candidates=["logistic_regression", "xgboost"], cv_folds=0, reweight=True
    )
    assert [c.name for c in res.candidates] == ["logistic_regression", "xgboost"]
    assert all(c.cv == {} for c in res.candidates)
    assert res.get("xgboost").pipeline[-1].get_params()["scale_pos_weight"] > 1.5
    res_pr = train_classification_set(
        splits,
        spec,
        candidates=["logistic_regression", "lightgbm"],
        cv_folds=0,
        primary_metric="brier",
    )
    val = {c.name: c.validation_metrics["brier"] for c in res_pr.candidates}
    assert val[res_pr.champion] == min(val.values())
    with pytest.raises(ValueError, match="unknown"):
        train_classification_set(splits, spec, candidates=["svm"])
    bad = FeatureSpec(numeric=["recency_days", "churned"], categorical=[])
    with pytest.raises(ValueError, match="labels used as features"):
        train_classification_set(splits, bad, candidates=["logistic_regression"])
    with pytest.raises(ValueError):
        build_classifier("nope", spec)
