"""A snapshot's churn label column as exports write it: numbers as floats ("1.0"), words in any
case; a label that names no value of `churned_positive` is reported with its values instead
of silently becoming "nobody churned"."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.feature_sets import build_training_set
from churn_assets.lib.ingest import ingest_customers
from churn_assets.raw.checks import parse_check

CONFIG = """
name: bank
customers:
  path: customers.csv
  id_column: CustomerId
  attributes:
    - {{name: age, source: Age, type: integer}}
labels:
  source: columns
  churned_column: Exited
{positive}
"""


def _ingest(tmp_path: Path, labels: list[str], positive: str = ""):
    rows = "".join(f"{i},{30 + i % 40},{v}\n" for i, v in enumerate(labels))
    (tmp_path / "customers.csv").write_text("CustomerId,Age,Exited\n" + rows)
    (tmp_path / "bank.yaml").write_text(CONFIG.format(positive=positive))
    cfg = load_dataset_config(str(tmp_path / "bank.yaml"))
    return cfg, ingest_customers(cfg, str(tmp_path))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1.0", "0.0", "1", "0", "", "1.00"], [1, 0, 1, 0, None, 1]),
        (["YES", "no", " Yes ", "No", "TRUE", "false"], [1, 0, 1, 0, 1, 0]),
    ],
)
def test_float_and_any_case_labels_match_the_default_positives(tmp_path, values, expected):
    _, res = _ingest(tmp_path, values)
    assert res.frame.sort("customer_id")["churned"].to_list() == expected
    assert res.label_problem is None
    assert parse_check("raw_customers", res, None).passed


def test_words_the_config_does_not_name_are_reported_with_their_counts(tmp_path):
    values = ["Stayed"] * 7 + ["Churned"] * 3
    _, res = _ingest(tmp_path, values)
    assert res.frame["churned"].to_list() == [0] * 10
    assert res.label_problem is not None
    assert res.label_problem.startswith("none of the churn label's values is in")
    assert "column 'Exited': 'Stayed' (7), 'Churned' (3)" in res.label_problem
    check = parse_check("raw_customers", res, None)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN  # a table of current customers still scores
    assert check.description == f"churn label unusable: {res.label_problem}"

    _, res = _ingest(tmp_path, values, '  churned_positive: ["churned"]')
    assert res.frame.sort("customer_id")["churned"].to_list() == [0] * 7 + [1] * 3
    assert res.label_problem is None


def test_a_label_with_every_value_positive_is_reported(tmp_path):
    _, res = _ingest(tmp_path, ["Yes", "yes", "1"])
    assert res.label_problem is not None and res.label_problem.startswith("every one of")


def test_training_set_names_the_setting_when_one_class_is_left(tmp_path):
    cfg, res = _ingest(tmp_path, ["Stayed"] * 30 + ["Churned"] * 20)
    features = res.frame.select("customer_id", "age", "churned").with_columns(
        pl.col("churned").cast(pl.Int8)
    )
    with pytest.raises(ValueError, match=r"class counts \{0: 50\} \(labels.churned_positive"):
        build_training_set(cfg, features, None, None)


def test_blank_labels_fail_the_suite_with_the_setting_that_allows_them(tmp_path):
    from churn_assets.lib.quality import validate
    from churn_assets.lib.rules import customer_rules

    cfg, res = _ingest(tmp_path, ["1", "0", "", "0", ""])
    report = validate(res.frame.drop("_source_file", "_parse_errors"), customer_rules(cfg), "c")
    [failure] = report.failures()
    assert failure.message == (
        "column 'churned': 2 of 5 rows (40.00%) are null (customers whose outcome is not known "
        "yet? labels.allow_unlabelled: true scores them without training on them)"
    )


def test_unlabelled_customers_are_scored_but_not_trained_on(tmp_path):
    from churn_assets.lib.feature_sets import features_at, population
    from churn_assets.lib.quality import validate
    from churn_assets.lib.rules import customer_rules

    cfg, res = _ingest(tmp_path, ["1", "0", "", "0", ""], "  allow_unlabelled: true")
    customers = res.frame.drop("_source_file", "_parse_errors")
    assert validate(customers, customer_rules(cfg), "c").success
    labelled = features_at(cfg, customers, None, None)
    assert labelled["customer_id"].to_list() == ["0", "1", "3"]
    assert labelled["churned"].to_list() == [1, 0, 0]
    scored = features_at(cfg, customers, None, None, with_labels=False)
    assert scored["customer_id"].to_list() == ["0", "1", "2", "3", "4"]
    assert population(cfg, labelled).startswith("the snapshot's customers with a churn label")


def test_allow_unlabelled_needs_label_columns(tmp_path):
    from churn_assets.lib.datasets import DatasetConfigError

    (tmp_path / "t.yaml").write_text(
        "name: t\ntransactions: {path: t/, customer_id: id, timestamp: ts, amount: a}\n"
        "labels: {source: transactions, allow_unlabelled: true}\n"
    )
    with pytest.raises(DatasetConfigError, match="allow_unlabelled needs labels.source"):
        load_dataset_config(str(tmp_path / "t.yaml"))
