"""Regression model set: naive baseline, gains, heavy-tail variants, determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from churn_assets.lib.models.estimators import NaiveBaselineRegressor, NaiveBlendRegressor
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
    # the champion and the naive baseline always have the CV (the report); other finalists
    # only when the choice weighed them
    assert {"naive_baseline", result.champion} <= set(result.selection["cross_validated"])


def test_value_champion_climbs_a_confident_ladder(result: ModelSetResult) -> None:
    sel = result.selection
    naive = result.get("naive_baseline")
    champ = result.get(result.champion)
    assert sel["fallback_to_naive"] == (result.champion == "naive_baseline")
    for name, scores in sel["scores"].items():
        cand = result.get(name)
        val_gain = cand.validation_metrics["r2"] - naive.validation_metrics["r2"]
        assert scores["validation_gain_vs_naive"] == pytest.approx(val_gain)
        if name in sel["cross_validated"]:
            cv_gain = cand.cv["cv_r2_mean"] - naive.cv["cv_r2_mean"]
            assert scores["cv_gain_vs_naive"] == pytest.approx(cv_gain)
        else:
            assert scores["cv_gain_vs_naive"] is None
        if name != result.champion:
            assert sel["excluded"][name], name  # every other candidate says why not
    if result.champion != "naive_baseline":
        low, _high = sel["intervals"][result.champion]
        assert low > 0  # confidently better than the step below it, on validation
        assert champ.validation_metrics["r2"] > naive.validation_metrics["r2"]
    if result.champion not in {"naive_baseline", "ridge"}:
        ref = result.get(sel["reference"])  # and beats the step below it in CV
        assert champ.cv["cv_r2_mean"] > ref.cv["cv_r2_mean"]
    assert result.best_simple in {"ridge", "naive_baseline"}
    assert champ.stage == "refit" and champ.metrics_before_refit is not None
    json.dumps(sel, allow_nan=False)


def _choice(p_va, cv_gain=None):
    from churn_assets.lib.models.regression import choose_value_champion

    rng = np.random.default_rng(0)
    y = rng.gamma(0.6, 300.0, 3000)
    preds = {k: f(y, rng) for k, f in p_va.items()}
    return choose_value_champion(
        y,
        preds,
        "r2",
        finalists=[n for n in preds if n not in {"naive_baseline", "ridge"}],
        simple=[n for n in preds if n == "ridge"],
        seed=0,
        cv_gain=cv_gain,
    )


def _noisy(scale):
    return lambda y, rng: y + rng.normal(0, scale, len(y))


def test_choice_takes_a_clearly_better_model_step_by_step() -> None:
    choice = _choice(
        {"naive_baseline": _noisy(400), "ridge": _noisy(300), "xgboost": _noisy(100)},
        cv_gain=lambda name, than: 0.1,
    )
    assert (choice.reference, choice.champion) == ("ridge", "xgboost")
    assert choice.intervals["xgboost"][0] > 0 and choice.intervals["ridge"][0] > 0


def test_choice_keeps_naive_when_ridge_is_not_better() -> None:
    # ridge's errors are naive's, each scaled by 0.9-1.1 at random: no real difference
    noise = np.random.default_rng(1).normal(0, 300, 3000)
    scale = np.random.default_rng(2).uniform(0.9, 1.1, 3000)
    choice = _choice(
        {
            "naive_baseline": lambda y, rng: y + noise,
            "ridge": lambda y, rng: y + noise * scale,
        }
    )
    assert choice.champion == "naive_baseline"
    low, _high = choice.intervals["ridge"]
    assert low <= 0 and "better than naive_baseline" in choice.excluded["ridge"]


def test_choice_needs_confidence_for_a_complex_model() -> None:
    # xgboost's errors are ridge's, half scaled by 0.97, half by 1.029: a hair better on
    # these rows (point gain > 0), not a real difference
    noise = np.random.default_rng(1).normal(0, 100, 3000)
    scale = np.where(np.random.default_rng(5).random(3000) < 0.5, 0.97, 1.029)
    choice = _choice(
        {
            "naive_baseline": _noisy(400),
            "ridge": lambda y, rng: y + noise,
            "xgboost": lambda y, rng: y + noise * scale,
        },
        cv_gain=lambda name, than: 0.1,
    )
    low, high = choice.intervals["xgboost"]
    assert low <= 0 < high and (low + high) / 2 > 0
    assert choice.reference == "ridge" and choice.champion == "ridge"
    assert "not confidently better than ridge" in choice.excluded["xgboost"]


def test_choice_refuses_a_finalist_that_loses_in_cv() -> None:
    asked = []

    def cv_gain(name, than):
        asked.append((name, than))
        return -0.2 if name == "random_forest" else 0.05

    choice = _choice(
        {
            "naive_baseline": _noisy(400),
            "ridge": _noisy(399),
            "random_forest": _noisy(100),
            "lightgbm": _noisy(150),
        },
        cv_gain=cv_gain,
    )
    # the best finalist fails the CV: the reference stays, nothing else is tried
    assert choice.champion == "ridge" and asked == [("random_forest", "ridge")]
    assert "CV" in choice.excluded["random_forest"]


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


def _heavy_tail(n: int = 3000, whales: int = 3, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Spend whose gain over the naive forecast hinges on ``whales`` customers: the model is
    worse than the naive forecast on every other customer and far better on those few."""
    rng = np.random.default_rng(seed)
    y = rng.gamma(0.6, 300.0, n)
    y[:whales] = 60_000.0
    naive = y * rng.lognormal(0.0, 0.3, n)
    naive[:whales] = 15_000.0
    model = y + rng.normal(0.0, 400.0, n)
    model[:whales] = 58_000.0
    return y, model, naive


