"""The shipped real-data configs run on the real public data sets (skipped without them)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import run_graph

pytestmark = pytest.mark.integration

INGEST = ["raw_customers", "raw_transactions", "customer_features"]


def retail_reference(csv, cutoff: str, horizon_days: int) -> tuple[set[str], set[str]]:
    """Straight from the raw CSV with pandas, independently of the platform: the customers
    with any invoice line before the cut-off, and those of them with no purchase (a line
    that is not a return: no "C" invoice prefix, amount ≥ 0) in [cut-off, cut-off + horizon)."""
    raw = pd.read_csv(csv, dtype={"CustomerID": str, "InvoiceNo": str})
    raw = raw[raw["CustomerID"].notna()]
    raw["CustomerID"] = raw["CustomerID"].str.removesuffix(".0")
    when = pd.to_datetime(raw["InvoiceDate"])
    start = pd.Timestamp(cutoff)
    known = set(raw.loc[when < start, "CustomerID"])
    window = raw[(when >= start) & (when < start + pd.Timedelta(days=horizon_days))]
    purchase = ~window["InvoiceNo"].str.startswith("C") & (
        window["Quantity"] * window["UnitPrice"] >= 0
    )
    return known, known - set(window.loc[purchase, "CustomerID"])


def test_telco_snapshot(real_data):
    run = run_graph("telco", selection=[*INGEST, "training_set", "regression_models"])
    assert run.result.success
    features = run.result.output_for_node("customer_features")
    assert features.height == 7043
    assert features["churned"].sum() == 1869  # 26.54 % as published
    # a snapshot data set has no transaction files, so raw_transactions has no partition
    assert "raw_transactions" not in run.materialized
    # TotalCharges is about tenure x MonthlyCharges: the value "forecast" restates it
    value = run.check("regression_models", "value_label_is_not_a_function_of_features")
    assert not value.passed and "almost a function of the features" in value.description


@pytest.mark.timeout(1200)
def test_online_retail_transactions(real_data):
    """Timeout 1200 s: ingests 541,909 invoice lines and trains the regression set."""
    run = run_graph("online_retail", selection=[*INGEST, "training_set", "regression_models"])
    assert run.result.success, run.result
    raw = run.result.output_for_node("raw_transactions")
    assert raw.height == 541_909
    # lines without a customer id are tolerated by the config, quarantined, not used
    assert raw["_quarantined"].sum() == 135_080
    assert run.check("raw_transactions", "expectations_met").passed
    features = run.result.output_for_node("customer_features")
    known, churned = retail_reference(real_data / "online_retail.csv", "2011-09-09", 91)
    ids = [i.removesuffix(".0") for i in features["customer_id"].to_list()]
    assert len(ids) == len(set(ids)) and set(ids) == known  # 3,404 customers
    assert {i for i, c in zip(ids, features["churned"], strict=True) if c} == churned  # 43 %
    value = run.result.output_for_node("regression_models")
    assert value["champion_metrics"]["r2_gain_vs_naive"] >= 0.05
    assert run.check("regression_models", "value_label_is_not_a_function_of_features").passed
    protocol = run.result.output_for_node("training_set")
    assert set(protocol["split"].unique()) == {"train", "validation", "holdout"}
