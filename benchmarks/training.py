"""Training time of the default classification model set on 10k rows x ~30 features.

Reported against the logistic-regression candidate's own time in the same run (the cheapest
candidate: the ratio says what the full default set costs on top of a linear baseline), and
with the champion's holdout ROC-AUC so a faster set that learns less is visible.

    python -m benchmarks.training --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import pandas as pd


def wide_frame(n: int = 10_000, seed: int = 5, n_noise: int = 20) -> pd.DataFrame:
    """A ``customer_features``-like frame: a few informative features, ``n_noise`` noise
    columns and three 12-level categoricals (about 30 features in all)."""
    rng = np.random.default_rng(seed)
    recency = rng.integers(0, 365, n).astype(float)
    frequency = rng.poisson(6, n).astype(float)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    plan_effect = pd.Series(plan).map({"basic": 0.6, "plus": 0.0, "pro": -0.6}).to_numpy()
    logit = -2.3 + 0.012 * recency - 0.12 * frequency + plan_effect
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    monetary = rng.lognormal(3.5, 0.8, n)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(n)],
            "recency_days": recency,
            "frequency": frequency,
            "monetary": monetary,
            "age": rng.integers(18, 80, n).astype(float),
            "is_business": rng.random(n) < 0.2,
            "plan": plan,
            "region": rng.choice(["north", "south", "east", "west"], n),
            "cutoff": pd.Timestamp("2024-01-01"),
            "churned": churned,
            "total_sales": monetary * (1 + frequency) * (1 - churned * 0.8),
        }
    )
    for j in range(n_noise):
        frame[f"noise_{j}"] = rng.normal(size=n)
    for j in range(3):
        frame[f"cat_{j}"] = rng.choice([f"v{i}" for i in range(12)], n)
    return frame


def train(frame: pd.DataFrame, name: str) -> dict[str, Any]:
    """Train the default classification set on ``frame``; seconds, ratio and quality."""
    from churn_assets.lib.models.classification import train_classification_set
    from churn_assets.lib.models.spec import FeatureSpec
    from churn_assets.lib.models.splits import split_snapshot

    spec = FeatureSpec.infer(frame)
    start = time.perf_counter()
    result = train_classification_set(split_snapshot(frame, seed=42), spec, seed=42)
    seconds = time.perf_counter() - start
    reference = result.get("logistic_regression").train_seconds
    return {
        "data": name,
        "rows": len(frame),
        "features": len(spec.columns),
        "seconds": round(seconds, 2),
        "reference": "logistic_regression candidate (fit + CV), same run",
        "reference_seconds": round(reference, 2),
        "ratio_to_reference": round(seconds / reference, 1) if reference else None,
        "per_candidate_seconds": {c.name: round(c.train_seconds, 2) for c in result.candidates},
        "champion": result.champion,
        "champion_roc_auc": round(float(result.champion_result.metrics["roc_auc"]), 4),
    }


def run(rows: int = 10_000) -> dict[str, Any]:
    return train(wide_frame(rows), f"synthetic {rows} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.rows), indent=None if args.json else 2))


if __name__ == "__main__":
    main()
