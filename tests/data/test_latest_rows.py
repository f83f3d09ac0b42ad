"""A customer table with rows per customer over time (customer-months, repeated snapshots):
`customers.latest_by` keeps each customer's latest row; without it the repeated ids fail
with a message that says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from churn_assets.lib.config_draft import DraftError, draft_config
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


SNAPSHOT_HEAD = "customer,plan,calls,churn\n"
FIRST_EXPORT = "A,basic,3,No\nB,basic,2,No\nC,pro,0,No\n"
SECOND_EXPORT = "A,pro,5,No\nB,basic,4,Yes\nD,pro,1,No\n"  # C has left the export


def _exports(tmp_path: Path, *names_and_rows: tuple[str, str]) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    for name, rows in names_and_rows:
        (folder / name).write_text(SNAPSHOT_HEAD + rows)
    return folder


def _file_config(tmp_path: Path, folder: Path, latest: str = "  latest_by: file"):
    (tmp_path / "s.yaml").write_text(
        CONFIG.format(latest=latest).replace("path: months.csv", f"path: {folder}")
    )
    return load_dataset_config(str(tmp_path / "s.yaml"))


def test_a_folder_of_dated_exports_keeps_each_customers_rows_from_its_last_export(tmp_path):
    """Full snapshot exports with the date in the file name only: ``latest_by: file`` keeps
    each customer's row of the last file holding it, a customer gone from the later export
    included; without it the repeated ids fail as before."""
    folder = _exports(
        tmp_path,
        ("customers-2026-12-02.csv", SECOND_EXPORT),
        ("customers-2026-12-01.csv", FIRST_EXPORT),
    )
    cfg = _file_config(tmp_path, folder)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.earlier_rows == 2
    rows = res.frame.sort("customer_id").select(
        "customer_id", "plan", "calls", "churned", "_source_file"
    )
    assert rows.rows() == [
        ("A", "pro", 5, 0, "customers-2026-12-02.csv"),
        ("B", "basic", 4, 1, "customers-2026-12-02.csv"),
        ("C", "pro", 0, 0, "customers-2026-12-01.csv"),
        ("D", "pro", 1, 0, "customers-2026-12-02.csv"),
    ]
    report = validate(res.frame.drop("_source_file", "_parse_errors"), customer_rules(cfg), "c")
    assert report.failures() == []
    plain = _file_config(tmp_path, folder, latest="")
    res = ingest_customers(plain, str(tmp_path))
    report = validate(res.frame.drop("_source_file", "_parse_errors"), customer_rules(plain), "c")
    assert any("duplicated values" in f.message for f in report.failures())


def test_an_id_repeated_within_the_last_export_still_fails(tmp_path):
    """``latest_by: file`` orders files, not rows: two rows of one customer in the same
    export are an export fault, reported by ``expectations_met`` and never picked from."""
    folder = _exports(
        tmp_path,
        ("2026-12-01.csv", FIRST_EXPORT),
        ("2026-12-02.csv", SECOND_EXPORT + "A,basic,9,Yes\n"),
    )
    cfg = _file_config(tmp_path, folder)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.earlier_rows == 2 and res.frame.filter(res.frame["customer_id"] == "A").height == 2
    report = validate(res.frame.drop("_source_file", "_parse_errors"), customer_rules(cfg), "c")
    [unique] = [f.message for f in report.failures() if "duplicated values" in f.message]
    assert unique.startswith("column 'customer_id': 2 of 5 rows")


def test_draft_config_of_dated_exports_drafts_latest_by_file(tmp_path):
    """A folder of exports dated by their names only: the draft takes them for snapshots of
    the same customers; the same files without dates in their names are refused, the
    refusal naming ``latest_by: file``."""
    folder = _exports(
        tmp_path,
        ("export_20261201.csv", _many(0)),
        ("export_20261202.csv", _many(1)),
    )
    text = draft_config(str(folder), label="churn")
    assert "  latest_by: file   # CHECK: 40 rows repeat a customer over 2 files" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_customers(load_dataset_config(str(out)), str(tmp_path))
    assert res.rows == 45 and res.earlier_rows == 40
    assert set(res.frame["_source_file"]) == {"export_20261202.csv"}
    (folder / "export_20261201.csv").rename(folder / "export_a.csv")
    (folder / "export_20261202.csv").rename(folder / "export_b.csv")
    with pytest.raises(DraftError, match="customers.latest_by: file"):
        draft_config(str(folder), label="churn")


def _many(day: int) -> str:
    """Forty customers, and five more on the second day; the calls change by day."""
    ids = range(40 + 5 * day)
    return "".join(
        f"C{i},{'pro' if i % 3 else 'basic'},{i % 7 + day},{'Yes' if i % 4 == 0 else 'No'}\n"
        for i in ids
    )


def test_raw_customers_of_dated_exports_reports_the_rows_left_out(isolated_env, tmp_path):
    from tests.helpers import run_graph

    folder = _exports(tmp_path, ("2026-12-01.csv", FIRST_EXPORT), ("2026-12-02.csv", SECOND_EXPORT))
    _file_config(tmp_path, folder)
    run = run_graph(str(tmp_path / "s.yaml"), ["raw_customers"])
    assert run.result.success and run.check("raw_customers", "expectations_met").passed
    [event] = run.result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["earlier_rows_left_out"].value == 2 and meta["dagster/row_count"].value == 4
