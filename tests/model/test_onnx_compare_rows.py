"""The parity rule of ONNX graphs: values judged row by row at their own magnitude."""

from __future__ import annotations

import numpy as np
import pytest

from churn_serving.onnx_predictor import compare


def test_values_are_compared_row_by_row_not_against_the_largest_value():
    """A far-out probe near 1e16 must not hide an ordinary value that is off: the old rule
    (largest difference / largest value) accepts 100 → 101 beside 1e16, the row rule not."""
    expected = np.array([7.3e15, 100.0, 2500.0])
    got = np.array([7.3e15, 101.0, 2500.0])
    rows = compare(got, expected, "regressor")  # 1 / 7.3e15 against the largest value
    assert not rows["ok"]
    assert rows["max_rel_diff"] == pytest.approx(0.01)
    assert rows["max_rel_diff_expected"] == 100.0
    assert "on the value 100" in rows["reason"]


def test_float64_rounding_on_huge_probe_values_passes_row_by_row():
    """Telco's value model: 2.0 apart on a probe value of 7.3e15 (two float64 steps there)
    and 1e-12 apart on customers is agreement, as before."""
    expected = np.array([7313547260409663.0, 8444.842673935218, 0.0, np.nan])
    got = np.array([7313547260409665.0, 8444.842673935219, 5e-7, np.nan])
    rows = compare(got, expected, "regressor")
    assert rows["ok"] and rows["max_abs_diff"] == 2.0
    assert rows["max_rel_diff"] == pytest.approx(5e-7)  # below 1, the floor: absolute 1e-6
    assert not compare(np.array([1.0, 2e-6]), np.array([1.0, 0.0]), "regressor")["ok"]
    assert not compare(np.array([np.nan]), np.array([3.0]), "regressor")["ok"]


def test_classifier_rows_keep_the_absolute_probability_rule():
    got = np.array([0.1, 0.5, 0.9])
    assert compare(got + 5e-7, got, "classifier", 0.5)["ok"]
    assert not compare(got + 2e-6, got, "classifier", 0.5)["ok"]