def test_blend_weight_shrinks_a_gain_that_hinges_on_a_few_customers() -> None:
    from churn_assets.lib.models.regression import choose_naive_weight

    y, model, naive = _heavy_tail()
    full = regression_metrics(y, model)["r2"] - regression_metrics(y, naive)["r2"]
    assert full > 0.2  # the point estimate says "the model, at full weight"
    out = choose_naive_weight(y, model, naive, "r2", seed=0)
    assert 0 < out.weight < 1 and out.gain_low > 0
    # without the whales the model loses to the naive forecast at full weight, not blended
    rest = slice(3, None)
    blended = np.maximum(out.weight * model + (1 - out.weight) * naive, 0)
    base = regression_metrics(y[rest], naive[rest])["r2"]
    assert regression_metrics(y[rest], model[rest])["r2"] < base
    assert regression_metrics(y[rest], blended[rest])["r2"] - base > (
        regression_metrics(y[rest], model[rest])["r2"] - base
    )


def test_blend_weight_is_one_for_a_clearly_better_model_and_zero_for_a_loser() -> None:
    from churn_assets.lib.models.regression import choose_naive_weight

    rng = np.random.default_rng(1)
    y = rng.gamma(0.6, 300.0, 3000)
    naive = y + rng.normal(0, 300, len(y))
    better = choose_naive_weight(y, y + rng.normal(0, 20, len(y)), naive, "r2", seed=0)
    assert better.weight == 1.0 and better.gain_low > 0
    # the naive forecast's errors plus more: any weight on it only adds error
    worse = choose_naive_weight(y, naive + rng.normal(0, 300, len(y)), naive, "rmse", seed=0)
    assert worse.weight == 0.0 and worse.gain_low == 0.0 and worse.gain == 0.0


