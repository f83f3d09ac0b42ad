"""The shipped real-data configs run on the real public data sets (skipped without them)."""

from __future__ import annotations

import pytest

from tests.helpers import run_graph

pytestmark = pytest.mark.integration

INGEST = ["raw_customers", "raw_transactions", "customer_features"]


def test_telco_snapshot(real_data):
    run = run_graph("telco", selection=INGEST)
    assert run.result.success
    features = run.result.output_for_node("customer_features")
    assert features.height == 7043
    assert features["churned"].sum() == 1869  # 26.54 % as published
    assert run.result.output_for_node("raw_transactions").height == 0


def test_online_retail_transactions(real_data):
    run = run_graph("online_retail", selection=[*INGEST, "training_set", "regression_models"])
    assert run.result.success, run.result
    raw = run.result.output_for_node("raw_transactions")
    assert raw.height == 541_909
    # lines without a customer id are tolerated by the config, quarantined, not used
    assert raw["_quarantined"].sum() == 135_080
    assert run.check("raw_transactions", "expectations_met").passed
    features = run.result.output_for_node("customer_features")
    assert features.height == 3404  # customers with a purchase before 2011-09-09
    assert 0.42 < features["churned"].mean() < 0.45
    value = run.result.output_for_node("regression_models")
    assert value["champion_metrics"]["r2_gain_vs_naive"] >= 0.05
    protocol = run.result.output_for_node("training_set")
    assert set(protocol["split"].unique()) == {"train", "validation", "holdout"}
