"""Tests for churn_assets.lib.drift (PSI, L1, JS, verdicts) and drift_report (the HTML page).

PSI is checked against ``_reference_psi`` below, a plain NumPy implementation written
separately from the library (``np.quantile`` edges, ``np.histogram`` counts, a Python loop for
the formula), on distributions with ties, constants, heavy tails and missing values.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from churn_assets.lib.drift import (
    DriftResult,
    DriftThresholds,
    _quantile_edges,
    compute_drift,
    drift_table,
    psi,
    verdict_reasons,
)
from churn_assets.lib.drift_report import render_html


# --------------------------------------------------------------------------- the reference
def _reference_psi(reference, current, bins: int = 10, epsilon: float = 1e-4) -> float:
    """Independent PSI: finite values only; edges = unique np.quantile(ref, i / bins); bins
    [-inf, u0), [u0, u1), ..., [u_max, u_max], (u_max, +inf]; shares clipped to >= epsilon."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return math.nan
    u = np.unique(np.quantile(ref, [i / bins for i in range(bins + 1)]))
    edges = np.concatenate(([-np.inf], u, [np.nextafter(u[-1], np.inf), np.inf]))
    ref_counts = np.histogram(ref, bins=edges)[0]
    cur_counts = np.histogram(cur, bins=edges)[0]
    total = 0.0
    for r, c in zip(ref_counts, cur_counts, strict=True):
        p = max(r / ref.size, epsilon)
        q = max(c / cur.size, epsilon)
        total += (q - p) * math.log(q / p)
    return total


