"""The deployment gate: decide() and the paired bootstrap behind it."""

from __future__ import annotations

import numpy as np
import pytest

from churn_assets.lib.deployment import decide
from churn_assets.lib.gate import paired_bootstrap
from churn_assets.lib.release import GateSettings, passes_floor


def test_nothing_deployed_promotes():
    d = decide({"roc_auc": 0.71}, None, None)
    assert d.promote and d.reason == "nothing deployed yet" and d.deployed is None


def test_clearly_better_challenger_is_promoted():
    d = decide({"roc_auc": 0.85}, {"roc_auc": 0.80}, "v1", interval={"roc_auc": (0.03, 0.07)})
    assert d.promote and d.reason.startswith("challenger better")
    assert d.interval == {"roc_auc": [0.03, 0.07]}
    assert "interval [+0.0300, +0.0700]" in d.reason


def test_a_point_ahead_within_noise_is_promoted_and_says_so():
    """Ahead on the point estimate, the interval includes 0 but reaches no lower than the
    tolerance: promoted, and the reason does not call it better."""
    d = decide(
        {"roc_auc": 0.9764}, {"roc_auc": 0.9763}, "v1", interval={"roc_auc": (-0.0002, 0.0004)}
    )
    assert d.promote
    assert d.reason.startswith(
        "challenger ahead, not worse by more than 0.005 (the interval includes 0) (roc_auc "
    )


def test_better_point_but_possibly_worse_is_kept():
    """A better point estimate whose interval reaches below -tolerance is noise: kept."""
    d = decide(
        {"roc_auc": 0.805},
        {"roc_auc": 0.800},
        "v1",
        tolerance=0.005,
        interval={"roc_auc": (-0.02, 0.03)},
    )
    assert not d.promote and "may be worse by more than 0.005" in d.reason


def test_within_tolerance_equal_is_kept_unless_promote_ties():
    kwargs = {"tolerance": 0.005, "interval": {"r2": (-0.001, 0.001)}}
    kept = decide({"r2": 0.5}, {"r2": 0.5}, "v1", **kwargs)
    assert not kept.promote and "not better" in kept.reason
    tie = decide({"r2": 0.5}, {"r2": 0.5}, "v1", promote_ties=True, **kwargs)
    assert tie.promote and "as good, fresher" in tie.reason


def test_worse_primary_metric_is_kept_even_with_promote_ties():
    d = decide(
        {"roc_auc": 0.78},
        {"roc_auc": 0.80},
        "v1",
        promote_ties=True,
        interval={"roc_auc": (-0.03, -0.01)},
    )
    assert not d.promote and "may be worse" in d.reason


def test_min_margin_must_be_exceeded():
    args = ({"roc_auc": 0.81}, {"roc_auc": 0.80}, "v1")
    interval = {"roc_auc": (0.005, 0.015)}
    assert decide(*args, interval=interval).promote
    d = decide(*args, interval=interval, min_margin=0.02)
    assert not d.promote and "not better by more than 0.02" in d.reason


def test_without_interval_the_point_difference_decides():
    assert not decide({"r2": 0.40}, {"r2": 0.41}, "v1", tolerance=0.005).promote
    assert decide({"r2": 0.42}, {"r2": 0.41}, "v1", tolerance=0.005).promote


def _scores(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, n))))


def test_paired_bootstrap_of_identical_models_is_zero():
    y, p = _scores(500, 1.0, 0)
    cmp = paired_bootstrap(y, p, p, "roc_auc", resamples=100)
    assert cmp.diff == 0 and cmp.low == 0 and cmp.high == 0 and cmp.resamples == 100


def test_paired_bootstrap_separates_a_much_better_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    good = y + rng.normal(0, 0.5, y.size)
    weak = y + rng.normal(0, 2.0, y.size)
    cmp = paired_bootstrap(y, good, weak, "roc_auc", resamples=200)
    assert cmp.diff > 0.1 and 0 < cmp.low < cmp.diff < cmp.high
    assert decide(
        {"roc_auc": cmp.challenger},
        {"roc_auc": cmp.deployed},
        "v1",
        interval={"roc_auc": (cmp.low, cmp.high)},
    ).promote
    # and the other way round the better deployed model is kept
    back = paired_bootstrap(y, weak, good, "roc_auc", resamples=200)
    assert back.high < 0


def test_f1_scores_each_model_at_its_own_threshold():
    y = np.array([0, 0, 1, 1])
    a = np.array([0.1, 0.2, 0.3, 0.4])  # perfect at threshold 0.25, useless at 0.5
    cmp = paired_bootstrap(
        y, a, a, "f1", challenger_threshold=0.25, deployed_threshold=0.5, resamples=50
    )
    assert cmp.challenger == 1.0 and cmp.deployed == 0.0


def test_paired_bootstrap_refuses_unequal_rows():
    with pytest.raises(ValueError, match="same, non-empty rows"):
        paired_bootstrap(np.array([0, 1]), np.array([0.1]), np.array([0.2]), "roc_auc")


