"""``churn evaluate``: the model sets retrained over several split seeds."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from churn_assets.cli import main
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.feature_sets import build_training_set, usable
from churn_assets.lib.repeated_holdout import repeated_holdout, summarize
from tests.helpers import run_graph
from tests.integration.test_deployment import small_synthetic

TABLES = ["raw_customers", "raw_transactions", "customer_features"]


def test_summarize() -> None:
    s = summarize([0.7, 0.8, 0.9])
    assert (s["min"], s["max"], s["values"]) == (0.7, 0.9, [0.7, 0.8, 0.9])
    assert abs(s["mean"] - 0.8) < 1e-12 and abs(s["sd"] - 0.1) < 1e-12
    assert summarize([0.5])["sd"] == 0.0


def test_evaluate_reports_spread_over_split_seeds(isolated_env, tmp_path, monkeypatch) -> None:
    config = small_synthetic(isolated_env, tmp_path)
    run = run_graph(config, selection=[*TABLES, "training_set"])
    assert run.result.success

    result = CliRunner().invoke(main, ["evaluate", "--dataset", config, "--seeds", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dataset"] == "synthetic" and report["seeds"] == [0, 1, 2]
    assert report["protocol"] == "temporal"
    for kind, metric in (("classification", "roc_auc"), ("regression", "r2")):
        block = report[kind]
        assert block["primary_metric"] == metric
        champ = block["champion"][metric]
        assert len(champ["values"]) == 3 and champ["min"] <= champ["mean"] <= champ["max"]
        # other customers in the holdout: other scores
        assert champ["sd"] > 0
        # candidates as fitted on train; the champion refitted on train + validation
        assert set(block["champions"]) <= set(block["candidates"])
        crit = block["criteria"]
        best = block["candidates"][crit["best_single_candidate"]][metric]["mean"]
        assert crit["best_single_mean"] == best
        assert crit["shortfall"] == pytest.approx(best - champ["mean"])
        assert crit["within_tolerance"] == (crit["shortfall"] <= 0.01)
    reg = report["regression"]
    assert 0 <= reg["fallbacks_to_naive"] <= 3
    gains = reg["champion"]["r2_gain_vs_naive"]
    assert reg["criteria"]["gain_never_negative"] == (gains["min"] >= 0)
    # a fallback to the naive baseline gains exactly nothing
    for name, gain in zip(reg["champions"], gains["values"], strict=True):
        if name == "naive_baseline":
            assert gain == 0.0


def test_split_seed_only_moves_the_random_part(isolated_env, tmp_path) -> None:
    config = small_synthetic(isolated_env, tmp_path)
    run = run_graph(config, selection=[*TABLES, "training_set"])
    cfg = load_dataset_config(config)
    customers, _ = usable(run.result.output_for_node("raw_customers"))
    tx, _ = usable(run.result.output_for_node("raw_transactions"))
    features = run.result.output_for_node("customer_features")

    own, _ = build_training_set(cfg, features, customers, tx, split_seed=cfg.seed)
    assert own.equals(run.result.output_for_node("training_set"))  # default seed = the asset
    other, protocol = build_training_set(cfg, features, customers, tx, split_seed=cfg.seed + 1)
    assert protocol["protocol"] == "temporal"

    def rows(frame: pl.DataFrame, split: str) -> pl.DataFrame:
        return frame.filter(pl.col("split") == split).drop("split").sort("customer_id")

    assert rows(own, "train").equals(rows(other, "train"))  # the earlier cut-off, whole
    assert not rows(own, "holdout").equals(rows(other, "holdout"))
    # the later cut-off's customers are split anew (by a salted hash of customer_id), but
    # together validation and holdout are the same rows, about half each
    later = {"validation", "holdout"}
    assert (own.filter(pl.col("split").is_in(later)).drop("split").sort("customer_id")).equals(
        other.filter(pl.col("split").is_in(later)).drop("split").sort("customer_id")
    )
    for frame in (own, other):
        share = rows(frame, "holdout").height / frame.filter(pl.col("split").is_in(later)).height
        assert 0.4 < share < 0.6, share
    # the fractions' ratio splits the later cut-off (they were ignored under this protocol)
    skewed = cfg.model_copy(
        update={"models": cfg.models.model_copy(update={"validation_fraction": 0.1})}
    )
    third, protocol = build_training_set(skewed, features, customers, tx, split_seed=cfg.seed)
    share = rows(third, "holdout").height / third.filter(pl.col("split").is_in(later)).height
    assert 0.6 < share < 0.74 and "split 33%/67%" in protocol["description"], share

    once = repeated_holdout(cfg, features, customers, tx, seeds=[1], kinds=["classification"])
    again = repeated_holdout(cfg, features, customers, tx, seeds=[1], kinds=["classification"])
    assert once == again  # deterministic


def test_evaluate_without_materialized_tables_says_what_to_run() -> None:
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "synthetic", "--seeds", "2"])
    assert result.exit_code == 1
    assert "customer_features of data set 'synthetic' is not materialized" in result.output
    assert "churn demo --dataset synthetic" in result.output
    bad = CliRunner().invoke(main, ["evaluate", "--seeds", "0"])
    assert bad.exit_code == 2 and "--seeds" in bad.output


@pytest.mark.parametrize(
    ("shortfall", "text"),
    [
        (-0.0417, "champion ahead by 0.0417"),
        (0.004, "shortfall 0.0040 (within 0.01)"),
        (0.02, "shortfall 0.0200 (beyond 0.01)"),
    ],
)
def test_the_report_says_ahead_rather_than_a_negative_shortfall(shortfall, text) -> None:
    from churn_assets.lib.repeated_holdout import format_report

    block = {
        "primary_metric": "roc_auc",
        "champion": {"roc_auc": {"mean": 0.8, "sd": 0.01, "min": 0.79, "max": 0.81}},
        "candidates": {},
        "champions": ["lightgbm"],
        "criteria": {
            "champion_mean": 0.8,
            "best_single_candidate": "lightgbm",
            "best_single_mean": 0.8 + shortfall,
            "shortfall": shortfall,
            "within_tolerance": shortfall <= 0.01,
        },
    }
    report = {
        "dataset": "x",
        "protocol": "hashed",
        "protocol_description": "split by a hash",
        "seeds": [0],
        "classification": block,
    }
    assert f"best single candidate lightgbm {0.8 + shortfall:.4f}: {text}" in format_report(report)