def _samples(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, m = 20_000, 15_000
    if kind == "normal_same":
        return rng.normal(size=n), rng.normal(size=m)
    if kind == "normal_shifted":
        return rng.normal(size=n), rng.normal(0.7, 1.3, size=m)
    if kind == "integer_ties":
        return rng.poisson(2.0, n).astype(float), rng.poisson(2.6, m).astype(float)
    if kind == "binary":
        return (rng.random(n) < 0.8).astype(float), (rng.random(m) < 0.6).astype(float)
    if kind == "rounded":
        return np.round(rng.exponential(1.0, n), 1), np.round(rng.exponential(1.3, m), 1)
    if kind == "pareto_tail":
        return rng.pareto(1.1, n) * 1e3, rng.pareto(0.9, m) * 1e3
    if kind == "student_t1":
        return rng.standard_t(1.0, n), rng.standard_t(1.0, m) * 1.5
    if kind == "zero_inflated":
        zeros = rng.random(n) < 0.7
        cur_zeros = rng.random(m) < 0.5
        return (
            np.where(zeros, 0.0, rng.lognormal(size=n)),
            np.where(cur_zeros, 0.0, rng.lognormal(size=m)),
        )
    if kind == "constant_same":
        return np.full(n, 3.5), np.full(m, 3.5)
    if kind == "constant_moved":
        return np.full(n, 3.5), rng.choice([2.0, 3.5, 9.0], m)
    if kind == "beyond_range":
        return rng.uniform(0, 1, n), rng.uniform(-0.5, 1.5, m)
    if kind == "with_missing":
        ref, cur = rng.normal(size=n), rng.normal(0.2, size=m)
        ref[rng.random(n) < 0.1] = np.nan
        cur[rng.random(m) < 0.2] = np.nan
        cur[:5] = np.inf
        ref[:3] = -np.inf
        return ref, cur
    if kind == "tiny":
        return np.array([1.0, 2.0]), np.array([2.0, 2.0, 5.0])
    raise AssertionError(kind)


KINDS = [
    "normal_same", "normal_shifted", "integer_ties", "binary", "rounded", "pareto_tail",
    "student_t1", "zero_inflated", "constant_same", "constant_moved", "beyond_range",
    "with_missing", "tiny",
]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bins", [1, 4, 10, 23])
def test_psi_matches_independent_numpy_reference(kind: str, bins: int) -> None:
    rng = np.random.default_rng(KINDS.index(kind) * 100 + bins)
    ref, cur = _samples(kind, rng)
    ours = psi(ref, cur, bins=bins)
    expected = _reference_psi(ref, cur, bins=bins)
    assert ours >= 0
    assert abs(ours - expected) <= 1e-9, (kind, bins, ours, expected)


def test_psi_random_small_samples_match_reference() -> None:
    """Many small samples (few values, many ties) where edges sit exactly on data values."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, m = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        ref = rng.integers(0, int(rng.integers(1, 6)), n) * rng.choice([0.1, 1.0, 1e6])
        cur = rng.integers(-1, 6, m) * 0.1
        bins = int(rng.integers(1, 15))
        assert abs(psi(ref, cur, bins) - _reference_psi(ref, cur, bins)) <= 1e-9


def test_quantile_edges_are_bitwise_numpy_quantiles() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 11, 101, 1000, 12_345):
        x = np.sort(rng.lognormal(size=n) * rng.choice([1e-3, 1.0, 1e5]))
        for bins in (1, 3, 10, 17):
            expected = np.unique(np.quantile(x, [i / bins for i in range(bins + 1)]))
            assert np.array_equal(_quantile_edges(x, bins), expected)


def test_psi_edge_cases() -> None:
    assert psi(np.full(100, 2.0), np.full(50, 2.0)) == 0.0
    same = np.arange(1000.0)
    assert psi(same, same) == 0.0
    # constant reference: moving up or down is caught by the outer bins
    assert psi(np.full(100, 2.0), np.full(100, 2.5)) > 1.0
    assert psi(np.full(100, 2.0), np.full(100, 1.5)) > 1.0
    # no finite values on one side
    assert math.isnan(psi([1.0, 2.0], [np.nan, None, np.inf]))
    assert math.isnan(psi([np.nan], [1.0]))
    # epsilon is the floor of a bin share: a bigger epsilon damps empty-bin terms
    a, b = np.zeros(100), np.ones(100)
    assert psi(a, b, epsilon=1e-2) < psi(a, b, epsilon=1e-6)
    with pytest.raises(ValueError, match="bins"):
        psi(a, b, bins=0)
    with pytest.raises(ValueError, match="epsilon"):
        psi(a, b, epsilon=0)


# --------------------------------------------------------------------------- verdicts
def _frame(rng: np.random.Generator, n: int, shift: float = 0.0, new_share: float = 0.0):
    plans = np.array(["free", "basic", "pro"])
    p = np.array([0.5, 0.3, 0.2]) if shift == 0 else np.array([0.25, 0.35, 0.4])
    plan = plans[rng.choice(3, n, p=p)].astype(object)
    plan[rng.random(n) < new_share] = "enterprise"
    return pl.DataFrame(
        {
            "age": rng.normal(40 + 8 * shift, 10, n),
            "visits": rng.poisson(3 + 2 * shift, n),
            "spend": rng.lognormal(3 + shift, 1, n),
            "plan": pl.Series(plan.tolist(), dtype=pl.String),
            "score": rng.beta(2 + 3 * shift, 5, n),
        }
    )


NUM, CAT = ["age", "visits", "spend"], ["plan"]


def test_no_drift_on_two_samples_of_the_same_distribution() -> None:
    rng = np.random.default_rng(11)
    result = compute_drift(
        _frame(rng, 50_000), _frame(rng, 40_000), NUM, CAT, prediction_columns=["score"]
    )
    assert result.drifted is False
    assert result.drifted_columns == []
    assert result.share_drifted == 0.0
    assert result.prediction_drift is False
    assert result.table["value"].max() < 0.01
    assert (result.reference_rows, result.current_rows) == (50_000, 40_000)


def test_clear_drift_on_a_shifted_sample() -> None:
    rng = np.random.default_rng(12)
    result = compute_drift(
        _frame(rng, 50_000),
        _frame(rng, 40_000, shift=1.0, new_share=0.1),
        NUM,
        CAT,
        prediction_columns=["score"],
    )
    assert result.drifted is True
    assert result.drifted_columns == ["age", "visits", "spend", "plan", "score"]
    assert result.share_drifted == 1.0
    assert result.prediction_drift is True
    row = result.table.filter(pl.col("column") == "plan").row(0, named=True)
    assert row["unseen_distinct"] == 1
    assert 3_500 < row["unseen_categories"] < 4_500
    age = result.table.filter(pl.col("column") == "age").row(0, named=True)
    assert age["current_mean"] - age["reference_mean"] == pytest.approx(8, abs=0.5)


def test_table_psi_equals_reference_and_psi_function() -> None:
    rng = np.random.default_rng(13)
    ref, cur = _frame(rng, 5_000), _frame(rng, 3_000, shift=0.3)
    table = drift_table(ref, cur, NUM, CAT)
    for col in NUM:
        value = table.filter(pl.col("column") == col)["value"].item()
        expected = _reference_psi(ref[col].to_numpy(), cur[col].to_numpy())
        assert abs(value - expected) <= 1e-9
        assert value == psi(ref[col].to_numpy(), cur[col].to_numpy())


def test_verdict_uses_share_of_features_and_strict_thresholds() -> None:
    rng = np.random.default_rng(14)
    ref = _frame(rng, 20_000)
    cur = ref.with_columns(pl.col("age") + 15)  # 1 of 4 features drifts, prediction does not
    features = ["age", "visits", "spend"]
    lenient = DriftThresholds(severe_psi=1e9)  # share rule only
    result = compute_drift(ref, cur, features, CAT, ["score"], lenient)
    assert result.drifted_columns == ["age"]
    assert result.share_drifted == 0.25
    assert result.drifted is False  # 0.25 <= 0.3
    assert compute_drift(ref, cur, features, CAT, ["score"]).drifted  # age's PSI is severe
    at_share = compute_drift(
        ref, cur, features, CAT, ["score"], DriftThresholds(share_drifted=0.25, severe_psi=1e9)
    )
    assert at_share.drifted is False  # strictly greater than the share threshold
    assert compute_drift(
        ref, cur, features, CAT, ["score"], DriftThresholds(share_drifted=0.2, severe_psi=1e9)
    ).drifted
    # a drifted prediction column alone makes the verdict "drift"
    moved = ref.with_columns(pl.col("score") * 0.5)
    only_prediction = compute_drift(ref, moved, features, CAT, ["score"])
    assert only_prediction.share_drifted == 0.0
    assert only_prediction.prediction_drift and only_prediction.drifted
    assert only_prediction.drifted_columns == ["score"]
    row = only_prediction.table.filter(pl.col("column") == "score").row(0, named=True)
    assert (row["kind"], row["metric"], row["threshold"]) == ("prediction", "psi", 0.2)
    stricter = DriftThresholds(prediction_psi=1e6)
    assert not compute_drift(ref, moved, features, CAT, ["score"], stricter).prediction_drift


# --------------------------------------------------------------------------- categorical
def test_categorical_l1_and_js_hand_computed() -> None:
    ref = pl.DataFrame({"c": ["a", "a", "b", "b"]})
    cur = pl.DataFrame({"c": ["a", "b", "c", "c"]})
    # p = (a .5, b .5, c 0), q = (a .25, b .25, c .5), m = (.375, .375, .25)
    # L1 = .25 + .25 + .5 = 1
    # KL(p||m) = 2 * .5 * log2(.5/.375) = log2(4/3)
    # KL(q||m) = 2 * .25 * log2(.25/.375) + .5 * log2(.5/.25) = .5 * log2(2/3) + .5
    expected_js = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    row = drift_table(ref, cur, [], ["c"]).row(0, named=True)
    assert row["kind"] == "categorical" and row["metric"] == "l1"
    assert row["value"] == pytest.approx(1.0, abs=1e-15)
    assert row["js"] == pytest.approx(expected_js, abs=1e-15)
    assert row["js"] == pytest.approx(0.3112781244591328, abs=1e-15)
    assert row["unseen_categories"] == 2
    assert row["unseen_distinct"] == 1
    assert row["drifted"] is True
    # bounds: identical -> 0, disjoint -> L1 = 2 and JS = 1
    same = drift_table(ref, ref, [], ["c"]).row(0, named=True)
    assert (same["value"], same["js"], same["drifted"]) == (0.0, 0.0, False)
    disjoint = drift_table(ref, pl.DataFrame({"c": ["x", "y"]}), [], ["c"]).row(0, named=True)
    assert disjoint["value"] == pytest.approx(2.0)
    assert disjoint["js"] == pytest.approx(1.0)
    assert (disjoint["unseen_categories"], disjoint["unseen_distinct"]) == (2, 2)


def test_categorical_thresholds_l1_or_js() -> None:
    ref = pl.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    cur = pl.DataFrame({"c": ["a"] * 60 + ["b"] * 40})  # L1 = 0.2 exactly, JS ~ 0.0073
    assert drift_table(ref, cur, [], ["c"])["drifted"].item() is False  # 0.2 is not > 0.2
    assert drift_table(ref, cur, [], ["c"], thresholds=DriftThresholds(l1=0.19))["drifted"].item()
    assert drift_table(ref, cur, [], ["c"], thresholds=DriftThresholds(js=0.007))["drifted"].item()


def test_categorical_nulls_are_their_own_category() -> None:
    ref = pl.DataFrame({"c": ["a", None, "a", "b"]})
    cur = pl.DataFrame({"c": ["a", None, None, "b"]})
    row = drift_table(ref, cur, [], ["c"]).row(0, named=True)
    # p = (a .5, null .25, b .25), q = (a .25, null .5, b .25)
    assert row["value"] == pytest.approx(0.5)
    assert (row["reference_nulls"], row["current_nulls"]) == (1, 2)
    assert (row["unseen_categories"], row["unseen_distinct"]) == (0, 0)
    # nulls appearing only in the current sample are drift but not an "unseen category"
    no_nulls = pl.DataFrame({"c": ["a", "b", "a", "b"]})
    row = drift_table(no_nulls, cur, [], ["c"]).row(0, named=True)
    assert row["value"] == pytest.approx(1.0)
    assert row["unseen_categories"] == 0
    result = compute_drift(no_nulls, cur, [], ["c"])
    assert result.distributions["c"]["categories"].count(None) == 1


def test_categorical_dtypes_agree() -> None:
    rng = np.random.default_rng(21)
    values = ["x", "y", "z", None]
    ref_list = [values[i] for i in rng.choice(4, 2_000, p=[0.4, 0.3, 0.2, 0.1])]
    cur_list = [values[i] for i in rng.choice(4, 1_500, p=[0.2, 0.3, 0.4, 0.1])] + ["w"] * 10
    enum = pl.Enum(["x", "y", "z", "w"])
    expected = drift_table(
        pl.DataFrame({"c": ref_list}), pl.DataFrame({"c": cur_list}), [], ["c"]
    ).row(0)
    for ref_dtype, cur_dtype in [
        (pl.Categorical, pl.Categorical),
        (pl.Categorical, pl.String),
        (enum, enum),
        (enum, pl.Categorical),
    ]:
        ref = pl.DataFrame({"c": pl.Series(ref_list, dtype=ref_dtype)})
        cur = pl.DataFrame({"c": pl.Series(cur_list, dtype=cur_dtype)})
        assert drift_table(ref, cur, [], ["c"]).row(0) == expected, (ref_dtype, cur_dtype)
    # integer and boolean codes work as categories too
    ints = drift_table(
        pl.DataFrame({"c": [1, 1, 2, None]}), pl.DataFrame({"c": [1, 2, 2, 3]}), [], ["c"]
    ).row(0, named=True)
    assert ints["value"] == pytest.approx(1.0) and ints["unseen_distinct"] == 1


# --------------------------------------------------------------------------- numeric details
def test_numeric_nulls_nan_and_inf_are_missing() -> None:
    ref = pl.DataFrame({"x": [1.0, 2.0, None, float("nan"), 3.0, 4.0]})
    cur = pl.DataFrame({"x": [1.0, float("inf"), 2.0, 3.0, None, float("-inf"), 4.0]})
    row = drift_table(ref, cur, ["x"], []).row(0, named=True)
    assert (row["reference_nulls"], row["current_nulls"]) == (2, 3)
    assert row["value"] == psi([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]) == 0.0
    assert row["reference_mean"] == 2.5 and row["current_mean"] == 2.5


def test_integer_and_float_columns_agree() -> None:
    rng = np.random.default_rng(31)
    r, c = rng.poisson(4, 3_000), rng.poisson(5, 2_000)
    as_int = drift_table(
        pl.DataFrame({"x": pl.Series(r, dtype=pl.Int32)}),
        pl.DataFrame({"x": pl.Series(c, dtype=pl.UInt64)}),
        ["x"],
        [],
    )
    as_float = drift_table(
        pl.DataFrame({"x": r.astype(float)}), pl.DataFrame({"x": c.astype(float)}), ["x"], []
    )
    assert as_int.equals(as_float)
    assert abs(as_int["value"].item() - _reference_psi(r, c)) <= 1e-9


def test_all_null_columns() -> None:
    ref = pl.DataFrame(
        {"x": [1.0, 2.0, 3.0], "y": [None, None, None]}, schema_overrides={"y": pl.Float64}
    )
    cur = pl.DataFrame(
        {"x": [None, None], "y": [None, None]}, schema={"x": pl.Float64, "y": pl.Float64}
    )
    result = compute_drift(ref, cur, ["x", "y"], [])
    x, y = result.table.rows(named=True)
    assert x["value"] is None and x["drifted"] is True
    assert x["note"] == "current column has no values"
    assert (x["reference_nulls"], x["current_nulls"]) == (0, 2)
    assert y["value"] is None and y["drifted"] is False
    assert result.drifted_columns == ["x"]
    # a feature gone altogether decides the verdict alone (1 of 2 features, under the share
    # of 0.3 it would not): scoring fills it in as missing without a word otherwise
    assert result.drifted
    assert any("no values at all now in x" in r for r in verdict_reasons(result))
    many = [f"f{i}" for i in range(9)]
    wide = ref.with_columns(*(pl.lit(1.0).alias(f) for f in many))
    now = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias("f0"))
    assert compute_drift(wide, now, ["x", *many], []).drifted  # one of ten gone
    json.dumps(result.to_dict(), allow_nan=False)
    back = compute_drift(cur, ref, ["x"], []).table.row(0, named=True)
    assert back["drifted"] is True and back["note"] == "reference column has no values"
    # polars infers the Null dtype for all-null columns: numeric, categorical and prediction
    untyped = pl.DataFrame({"x": [None, None], "c": [None, None], "p": [None, None]})
    full = ref.with_columns(pl.Series("c", ["a", "b", None]), pl.Series("p", [0.1, 0.2, 0.3]))
    result = compute_drift(full, untyped, ["x"], ["c"], ["p"])
    assert result.table["kind"].to_list() == ["numeric", "categorical", "prediction"]
    assert result.table["metric"].to_list() == ["psi", "l1", "psi"]
    assert result.table["drifted"].to_list() == [True, True, True]
    assert result.table["value"][1] == pytest.approx(4 / 3)  # |1/3-0|+|1/3-0|+|1/3-1|
    page = render_html(result, full, untyped, "all null")
    assert page.count("<svg") == 3


def test_constant_reference_column() -> None:
    ref = pl.DataFrame({"x": [5] * 100})
    same = drift_table(ref, pl.DataFrame({"x": [5] * 30}), ["x"], []).row(0, named=True)
    assert same["value"] == 0.0 and same["drifted"] is False
    assert same["note"] == "constant in the reference"
    for moved in ([6] * 30, [4] * 30, [5] * 20 + [4] * 5 + [6] * 5):
        row = drift_table(ref, pl.DataFrame({"x": moved}), ["x"], []).row(0, named=True)
        assert row["drifted"] is True
        assert abs(row["value"] - _reference_psi([5] * 100, moved)) <= 1e-9


# --------------------------------------------------------------------------- inputs
def test_invalid_inputs_raise_clear_errors() -> None:
    ref = pl.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]})
    with pytest.raises(ValueError, match="current frame is empty"):
        compute_drift(ref, ref.clear(), ["x"], ["c"])
    with pytest.raises(ValueError, match="reference frame is empty"):
        drift_table(ref.head(0), ref, ["x"], ["c"])
    with pytest.raises(ValueError, match=r"missing from the current frame: \['c'\]"):
        compute_drift(ref, ref.drop("c"), ["x"], ["c"])
    with pytest.raises(ValueError, match="more than once"):
        compute_drift(ref, ref, ["x"], ["c"], prediction_columns=["x"])
    with pytest.raises(TypeError, match="non-numeric"):
        compute_drift(ref, ref, ["c"], [])
    with pytest.raises(TypeError, match="polars DataFrame"):
        compute_drift(ref.to_pandas(), ref, ["x"], [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bins"):
        DriftThresholds(bins=0)
    with pytest.raises(ValueError, match="psi"):
        DriftThresholds(psi=-1)


def test_to_dict_is_json_serialisable() -> None:
    rng = np.random.default_rng(41)
    result = compute_drift(_frame(rng, 2_000), _frame(rng, 2_000, shift=1), NUM, CAT, ["score"])
    summary = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert summary["drifted"] is True
    assert summary["thresholds"]["l1"] == 0.2
    assert [c["column"] for c in summary["columns"]] == [*NUM, *CAT, "score"]
    assert set(summary["columns"][0]) >= {
        "column", "kind", "metric", "value", "threshold", "js", "drifted", "reference_nulls",
        "current_nulls", "unseen_categories", "unseen_distinct", "reference_mean", "current_mean",
    }  # fmt: skip


def test_modules_do_not_import_dagster_or_mlflow() -> None:
    code = (
        "import sys, churn_assets.lib.drift, churn_assets.lib.drift_report\n"
        "heavy = {'dagster', 'mlflow', 'evidently', 'matplotlib', 'pandas'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- HTML report
def _report_inputs() -> tuple[DriftResult, pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(51)
    ref = _frame(rng, 3_000).with_columns(
        pl.lit(1.0).alias("constant"), pl.Series("a<b & 'c'", ["x", None, "y"] * 1_000)
    )
    cur = _frame(rng, 2_000, shift=1, new_share=0.05).with_columns(
        pl.lit(2.0).alias("constant"),
        pl.Series("a<b & 'c'", [f"v{i % 40}" for i in range(2_000)]),
    )
    result = compute_drift(ref, cur, [*NUM, "constant"], [*CAT, "a<b & 'c'"], ["score"])
    return result, ref, cur


def test_html_report_is_self_contained_and_names_every_column() -> None:
    result, ref, cur = _report_inputs()
    page = render_html(
        result, ref, cur, "Churn drift <test>", meta={"model version": "7", "cut-off": "2025-03"}
    )
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    lowered = page.lower()
    for forbidden in ("<script", "<link", "@import", "src=", "url("):
        assert forbidden not in lowered
    for col in result.table["column"]:
        escaped = col.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&#x27;")
        assert f">{escaped}<" in page, col
    assert "a<b & 'c'" not in page  # escaped everywhere
    assert "Churn drift &lt;test&gt;" in page
    assert "model version" in page and "2025-03" in page
    assert "DRIFT DETECTED" in page
    # one inline SVG plot per column, drifted rows highlighted
    assert page.count("<svg") == result.table.height
    assert page.count('<tr class="drifted">') == len(result.drifted_columns)
    assert "(new)" in page  # unseen categories are marked
    assert "other (" in page  # more than MAX_CATEGORIES categories are summed
    assert len(re.findall(r"<rect ", page)) > 50


def test_html_report_without_stored_distributions_recomputes_them() -> None:
    result, ref, cur = _report_inputs()
    bare = DriftResult(
        table=result.table,
        drifted=result.drifted,
        share_drifted=result.share_drifted,
        drifted_columns=result.drifted_columns,
        prediction_drift=result.prediction_drift,
        thresholds=result.thresholds,
        reference_rows=result.reference_rows,
        current_rows=result.current_rows,
    )
    page = render_html(bare, ref, cur, "t")
    assert page.count("<svg") == result.table.height
    no_drift = compute_drift(ref, ref, NUM, CAT)
    assert "NO DRIFT" in render_html(no_drift, ref, ref, "t", None)


def test_one_severely_drifted_feature_decides_the_verdict():
    rng = np.random.default_rng(0)
    n = 5_000
    ref = pl.DataFrame({f"x{i}": rng.normal(size=n) for i in range(20)})
    cur = pl.DataFrame({f"x{i}": rng.normal(size=n) for i in range(20)}).with_columns(
        pl.col("x0") + 5.0
    )
    cols = [f"x{i}" for i in range(20)]
    result = compute_drift(ref, cur, cols, [])
    assert result.share_drifted == pytest.approx(1 / 20)
    assert result.drifted
    calm = compute_drift(ref, cur, cols, [], thresholds=DriftThresholds(severe_psi=1e9))
    assert not calm.drifted
