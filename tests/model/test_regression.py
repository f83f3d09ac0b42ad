"""Regression model set: naive baseline, gains, heavy-tail variants, determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from churn_assets.lib.models.estimators import NaiveBaselineRegressor
from churn_assets.lib.models.leaderboard import ModelSetResult
from churn_assets.lib.models.metrics import regression_metrics
from churn_assets.lib.models.regression import ALL_CANDIDATES, train_regression_set
from churn_assets.lib.models.spec import FeatureSpec
from churn_assets.lib.models.splits import split_random

from ._data import make_frame

CV_FOLDS = 3
HEAVY_TAIL = ("lightgbm_tweedie", "hgb_log_target")


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Predictions outside the trainers: avoid OpenMP oversubscription on busy 2-core CI."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, pd.DataFrame], FeatureSpec]:
    frame = make_frame(800, seed=3)
    return split_random(frame, seed=42), FeatureSpec.infer(frame)


@pytest.fixture(scope="module")
def result(data: tuple[dict[str, pd.DataFrame], FeatureSpec]) -> ModelSetResult:
    splits, spec = data
    return train_regression_set(splits, spec, seed=42, cv_folds=CV_FOLDS)


def test_candidates_and_gains(result: ModelSetResult) -> None:
    assert [c.name for c in result.candidates] == list(ALL_CANDIDATES)
    naive = result.get("naive_baseline")
    assert naive.is_simple and result.get("ridge").is_simple
    for cand in result.candidates:
        assert cand.threshold is None and cand.kind == "regression"
        m = cand.metrics
        assert set(m) >= {"rmse", "mae", "r2", "r2_gain_vs_naive", "rmse_gain_vs_naive"}
        assert m["r2_gain_vs_naive"] == pytest.approx(m["r2"] - naive.metrics["r2"])
        assert m["rmse_gain_vs_naive"] == pytest.approx(naive.metrics["rmse"] - m["rmse"])
        cross_validated = cand.name in result.selection["cross_validated"]
        assert ({"cv_r2_mean", "cv_r2_sd", "cv_rmse_mean", "cv_rmse_sd"} <= set(cand.cv)) == (
            cross_validated
        ), cand.name
    assert naive.metrics["r2_gain_vs_naive"] == 0.0
    # validation alone picks the value champion: only it and the naive baseline get the CV
    assert result.selection["cross_validated"] == ["naive_baseline", result.champion]


def test_champion_beats_naive_on_validation(result: ModelSetResult) -> None:
    sel = result.selection
    assert result.champion != "naive_baseline" and not sel["fallback_to_naive"]
    naive = result.get("naive_baseline")
    eligible = {}
    for name in sel["finalists"]:
        cand = result.get(name)
        val_gain = cand.validation_metrics["r2"] - naive.validation_metrics["r2"]
        scores = sel["scores"][name]
        assert scores["validation_gain_vs_naive"] == pytest.approx(val_gain)
        if name == result.champion:  # reported, not used
            cv_gain = cand.cv["cv_r2_mean"] - naive.cv["cv_r2_mean"]
            assert scores["cv_gain_vs_naive"] == pytest.approx(cv_gain)
        else:
            assert scores["cv_gain_vs_naive"] is None
        if val_gain > 0:
            eligible[name] = cand.validation_metrics["r2"]
        else:
            assert "naive" in sel["excluded"][name]
    assert eligible[result.champion] == max(eligible.values())
    assert result.best_simple in {"ridge", "naive_baseline"}
    champ = result.champion_result
    assert champ.stage == "refit" and champ.metrics_before_refit is not None
    json.dumps(sel, allow_nan=False)


def test_heavy_tail_predictions_finite_and_non_negative(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, _ = data
    frame = pd.concat(list(splits.values()))
    extreme = frame.head(20).assign(monetary=1e7, frequency=500.0, recency_days=0.0)
    zero = frame.head(20).assign(monetary=0.0, frequency=0.0, recency_days=364.0)
    for name in HEAVY_TAIL:
        pipe = result.get(name).pipeline
        for rows in (frame, extreme, zero):
            pred = pipe.predict(rows)
            assert np.isfinite(pred).all() and (pred >= 0).all(), name


def test_naive_baseline_semantics(data: tuple[dict[str, pd.DataFrame], FeatureSpec]) -> None:
    splits, _ = data
    train, hold = splits["train"], splits["holdout"]
    with_col = NaiveBaselineRegressor().fit(train, train["total_sales"])
    expected = np.maximum(hold["naive_total_sales"].to_numpy(), 0)
    np.testing.assert_array_equal(with_col.predict(hold), expected)
    with pytest.raises(KeyError):
        with_col.predict(hold.drop(columns=["naive_total_sales"]))
    no_col = NaiveBaselineRegressor().fit(
        train.drop(columns=["naive_total_sales"]), train["total_sales"]
    )
    assert (no_col.predict(hold) == train["total_sales"].mean()).all()


def test_without_naive_column_baseline_is_training_mean(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec],
) -> None:
    splits, _ = data
    splits = {k: v.drop(columns=["naive_total_sales"]) for k, v in splits.items()}
    spec = FeatureSpec.infer(splits["train"])
    res = train_regression_set(splits, spec, candidates=["ridge"], cv_folds=0)
    assert [c.name for c in res.candidates] == ["naive_baseline", "ridge"]
    naive = res.get("naive_baseline")
    mean_pred = np.full(len(splits["holdout"]), splits["train"]["total_sales"].mean())
    assert (
        naive.metrics["r2"] == regression_metrics(splits["holdout"]["total_sales"], mean_pred)["r2"]
    )
    assert res.champion == "ridge"


def test_falls_back_to_naive_when_no_candidate_beats_it(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec],
) -> None:
    splits, spec = data
    # The naive forecast IS the label: no model can beat it.
    exact = {k: v.assign(naive_total_sales=v["total_sales"]) for k, v in splits.items()}
    res = train_regression_set(exact, spec, candidates=["ridge", "lightgbm"], cv_folds=CV_FOLDS)
    sel = res.selection
    assert res.champion == "naive_baseline" and sel["fallback_to_naive"]
    assert set(sel["excluded"]) == {"ridge", "lightgbm"}
    assert res.champion_result.metrics["r2"] == 1.0
    assert res.champion_result.metrics["r2_gain_vs_naive"] == 0.0
    old = train_regression_set(
        exact, spec, candidates=["ridge", "lightgbm"], cv_folds=0, policy="exhaustive"
    )
    assert old.champion != "naive_baseline"  # the previous rule deploys a loser
    assert old.champion_result.metrics["r2_gain_vs_naive"] < 0


def test_same_seed_same_metrics(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, spec = data
    again = train_regression_set(splits, spec, seed=42, cv_folds=CV_FOLDS)
    assert again.champion == result.champion
    for a, b in zip(result.candidates, again.candidates, strict=True):
        assert a.metrics == b.metrics, a.name
        assert a.validation_metrics == b.validation_metrics, a.name
        assert a.cv == b.cv, a.name


def test_errors(data: tuple[dict[str, pd.DataFrame], FeatureSpec]) -> None:
    splits, spec = data
    with pytest.raises(ValueError, match="unknown"):
        train_regression_set(splits, spec, candidates=["svr"])
    with pytest.raises(ValueError, match="primary metric"):
        train_regression_set(splits, spec, primary_metric="roc_auc")
    negative = {k: v.assign(total_sales=v["total_sales"] - 1e6) for k, v in splits.items()}
    with pytest.raises(ValueError, match=">= 0"):
        train_regression_set(negative, spec)
    with pytest.raises(KeyError, match="holdout"):
        train_regression_set({"train": splits["train"]}, spec)
