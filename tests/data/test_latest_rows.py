"""A customer table with rows per customer over time (customer-months, repeated snapshots):
`customers.latest_by` keeps each customer's latest row; without it the repeated ids fail
with a message that says so."""

from __future__ import annotations

from pathlib import Path

from churn_assets.lib.config_draft import draft_config
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import ingest_customers
from churn_assets.lib.quality import validate
from churn_assets.lib.rules import customer_rules

MONTHS = (
    "customer,month,plan,calls,churn\n"
    "A,2024-01,basic,3,No\n"
    "A,2024-02,pro,5,No\n"
    "A,2024-03,pro,1,Yes\n"
    "B,2024-02,basic,2,No\n"
    "B,2024-03,basic,4,No\n"
    "C,2024-03,pro,0,No\n"
    ",2024-03,pro,0,No\n"
)

CONFIG = """
name: months
customers:
  path: months.csv
  id_column: customer
{latest}
  attributes:
    - {{name: plan, type: categorical}}
    - {{name: calls, type: integer}}
labels:
  source: columns
  churned_column: churn
"""


def _ingest(tmp_path: Path, latest: str):
    (tmp_path / "months.csv").write_text(MONTHS)
    (tmp_path / "m.yaml").write_text(CONFIG.format(latest=latest))
    cfg = load_dataset_config(str(tmp_path / "m.yaml"))
    return cfg, ingest_customers(cfg, str(tmp_path))


def test_each_customers_latest_row_is_kept(tmp_path):
    latest = '  latest_by: {name: month, type: date, format: "%Y-%m"}'
    cfg, res = _ingest(tmp_path, latest.replace('format: "%Y-%m"', 'format: "%Y-%m-%d"'))
    assert res.parse_errors == {"latest_by": 7}  # a wrong format is reported, not guessed
    cfg, res = _ingest(tmp_path, latest)
    assert res.parse_errors == {} and res.earlier_rows == 3
    rows = res.frame.sort("customer_id", nulls_last=True).select(
        "customer_id", "plan", "calls", "churned"
    )
    assert rows.rows() == [
        ("A", "pro", 1, 1),
        ("B", "basic", 4, 0),
        ("C", "pro", 0, 0),
        (None, "pro", 0, 0),
    ]
    report = validate(res.frame.drop("_source_file", "_parse_errors"), customer_rules(cfg), "c")
    # the row without an id is still reported; the repeated ids are gone
    assert [f.message.split(":")[0] for f in report.failures()] == ["column 'customer_id'"]
    assert "null" in report.failures()[0].message


def test_without_latest_by_the_repeats_fail_naming_what_to_do(tmp_path):
    cfg, res = _ingest(tmp_path, "")
    report = validate(res.frame.drop("_source_file", "_parse_errors"), customer_rules(cfg), "c")
    unique = [f.message for f in report.failures() if "duplicated values" in f.message]
    assert unique and "needs the latest row of each customer only" in unique[0]


def test_draft_config_finds_the_column_that_orders_a_customers_rows(tmp_path):
    (tmp_path / "months.csv").write_text(MONTHS.removesuffix(",2024-03,pro,0,No\n"))
    text = draft_config(str(tmp_path / "months.csv"), label="churn")
    assert "  latest_by: {name: month, type: categorical}   # CHECK:" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_customers(load_dataset_config(str(out)), str(tmp_path))
    assert res.earlier_rows == 3 and res.frame.height == 3


def test_raw_customers_says_how_many_earlier_rows_it_left_out(isolated_env, tmp_path):
    from tests.helpers import run_graph

    (tmp_path / "months.csv").write_text(MONTHS.removesuffix(",2024-03,pro,0,No\n"))
    config = tmp_path / "m.yaml"
    config.write_text(
        CONFIG.format(latest='  latest_by: {name: month, type: date, format: "%Y-%m"}').replace(
            "path: months.csv", f"path: {tmp_path / 'months.csv'}"
        )
    )
    run = run_graph(str(config), ["raw_customers"])
    assert run.result.success and run.check("raw_customers", "expectations_met").passed
    [event] = run.result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["earlier_rows_left_out"].value == 3 and meta["dagster/row_count"].value == 3
