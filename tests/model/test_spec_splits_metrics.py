"""Feature spec, schema, splits and metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from churn_assets.lib.models.metrics import (
    choose_threshold,
    classification_metrics,
    regression_metrics,
)
from churn_assets.lib.models.spec import FeatureSpec, feature_schema
from churn_assets.lib.models.splits import split_random, split_snapshot

from ._data import make_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame(1000, seed=1)


def test_infer_spec_types_and_exclusions(frame: pd.DataFrame) -> None:
    df = frame.assign(split_group="a", signup=pd.Timestamp("2020-01-01"))
    spec = FeatureSpec.infer(df)
    assert spec.numeric == [
        "recency_days",
        "frequency",
        "monetary",
        "age",
        "is_business",
        "naive_total_sales",
    ]
    assert spec.categorical == ["plan", "region"]
    for never in ("customer_id", "churned", "total_sales", "cutoff", "split_group", "signup"):
        assert never not in spec.columns


def test_spec_round_trip_and_json(frame: pd.DataFrame) -> None:
    spec = FeatureSpec.infer(frame)
    data = spec.to_dict(frame)
    json.dumps(data)
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert data["dtypes"]["region"] == "category"
    assert data["schema"]["plan"]["categories"] == ["basic", "plus", "pro"]


def test_feature_schema_ranges_and_nulls(frame: pd.DataFrame) -> None:
    spec = FeatureSpec.infer(frame)
    schema = feature_schema(frame, spec)
    json.dumps(schema)
    assert schema["recency_days"]["type"] == "numeric"
    assert schema["recency_days"]["min"] == frame["recency_days"].min()
    assert schema["recency_days"]["max"] == frame["recency_days"].max()
    assert schema["age"]["nullable"] is True
    assert schema["is_business"] == {
        "type": "numeric",
        "dtype": "bool",
        "min": 0.0,
        "max": 1.0,
        "nullable": False,
    }
    assert schema["plan"]["nullable"] is True
    assert schema["region"]["categories"] == ["east", "north", "south", "west"]
    with pytest.raises(KeyError):
        feature_schema(frame.drop(columns=["plan"]), spec)


def test_spec_rejects_overlap() -> None:
    with pytest.raises(ValueError):
        FeatureSpec(numeric=["a"], categorical=["a"])


def test_split_snapshot_partition_and_stratification(frame: pd.DataFrame) -> None:
    parts = split_snapshot(frame, seed=42)
    sizes = {k: len(v) for k, v in parts.items()}
    assert sum(sizes.values()) == len(frame)
    assert sizes == {"train": 600, "validation": 200, "holdout": 200}
    ids = [set(p["customer_id"]) for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    rate = frame["churned"].mean()
    for part in parts.values():
        assert abs(part["churned"].mean() - rate) < 0.01
    # Holdout is the classic stratified 80/20 test part for the same seed.
    _, classic = train_test_split(frame, test_size=0.2, random_state=42, stratify=frame["churned"])
    assert set(parts["holdout"].index) == set(classic.index)


def test_splits_are_deterministic(frame: pd.DataFrame) -> None:
    a, b = split_snapshot(frame, seed=7), split_snapshot(frame, seed=7)
    c = split_snapshot(frame, seed=8)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not a["holdout"].index.equals(c["holdout"].index)
    r1, r2 = split_random(frame, seed=3), split_random(frame, seed=3)
    assert all(r1[k].index.equals(r2[k].index) for k in r1)
    assert sum(len(p) for p in r1.values()) == len(frame)


def test_split_arguments_validated(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError):
        split_snapshot(frame, validation=0.5, holdout=0.5)
    with pytest.raises(KeyError):
        split_snapshot(frame, label="nope")


def test_choose_threshold_maximises_f1() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    t = choose_threshold(y, p)
    best = f1_score(y, p >= t)
    for cand in np.unique(p):
        assert f1_score(y, p >= cand) <= best + 1e-12
    assert choose_threshold(np.zeros(5), np.linspace(0, 1, 5)) == 0.5


def test_classification_metrics_values() -> None:
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)
    assert set(m) >= {"roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "log_loss"}
    assert m["roc_auc"] == 1.0 and m["f1"] == 1.0 and m["recall"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)


def test_regression_metrics_values() -> None:
    m = regression_metrics([0.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert m["r2"] == pytest.approx(1 - 2 / 8)