def test_naive_blend_regressor_predicts_the_floored_blend(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec],
) -> None:
    from churn_assets.lib.models.regression import build_regressor

    splits, spec = data
    train, hold = splits["train"], splits["holdout"]
    ridge = build_regressor("ridge", spec).fit(train, train["total_sales"])
    blend = NaiveBlendRegressor(regressor=build_regressor("ridge", spec), weight=0.3)
    blend.fit(train, train["total_sales"])
    expected = 0.3 * ridge.predict(hold) + 0.7 * hold["naive_total_sales"].clip(lower=0)
    np.testing.assert_allclose(blend.predict(hold), np.maximum(expected, 0))
    with pytest.raises(ValueError, match="weight"):
        NaiveBlendRegressor(regressor=build_regressor("ridge", spec), weight=1.5).fit(
            train, train["total_sales"]
        )


def test_champion_is_blended_with_naive_at_the_out_of_fold_weight(
    result: ModelSetResult,
) -> None:
    from churn_assets.lib.models.regression import BLEND_WEIGHTS

    blend = result.selection["naive_blend"]
    assert result.champion != "naive_baseline" and blend is not None
    assert blend["weight"] in BLEND_WEIGHTS and blend["folds"] == CV_FOLDS
    assert blend["grouped_by"] == "customer_id"
    assert blend["rows"] == result.get(result.champion).fit_rows  # train + validation
    final = result.get(result.champion).pipeline.steps[-1][1]
    assert isinstance(final, NaiveBlendRegressor) == (blend["weight"] < 1)
    if blend["weight"] < 1:
        assert final.weight == blend["weight"]
        assert result.get(result.champion).params["estimator"] == "NaiveBlendRegressor"


def test_predictions_in_row_chunks_equal_one_call_and_bound_the_rows_given(
    data: tuple[dict[str, pd.DataFrame], FeatureSpec],
) -> None:
    """Pipelines predict a bounded number of rows at a time (poly_ridge's degree-2 terms
    grow with the rows given): the same predictions, bit for bit, as one call."""
    from churn_assets.lib.models import _common
    from churn_assets.lib.models.regression import build_regressor

    splits, spec = data
    X = _common.features(splits["validation"])  # noqa: N806
    pipeline = build_regressor("poly_ridge", spec, seed=0)
    pipeline.fit(_common.features(splits["train"]), splits["train"]["total_sales"].to_numpy())
    seen: list[int] = []

    def predict(rows: pd.DataFrame) -> np.ndarray:
        seen.append(len(rows))
        return pipeline.predict(rows)

    chunked = _common.predict_in_chunks(predict, X, rows=37)

    assert max(seen) == 37 and sum(seen) == len(X) > 37
    # the same rows in the same order; BLAS may round a 37-row block differently from the
    # whole matrix by an ulp, depending on the CPU's kernels
    np.testing.assert_allclose(chunked, pipeline.predict(X), rtol=1e-12, atol=0)
    square = _common.predict_in_chunks(np.square, np.arange(100.0), rows=30)
    np.testing.assert_array_equal(square, np.arange(100.0) ** 2)


def test_poly_ridge_is_left_out_of_a_wide_table_and_says_why() -> None:
    """50 numeric features would give 1,325 degree-2 terms: poly_ridge is skipped (named
    with the reason in ``selection["skipped"]``), the others train; a narrow table keeps it."""
    from churn_assets.lib.models.regression import POLY_MAX_TERMS, candidate_skip_reason

    frame = make_frame(400, seed=4, n_noise=44)
    spec = FeatureSpec.infer(frame)
    assert len(spec.numeric) == 50 and POLY_MAX_TERMS < 50 * 53 // 2
    result = train_regression_set(
        split_random(frame, seed=1), spec, seed=1, cv_folds=0, candidates=["ridge", "poly_ridge"]
    )
    assert [c.name for c in result.candidates] == ["naive_baseline", "ridge"]
    assert "1,325 degree-2 terms" in result.selection["skipped"]["poly_ridge"]
    narrow = FeatureSpec.infer(make_frame(50, seed=4))
    assert candidate_skip_reason("poly_ridge", narrow) is None
