"""A source system adds a column: the config gains the attribute, and the exports landed
before it lack the column. Those files are read with the attribute missing (and say so),
not quarantined whole; a column no file has is misnamed, and a file without its id or label
is still unreadable."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import ingest_customers
from churn_assets.raw.checks import files_check

OLD = "account,plan,calls,churn\nA1,basic,3,No\nA2,pro,5,Yes\nA3,pro,1,No\n"
NEW = "account,plan,calls,promo,churn\nA1,basic,4,vip,No\nA4,basic,2,none,Yes\n"

CONFIG = """
name: accounts
customers:
  path: exports
  id_column: account
  latest_by: file
  attributes:
    - {{name: plan, type: categorical}}
    - {{name: calls, type: integer}}
    - {{name: promo, source: {promo}, type: categorical}}
labels:
  source: columns
  churned_column: churn
"""


def _land(tmp_path: Path, old: str = OLD, new: str = NEW, promo: str = "promo"):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "accounts_2025-03-01.csv").write_text(old)
    (exports / "accounts_2025-03-02.csv").write_text(new)
    path = tmp_path / "accounts.yaml"
    path.write_text(CONFIG.format(promo=promo))
    return load_dataset_config(str(path))


def test_an_export_from_before_a_column_was_added_is_read_with_it_missing(tmp_path):
    res = ingest_customers(_land(tmp_path), str(tmp_path))
    assert res.file_problems == [] and res.parse_errors == {}
    assert res.absent_columns == {"accounts_2025-03-01.csv": ["promo"]}
    frame = res.frame.sort("customer_id")
    # A1 from the newer export, A2 and A3 (only in the older one) without a promo
    assert frame["customer_id"].to_list() == ["A1", "A2", "A3", "A4"]
    assert frame["promo"].to_list() == ["vip", None, None, "none"]
    assert frame["calls"].to_list() == [4, 5, 1, 2]
    check = files_check("raw_customers", res, None)
    assert check.passed
    assert "'promo' absent from accounts_2025-03-01.csv" in (check.description or "")


def test_a_column_no_file_has_is_a_misnamed_column_not_a_missing_value(tmp_path):
    res = ingest_customers(_land(tmp_path, promo="Promo"), str(tmp_path))
    assert res.absent_columns == {}
    assert {(p.file, p.problem, p.column) for p in res.file_problems} == {
        ("accounts_2025-03-01.csv", "missing column", "Promo"),
        ("accounts_2025-03-02.csv", "missing column", "Promo"),
    }
    assert not files_check("raw_customers", res, None).passed


def test_a_file_without_the_label_column_is_still_unreadable(tmp_path):
    old = OLD.replace(",churn\n", "\n").replace(",No\n", "\n").replace(",Yes\n", "\n")
    res = ingest_customers(_land(tmp_path, old=old), str(tmp_path))
    assert [(p.file, p.column) for p in res.file_problems] == [("accounts_2025-03-01.csv", "churn")]
    assert set(res.frame["customer_id"]) == {"A1", "A4"}
    assert res.frame.schema["promo"] == pl.String


def test_an_export_that_drops_a_column_is_unreadable_the_earlier_ones_still_read(tmp_path):
    """A column that appeared and then is gone again is not an earlier export's gap: the
    later file lacking it is a problem (the export changed), the first one still reads."""
    cfg = _land(tmp_path)
    later = "account,plan,calls,churn\nA1,pro,6,Yes\n"
    (tmp_path / "exports" / "accounts_2025-03-03.csv").write_text(later)
    res = ingest_customers(cfg, str(tmp_path))
    assert [(p.file, p.column) for p in res.file_problems] == [("accounts_2025-03-03.csv", "promo")]
    assert res.absent_columns == {"accounts_2025-03-01.csv": ["promo"]}
    assert sorted(res.frame["customer_id"]) == ["A1", "A2", "A3", "A4"]


def test_without_dated_exports_a_file_lacking_a_column_is_unreadable(tmp_path):
    """Without ``latest_by: file`` name order says nothing of time: as before, a file that
    lacks a configured attribute is quarantined whole."""
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "a.csv").write_text(OLD.replace("A", "B"))
    (exports / "b.csv").write_text(NEW)
    path = tmp_path / "accounts.yaml"
    path.write_text(CONFIG.format(promo="promo").replace("  latest_by: file\n", ""))
    res = ingest_customers(load_dataset_config(str(path)), str(tmp_path))
    assert [(p.file, p.column) for p in res.file_problems] == [("a.csv", "promo")]
    assert res.absent_columns == {}
