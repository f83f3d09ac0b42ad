"""Synthetic ``customer_features``-like frames for the model-set tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_frame(n: int = 1200, seed: int = 0, n_noise: int = 0) -> pd.DataFrame:
    """Frame with the platform's contract: id, numeric / categorical features, labels.

    Churn rises with ``recency_days`` (strongly), falls with ``frequency``, and depends on
    ``plan``; ``total_sales`` is heavy-tailed (lognormal, zero for most churners) and
    ``naive_total_sales`` is a noisy forecast of it.
    """
    rng = np.random.default_rng(seed)
    recency = rng.integers(0, 365, n).astype(float)
    frequency = rng.poisson(6, n).astype(float)
    monetary = rng.lognormal(3.5, 0.8, n)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], n)
    is_business = rng.random(n) < 0.2
    age = rng.integers(18, 80, n).astype(float)
    plan_effect = pd.Series(plan).map({"basic": 0.6, "plus": 0.0, "pro": -0.6}).to_numpy()
    logit = -2.3 + 0.012 * recency - 0.12 * frequency + plan_effect
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    value = monetary * (1 + frequency) * rng.lognormal(0.0, 0.6, n)
    total_sales = np.where(churned == 1, value * (rng.random(n) < 0.2), value)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(n)],
            "recency_days": recency,
            "frequency": frequency,
            "monetary": monetary,
            "age": age,
            "is_business": is_business,
            "plan": plan,
            "region": pd.Categorical(region),
            "naive_total_sales": value * rng.lognormal(0.0, 0.5, n),
            "cutoff": pd.Timestamp("2024-01-01"),
            "churned": churned,
            "total_sales": total_sales,
        }
    )
    for j in range(n_noise):
        frame[f"noise_{j}"] = rng.normal(size=n)
    # Nulls in a categorical and a numeric feature.
    frame.loc[rng.random(n) < 0.05, "plan"] = None
    frame.loc[rng.random(n) < 0.03, "age"] = np.nan
    return frame
