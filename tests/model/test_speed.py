"""Training-time budget of the full classification set on 10k rows x ~30 features."""

from __future__ import annotations

import time

import numpy as np
import pytest

from churn_assets.lib.models.classification import train_classification_set
from churn_assets.lib.models.spec import FeatureSpec
from churn_assets.lib.models.splits import split_snapshot

from ._data import make_frame


@pytest.mark.slow
def test_classification_set_10k_rows_30_features_under_a_minute() -> None:
    frame = make_frame(10_000, seed=5, n_noise=20)
    rng = np.random.default_rng(0)
    for j in range(3):
        frame[f"cat_{j}"] = rng.choice([f"v{i}" for i in range(12)], len(frame))
    spec = FeatureSpec.infer(frame)
    assert len(spec.columns) >= 30
    start = time.perf_counter()
    result = train_classification_set(split_snapshot(frame, seed=42), spec, seed=42)
    seconds = time.perf_counter() - start
    print(f"\n10k x {len(spec.columns)} classification set (5-fold CV): {seconds:.1f} s")
    assert seconds < 60
    assert result.champion_result.metrics["roc_auc"] > 0.75