def test_floors():
    s = GateSettings(min_roc_auc=0.7)
    assert passes_floor("classifier", {"name": "x", "metrics": {"roc_auc": 0.71}}, s)[0]
    assert not passes_floor("classifier", {"name": "x", "metrics": {"roc_auc": 0.69}}, s)[0]
    assert passes_floor("regressor", {"name": "naive_baseline", "metrics": {}}, s)[0]
    loses = {"name": "poly_ridge", "metrics": {"r2_gain_vs_naive": -0.19}}
    ok, why = passes_floor("regressor", loses, s)
    assert not ok and "-0.1900" in why
    lenient = GateSettings(value_must_beat_naive=False)
    assert passes_floor("regressor", loses, lenient)[0]


def test_roc_auc_interval_covers_the_spread_of_holdouts_that_size():
    """Hanley-McNeil's interval against 400 holdouts drawn from one population: about 90%
    of their ROC-AUCs fall in a 90% interval, for a small and a larger holdout."""
    from sklearn.metrics import roc_auc_score

    from churn_assets.lib.models.metrics import roc_auc_interval

    rng = np.random.default_rng(0)
    for positives, negatives in ((5, 15), (200, 600)):
        aucs = []
        for _ in range(400):
            y = np.r_[np.ones(positives), np.zeros(negatives)]
            score = rng.normal(size=len(y)) + 1.2 * y
            aucs.append(roc_auc_score(y, score))
        center = float(np.mean(aucs))
        low, high = roc_auc_interval(center, positives, negatives, 0.9)
        inside = np.mean([(low <= a <= high) for a in aucs])
        assert 0.84 <= inside <= 0.97, (positives, low, high, inside)
    assert roc_auc_interval(0.8, 0, 10) != roc_auc_interval(0.8, 0, 10)  # NaN: one class


def test_a_perfect_ranking_on_a_few_churned_customers_is_not_certain():
    """5 churned and 15 retained customers of a population at ROC-AUC ~0.98 rank perfectly
    on about half of such holdouts; Hanley-McNeil's error is 0 there (interval 1.00-1.00).
    The interval of a perfect ranking covers the population's figure on about 90% of them,
    and stays narrow when the smaller class is large."""
    from sklearn.metrics import roc_auc_score

    from churn_assets.lib.models.metrics import roc_auc_interval

    rng = np.random.default_rng(0)
    positives, negatives = 5, 15
    aucs = []
    for _ in range(400):
        y = np.r_[np.ones(positives), np.zeros(negatives)]
        aucs.append(roc_auc_score(y, rng.normal(size=len(y)) + 3.0 * y))
    center = float(np.mean(aucs))
    assert 0.3 < np.mean(np.asarray(aucs) == 1.0) < 0.7
    intervals = [roc_auc_interval(a, positives, negatives, 0.9) for a in aucs]
    inside = np.mean([low <= center <= high for low, high in intervals])
    assert inside >= 0.84, inside  # Hanley-McNeil alone: about half (the perfect ones miss)
    low, high = roc_auc_interval(1.0, 6, 414, 0.9)
    assert (round(low, 2), high) == (0.69, 1.0)
    assert roc_auc_interval(1.0, 500, 1500, 0.9)[0] > 0.99
    assert roc_auc_interval(0.0, 6, 414, 0.9) == pytest.approx((0.0, 1 - low))


def test_floor_says_when_the_holdout_is_too_small_to_be_sure():
    s = GateSettings(min_roc_auc=0.7)
    small = {"name": "x", "metrics": {"roc_auc": 0.85}, "holdout": {"rows": 9, "churned": 4}}
    ok, why = passes_floor("classifier", small, s)
    assert ok and "on 9 holdout customers, 4 churned" in why
    assert "too few customers to be sure" in why
    large = {**small, "holdout": {"rows": 2000, "churned": 400}}
    ok, why = passes_floor("classifier", large, s)
    assert ok and "90% interval 0.83-0.87" in why and "too few" not in why
    below = {"name": "x", "metrics": {"roc_auc": 0.60}, "holdout": {"rows": 2000, "churned": 400}}
    assert not passes_floor("classifier", below, s)[0]


@pytest.mark.parametrize("metric", ["roc_auc", "r2", "f1"])
def test_resample_metrics_equal_sklearn(metric):
    """The NumPy metrics used inside the bootstrap give sklearn's values, ties included."""
    from churn_assets.lib.gate import fast_metric_function, metric_function

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.round(rng.random(400) * 0.5 + 0.3 * y, 2)  # rounded: many tied scores
    if metric == "r2":
        y = rng.gamma(0.5, 200.0, 400)
        p = y * 0.7 + rng.normal(0, 50, 400)
    exact = metric_function(metric, 0.45)(y, p)
    assert fast_metric_function(metric, 0.45)(y, p) == pytest.approx(exact, abs=1e-12)


def test_a_slightly_worse_challenger_within_tolerance_is_kept_as_not_better():
    """Below the deployed model on the point estimate: "not better", not "not better by
    more than 0.0", which reads as if it were ahead."""
    d = decide(
        {"roc_auc": 0.9794}, {"roc_auc": 0.9795}, "v1", interval={"roc_auc": (-0.0004, 0.0002)}
    )
    assert not d.promote and d.reason.startswith("challenger not better (roc_auc 0.9794 vs")
