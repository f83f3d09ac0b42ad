"""Which split a training set gets: temporal only for labels derived from transactions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.feature_sets import build_training_set, features_at, label_cutoff, usable
from churn_assets.lib.ingest import ingest_customers, ingest_transactions

CONFIG = """
name: accounts
customers:
  path: customers/
  id_column: account_id
  attributes:
    - {name: plan, type: categorical}
    - {name: seats, type: integer}
transactions:
  path: transactions/
  customer_id: account_id
  timestamp: paid_at
  amount: amount
labels:
  source: columns
  churned_column: status
  churned_positive: [churned]
"""


def test_a_label_column_with_transactions_is_split_by_customer(isolated_env, tmp_path):
    """An accounts table with its status column and a year of payments: the status is each
    account's label at one date, so the split keeps every account in one split (a temporal
    split would train on the holdout's own accounts and labels at an earlier cut-off)."""
    rng = np.random.default_rng(3)
    n = 800
    ids = [f"A{i:04d}" for i in range(n)]
    churned = rng.random(n) < 0.3
    landing = isolated_env / "landing" / "accounts"
    (landing / "customers").mkdir(parents=True)
    (landing / "transactions").mkdir(parents=True)
    pl.DataFrame(
        {
            "account_id": ids,
            "plan": rng.choice(["basic", "pro", "team"], n),
            "seats": rng.integers(1, 50, n),
            "status": np.where(churned, "churned", "active"),
        }
    ).write_csv(landing / "customers" / "accounts.csv")
    months = 12
    pay_ids = np.repeat(ids, months)
    day = np.tile(np.arange(months) * 30, n) + rng.integers(0, 5, n * months)
    kept = ~(np.repeat(churned, months) & (np.tile(np.arange(months), n) >= 9))
    pl.DataFrame(
        {
            "account_id": pay_ids[kept],
            "paid_at": (np.datetime64("2024-01-01") + day[kept].astype("timedelta64[D]")).astype(
                str
            ),
            "amount": rng.gamma(2.0, 50.0, n * months)[kept].round(2),
        }
    ).write_csv(landing / "transactions" / "payments.csv")
    config = tmp_path / "accounts.yaml"
    config.write_text(CONFIG)
    cfg = load_dataset_config(str(config))
    customers, _ = usable(ingest_customers(cfg, str(landing)).frame)
    tx, _ = usable(ingest_transactions(cfg, str(landing)).frame)
    features = features_at(cfg, customers, tx, label_cutoff(cfg, tx))
    assert cfg.models.temporal_validation  # the default, not turned off

    frame, protocol = build_training_set(cfg, features, customers, tx)
    assert protocol["protocol"] == "hashed"
    assert "churn label is a column of the customer table" in protocol["description"]
    assert frame.height == n
    per_customer = frame.group_by("customer_id").agg(pl.col("split").n_unique())
    assert per_customer["split"].max() == 1  # no account in two splits
    shares = frame["split"].value_counts(normalize=True).sort("split")
    assert shares["proportion"].to_list() == pytest.approx([0.2, 0.6, 0.2], abs=0.05)
