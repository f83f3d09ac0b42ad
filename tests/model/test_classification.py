"""Classification model set: protocol, model behaviour and determinism."""

from __future__ import annotations

import json
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
from churn_assets.lib.models.selection import SelectionPolicy
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
        finalist = cand.name in result.selection["finalists"]
        # Only the finalists (and the ensemble of them) are cross-validated.
        assert set(cand.cv) == (
            {"cv_roc_auc_mean", "cv_roc_auc_sd", "cv_pr_auc_mean", "cv_pr_auc_sd"}
            if finalist
            else set()
        ), cand.name
        assert (cand.stage == "screened") == (not finalist) or cand.stage == "refit"
        assert cand.train_seconds > 0 and cand.params["estimator"]
        # Every candidate learns the signal.
        assert cand.metrics["roc_auc"] > 0.7, cand.name
    members = result.get("ensemble").params["members"]
    assert len(members) == 3 and set(members) < set(result.selection["finalists"])
    assert len(result.selection["finalists"]) == 4  # three best on validation + their ensemble


def test_champion_chosen_on_validation_and_cv(result: ModelSetResult) -> None:
    sel = result.selection
    assert sel["procedure"] == "staged" and sel["cv_folds"] == CV_FOLDS
    combined = {}
    for name in sel["finalists"]:
        cand = result.get(name)
        val, cv = cand.validation_metrics["roc_auc"], cand.cv["cv_roc_auc_mean"]
        assert sel["scores"][name]["combined"] == pytest.approx((val + cv) / 2)
        combined[name] = (val + cv) / 2
    assert combined[result.champion] == max(combined.values())
    screened = {c.name for c in result.candidates} - set(sel["finalists"])
    assert set(sel["excluded"]) == screened and result.champion not in screened
    best_screened = max(result.get(n).validation_metrics["roc_auc"] for n in screened)
    base_finalists = [n for n in sel["finalists"] if n != "ensemble"]
    assert min(result.get(n).validation_metrics["roc_auc"] for n in base_finalists) >= (
        best_screened
    )
    json.dumps(sel, allow_nan=False)  # JSON-able as is


def test_champion_refitted_on_train_and_validation(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, _ = data
    champ = result.champion_result
    assert result.champion in result.selection["refit"] and champ.stage == "refit"
    assert champ.fit_rows == len(splits["train"]) + len(splits["validation"])
    assert champ.metrics_before_refit is not None and champ.metrics != champ.metrics_before_refit
    hold = splits["holdout"]
    proba = champ.pipeline.predict_proba(hold)[:, 1]
    assert champ.metrics == classification_metrics(hold["churned"], proba, champ.threshold)


def test_exhaustive_procedure_and_same_fits(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, spec = data
    old = train_classification_set(splits, spec, seed=42, cv_folds=0, policy="exhaustive")
    assert old.selection["procedure"] == "exhaustive" and old.selection["refit"] == []
    assert all(c.stage == "finalist" for c in old.candidates)
    val = {c.name: c.validation_metrics["roc_auc"] for c in old.candidates}
    assert val[old.champion] == max(val.values())
    # Small train split: no subsample, so the staged screen fits the very same models, and
    # the thresholds (max F1 on validation) are those of the train-only fits, refit or not.
    for cand in result.candidates:
        same = old.get(cand.name)
        assert cand.validation_metrics == same.validation_metrics, cand.name
        assert cand.threshold == same.threshold, cand.name
        assert (cand.metrics_before_refit or cand.metrics) == same.metrics, cand.name


def test_screen_on_a_subsample_of_a_large_train_split(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec],
) -> None:
    splits, spec = data
    n_train = len(splits["train"])
    policy = SelectionPolicy(finalists=2, screen_max_rows=300, cv_max_rows=240)
    res = train_classification_set(
        splits,
        spec,
        candidates=["logistic_regression", "random_forest", "xgboost", "lightgbm", "ensemble"],
        cv_folds=CV_FOLDS,
        policy=policy,
    )
    sel = res.selection
    assert (sel["screen_rows"], sel["cv_rows"]) == (300, 240)
    assert len(sel["finalists"]) == 3 and sel["finalists"][-1] == "ensemble"
    for cand in res.candidates:
        finalist = cand.name in sel["finalists"]
        if cand.stage != "refit":  # screened and finalists keep their subsample fit
            assert cand.fit_rows == 300 and bool(cand.cv) == finalist, cand.name
    # only the champion and the fallback see every row: train + validation
    assert sel["refit"] == list(dict.fromkeys([res.champion, "logistic_regression"]))
    for name in sel["refit"]:
        assert res.get(name).fit_rows == n_train + len(splits["validation"])
    assert res.champion in sel["finalists"]


def test_assembled_ensemble_is_soft_voting(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec], result: ModelSetResult
) -> None:
    splits, _ = data
    hold = splits["holdout"].head(50)
    ens = result.get("ensemble")
    members = ens.params["members"]
    voting = ens.pipeline.named_steps["model"]
    assert list(voting.named_estimators_) == members
    expected = np.mean(
        [voting.named_estimators_[m].predict_proba(hold)[:, 1] for m in members], axis=0
    )
    np.testing.assert_allclose(ens.pipeline.predict_proba(hold)[:, 1], expected)
    assert list(ens.pipeline.predict(hold[:5])) == [int(p >= 0.5) for p in expected[:5]]


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


def test_too_few_churned_customers_in_train_for_the_folds_skip_cv_and_say_why(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec],
) -> None:
    """4 churned customers in train and 5 folds: a fold would score no churned customer, so
    there is no CV (not a CV of NaNs) and the selection record says why."""
    splits, spec = data
    train = splits["train"]
    churned = train[train["churned"] == 1].head(4)
    rare = {**splits, "train": pd.concat([train[train["churned"] == 0], churned])}
    res = train_classification_set(
        rare, spec, candidates=["logistic_regression", "random_forest"], cv_folds=5
    )
    assert all(c.cv == {} for c in res.candidates)
    assert res.selection["cv_folds"] == 0
    assert res.selection["cv_skipped"].startswith(
        "no cross-validation: train holds 4 customer(s) of its smaller class, fewer than "
        "cv_folds (5)"
    )
    assert (
        "cv_skipped"
        not in train_classification_set(
            splits, spec, candidates=["logistic_regression"], cv_folds=CV_FOLDS
        ).selection
    )
