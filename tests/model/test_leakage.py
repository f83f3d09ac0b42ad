"""Label leakage: a column that predicts churn almost perfectly alone is named by the
training set's warning check and left out of a drafted config; honest features, ids and
noise are not."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from churn_assets.lib.config_draft import draft_config
from churn_assets.lib.leakage import leaking_columns, single_column_roc_auc
from tests.helpers import run_graph

N = 1200


def _customers(seed: int = 0) -> pl.DataFrame:
    """A bank-like snapshot: churn depends on age and products; three leaks beside it."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, N)
    products = rng.integers(1, 5, N)
    logit = -2.0 + 0.04 * (age - 40) + 0.6 * (products == 1)
    churned = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(int)
    return pl.DataFrame(
        {
            "CustomerId": [f"K{i:05d}" for i in range(N)],
            "Age": age,
            "Products": products,
            "Noise": rng.normal(size=N),
            "Exited": churned,
            # recorded after the outcome
            "ExitedFlag": np.where(churned == 1, "Y", "N"),
            "ExitReason": [
                rng.choice(["price", "service", "moved"]) if c else None for c in churned
            ],
            "ClosedBalance": np.where(churned == 1, 0.0, rng.gamma(2.0, 5000.0, N)),
        }
    )


def test_single_column_roc_auc_tells_leaks_from_features_ids_and_noise():
    frame = _customers()
    y = frame["Exited"].to_numpy()
    assert single_column_roc_auc(frame["ExitedFlag"], y) == 1.0
    assert single_column_roc_auc(frame["ExitReason"], y) == 1.0  # blank for those who stayed
    assert single_column_roc_auc(frame["ClosedBalance"], y) > 0.99  # a number, binned
    assert 0.6 < single_column_roc_auc(frame["Age"], y) < 0.9
    assert single_column_roc_auc(frame["Noise"], y) < 0.6
    # an id is unique per row: learnt on one half, it says nothing about the other
    assert single_column_roc_auc(frame["CustomerId"], y) == 0.5
    assert single_column_roc_auc(frame["Age"], np.zeros(N)) == 0.5  # one class


def test_leaking_columns_ranks_every_column_and_is_deterministic():
    frame = _customers()
    cols = ["Age", "Products", "Noise", "ExitedFlag", "ExitReason", "ClosedBalance"]
    leaks, ranked = leaking_columns(frame, frame["Exited"].to_numpy(), cols)
    assert set(leaks) == {"ExitedFlag", "ExitReason", "ClosedBalance"}
    assert list(ranked)[-1] == "Noise" and len(ranked) == 6
    assert leaking_columns(frame, frame["Exited"].to_numpy(), cols)[1] == ranked


def test_draft_config_leaves_leaks_out_with_a_check_note(tmp_path):
    path = tmp_path / "bank.csv"
    _customers().write_csv(path)
    text = draft_config(str(path), label="Exited")
    for leak in ("ExitedFlag", "ExitReason", "ClosedBalance"):
        assert f'# left out: "{leak}": CHECK: predicts the label almost perfectly alone' in text
        assert f'source: "{leak}"' not in text
    assert '{name: age, source: "Age", type: integer}' in text
    assert '{name: noise, source: "Noise", type: numeric}' in text


CONFIG = """
name: leaky
customers:
  path: {path}
  id_column: CustomerId
  attributes:
    - {{name: age, source: Age, type: integer}}
    - {{name: products, source: Products, type: integer}}
{extra}
labels:
  source: columns
  churned_column: Exited
  churned_positive: ["1"]
"""


@pytest.mark.parametrize("leaky", [True, False])
def test_the_training_set_check_warns_on_a_leak_and_passes_without(isolated_env, tmp_path, leaky):
    path = tmp_path / "bank.csv"
    _customers().write_csv(path)
    extra = "    - {name: exit_reason, source: ExitReason, type: categorical}" if leaky else ""
    config = tmp_path / "leaky.yaml"
    config.write_text(CONFIG.format(path=path, extra=extra))
    run = run_graph(str(config), ["raw_customers", "customer_features", "training_set"])
    assert run.result.success  # a warning: the run goes on
    check = run.check("training_set", "no_single_feature_leak")
    assert check.passed is not leaky
    if leaky:
        assert check.description.startswith("'exit_reason' (ROC-AUC 1.000) alone predict(s)")
    else:
        assert "highest ROC-AUC alone: age" in check.description


def test_a_leak_through_the_lines_before_the_cutoff_names_customers_who_had_left(
    isolated_env, tmp_path
):
    """An activity log whose departed users' last event is a cancellation: the share of
    that event predicts churn alone, and the warning says the table holds customers who had
    left already (not that a config column leaks)."""
    import datetime as dt

    rng = np.random.default_rng(5)
    rows = []
    for u in range(400):
        left = u % 3 == 0
        last = 40 if left else 200  # the cut-off is day 200 - 90 = 110
        for d in sorted(rng.integers(0, last, 30)):
            rows.append((f"u{u}", dt.datetime(2024, 1, 1) + dt.timedelta(days=int(d)), "view"))
        if left:
            rows.append((f"u{u}", dt.datetime(2024, 1, 1) + dt.timedelta(days=last), "cancel"))
    log = pl.DataFrame(rows, schema=["user", "at", "event"], orient="row")
    log.write_csv(tmp_path / "events.csv")
    config = tmp_path / "events.yaml"
    config.write_text(
        f"name: events\ntransactions:\n  path: {tmp_path / 'events.csv'}\n  customer_id: user\n"
        "  timestamp: at\n  activity_only: true\n  category: event\n"
        "labels:\n  source: transactions\n  horizon_days: 90\n"
    )
    selection = ["raw_customers", "raw_transactions", "customer_features", "training_set"]
    run = run_graph(str(config), selection)
    assert run.result.success
    check = run.check("training_set", "no_single_feature_leak")
    assert not check.passed
    assert "'cat_share_cancel' (ROC-AUC 1.000)" in check.description
    assert "holds customers who had left already" in check.description
    assert "leave it out of the data set config" not in check.description


def test_a_value_that_leaks_only_at_the_evaluation_cutoff_is_caught():
    """A temporal split trains on an earlier cut-off: a customer's status as of the export
    ('inactive') says nothing there, and everything at the evaluation cut-off."""
    from churn_assets.models.checks import no_single_feature_leak

    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    split = np.where(
        np.arange(n) < 300, "train", np.where(np.arange(n) < 450, "validation", "holdout")
    )
    status = np.where(
        split == "train",
        rng.choice(["active", "inactive"], n),
        np.where(y == 1, "inactive", "active"),
    )
    frame = pl.DataFrame(
        {
            "customer_id": [str(i) for i in range(n)],
            "age": rng.integers(18, 80, n),
            "status": status,
            "churned": y,
            "split": split,
        }
    )
    result = no_single_feature_leak(frame)
    assert not result.passed
    assert result.description.startswith("'status' (ROC-AUC 1.000) alone predict(s)")
    fair = frame.with_columns(pl.Series("status", rng.choice(["active", "inactive"], n)))
    assert no_single_feature_leak(fair).passed
