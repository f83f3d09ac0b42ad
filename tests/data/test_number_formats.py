"""Numbers written the European way (decimal comma, thousands separators) in CSV files: read
exactly with `decimal` / `thousands` in the config, and without them a failed parse check
that says which setting is missing."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from churn_assets.lib.datasets import DatasetConfigError, load_dataset_config
from churn_assets.lib.ingest import ingest_customers, ingest_transactions
from churn_assets.raw.checks import parse_check

CONFIG = """
name: euro
customers:
  path: customers/
  separator: ";"
  encoding: latin-1
{marks}
  id_column: Kundennummer
  attributes:
    - {{name: city, source: Ort, type: categorical}}
    - {{name: balance, source: Saldo, type: numeric}}
    - {{name: products, source: Produkte, type: integer}}
transactions:
  path: orders/
  separator: ";"
{marks}
  customer_id: Kunde
  timestamp: Zeit
  timestamp_format: "%d.%m.%Y %H:%M"
  quantity: Menge
  unit_price: Preis
labels:
  source: transactions
  horizon_days: 30
"""

CUSTOMERS = (
    "Kundennummer;Ort;Saldo;Produkte\n"
    "K1;Köln;1.234,56;1\n"
    "K2;Zürich;-3,5;2\n"
    "K3;Genève;1.234.567,25;1.200\n"
    "K4;Graz;;3\n"
    "K5;Lyon;42;4\n"
)

ORDERS = (
    "Kunde;Zeit;Menge;Preis\n"
    "K1;03.01.2024 10:00;2;1.499,90\n"
    "K2;04.01.2024 11:30;1,5;0,99\n"
    "K3;05.01.2024 09:15;-1;12,00\n"
)


def _config(tmp_path: Path, marks: str) -> tuple[object, str]:
    landing = tmp_path / "landing"
    (landing / "customers").mkdir(parents=True)
    (landing / "orders").mkdir(parents=True)
    (landing / "customers" / "a.csv").write_bytes(CUSTOMERS.encode("latin-1"))
    (landing / "orders" / "a.csv").write_text(ORDERS)
    path = tmp_path / "euro.yaml"
    path.write_text(CONFIG.format(marks=marks))
    return load_dataset_config(str(path)), str(landing)


def _utf8(cfg):
    """``cfg`` with its customer files read as UTF-8."""
    return cfg.model_copy(
        update={"customers": cfg.customers.model_copy(update={"encoding": "utf-8"})}
    )


def test_decimal_comma_and_thousands_are_read_exactly(tmp_path):
    cfg, landing = _config(tmp_path, '  decimal: ","\n  thousands: "."')
    res = ingest_customers(cfg, landing)
    assert res.parse_errors == {} and res.parse_hints == {}
    frame = res.frame.sort("customer_id")
    assert frame["city"].to_list() == ["Köln", "Zürich", "Genève", "Graz", "Lyon"]
    balance = frame["balance"].to_list()
    assert balance[:3] == [1234.56, -3.5, 1234567.25] and balance[4] == 42.0
    assert balance[3] is None  # blank stays missing
    assert frame["products"].to_list() == [1, 2, 1200, 3, 4]

    tx = ingest_transactions(cfg, landing)
    assert tx.parse_errors == {}
    amounts = dict(zip(tx.frame["customer_id"], tx.frame["amount"], strict=True))
    assert math.isclose(amounts["K1"], 2 * 1499.90)
    assert math.isclose(amounts["K2"], 1.5 * 0.99)
    assert math.isclose(amounts["K3"], -12.0)


def test_space_thousands_separator_includes_no_break_spaces(tmp_path):
    cfg, landing = _config(tmp_path, '  decimal: ","\n  thousands: " "')
    rows = (
        "Kundennummer;Ort;Saldo;Produkte\n"
        "K1;A;1 234,5;1\nK2;B;1\u00a0234,5;1\nK3;C;1\u202f234,5;1\n"
    )
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("utf-8"))
    cfg = _utf8(cfg)
    res = ingest_customers(cfg, landing)
    assert res.parse_errors == {}
    assert res.frame["balance"].to_list() == [1234.5, 1234.5, 1234.5]


def test_without_the_setting_the_parse_check_names_it(tmp_path):
    cfg, landing = _config(tmp_path, "")
    res = ingest_customers(cfg, landing)
    # K1, K2 and K3 carry a decimal comma; "1.200" is a valid number (1.2) but not an integer
    assert res.parse_errors == {"balance": 3, "products": 1}
    assert 'decimal: ","' in res.parse_hints["balance"]
    assert res.parse_hints["products"] == "e.g. '1.200', read as integer"  # what failed
    check = parse_check("raw_customers", res, None)
    assert not check.passed
    assert "column 'balance': 3 value(s) not parseable (3 look like numbers" in (
        check.description or ""
    )
    assert "column 'products': 1 value(s) not parseable" in (check.description or "")
    assert check.metadata["hints"].data == res.parse_hints
    # the good rows keep their values; the bad ones are null and flagged
    frame = res.frame.sort("customer_id")
    assert frame["balance"].to_list()[4] == 42.0
    assert frame.filter(pl.col("_parse_errors").is_not_null())["customer_id"].to_list() == [
        "K1",
        "K2",
        "K3",
    ]


def test_garbage_gets_no_decimal_hint(tmp_path):
    cfg, landing = _config(tmp_path, "")
    rows = "Kundennummer;Ort;Saldo;Produkte\nK1;A;zwölf;1\nK2;B;12;1\n"
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("latin-1"))
    res = ingest_customers(cfg, landing)
    assert res.parse_errors == {"balance": 1}
    assert res.parse_hints == {"balance": "e.g. 'zwölf', read as numeric"}  # no decimal hint


def test_same_mark_for_decimal_and_thousands_is_refused(tmp_path):
    with pytest.raises(DatasetConfigError, match="'thousands' and 'decimal' must differ"):
        _config(tmp_path, '  decimal: ","\n  thousands: ","')


def test_no_break_space_thousands_get_the_hint_too(tmp_path):
    cfg, landing = _config(tmp_path, "")
    rows = "Kundennummer;Ort;Saldo;Produkte\nK1;A;1\u00a0234,5;1\nK2;B;1\u202f000,25;1\n"
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("utf-8"))
    cfg = _utf8(cfg)
    res = ingest_customers(cfg, landing)
    assert res.parse_errors == {"balance": 2}
    assert res.parse_hints["balance"].startswith("2 look like numbers with a decimal comma")


def test_a_decimal_comma_with_a_currency_sign_gets_the_hint(tmp_path):
    """'269,47 €' without `decimal: ","`: the hint names the decimal comma (the sign does
    not hide it)."""
    cfg, landing = _config(tmp_path, "")
    rows = "Kundennummer;Ort;Saldo;Produkte\nK1;A;269,47 €;1\nK2;B;€ 1.234,50;1\n"
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("utf-8"))
    cfg = _utf8(cfg)
    res = ingest_customers(cfg, landing)
    assert res.parse_errors == {"balance": 2}
    assert res.parse_hints["balance"].startswith("2 look like numbers with a decimal comma")


def _ingest_csv(tmp_path: Path, rows: str, attributes: dict[str, str]):
    """``rows`` (a CSV with an ``id`` column) ingested as a customer table of
    ``attributes`` (name → type) without any number setting."""
    (tmp_path / "c.csv").write_text(rows)
    listed = "".join(f"    - {{name: {n}, type: {t}}}\n" for n, t in attributes.items())
    (tmp_path / "c.yaml").write_text(
        "name: c\ncustomers:\n  path: c.csv\n  id_column: id\n  attributes:\n"
        + listed
        + "labels:\n  source: columns\n  churned_column: id\n"
    )
    return ingest_customers(load_dataset_config(str(tmp_path / "c.yaml")), str(tmp_path))


def test_currency_signs_and_grouped_digits_are_read_without_a_setting(tmp_path):
    """Exports that format money ("$1,234.50", "29.85 €", "EUR 7.5") read as numbers; text
    that is no number still fails, and a decimal comma still gets its hint."""
    res = _ingest_csv(
        tmp_path,
        'id,fee,balance\nA,$29.85,"$1,234.50"\nB,29.85 €,"1,234,567"\nC,EUR 7.5,-12\nD,tbd,0\n',
        {"fee": "numeric", "balance": "integer"},
    )
    frame = res.frame.sort("customer_id")
    assert frame["fee"].to_list() == [29.85, 29.85, 7.5, None]
    assert frame["balance"].to_list() == [None, 1234567, -12, 0]  # 1234.5 is no integer
    assert res.parse_errors == {"fee": 1, "balance": 1}


def test_a_decimal_comma_without_a_thousands_setting_reads_no_dot_number(tmp_path):
    """With `decimal: ","` alone, "1.234" is no number (it was read as 1.234, a thousandth of
    what the export meant); with `thousands: "."` it is 1234."""
    rows = "Kundennummer;Ort;Saldo;Produkte\nK1;A;1.234;1\nK2;B;12,5;1\n"
    cfg, landing = _config(tmp_path, '  decimal: ","')
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("latin-1"))
    res = ingest_customers(cfg, landing)
    assert res.parse_errors == {"balance": 1}
    assert res.frame.sort("customer_id")["balance"].to_list() == [None, 12.5]
    cfg, landing = _config(tmp_path / "b", '  decimal: ","\n  thousands: "."')
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("latin-1"))
    assert ingest_customers(cfg, landing).frame.sort("customer_id")["balance"].to_list() == [
        1234.0,
        12.5,
    ]


def test_a_thousands_comma_gets_its_own_hint(tmp_path):
    """'2,502' without a setting may be 2502 (an English export's thousands comma) or 2.502:
    the hint names the thousands setting first, where 'decimal' would read every value from
    1,000 up a thousandfold too small."""
    cfg, landing = _config(tmp_path, "")
    rows = "Kundennummer;Ort;Saldo;Produkte\nK1;A;2,502;1\nK2;B;13,700;1\nK3;C;640;1\n"
    (Path(landing) / "customers" / "a.csv").write_bytes(rows.encode("utf-8"))
    res = ingest_customers(_utf8(cfg), landing)
    assert res.parse_errors == {"balance": 2}
    assert res.parse_hints["balance"].startswith(
        "2 look like numbers with a thousands comma (e.g. '2,502'): set `thousands: \",\"`"
    )


def test_percentages_read_as_numbers_in_percent(tmp_path):
    """'45.3%' is the number 45.3 (as written, in percent): it was dropped by the draft as
    free text and could not be configured (every value failed values_parse), losing the
    strongest feature of a table. The draft now types it numeric."""
    from churn_assets.lib.config_draft import draft_config

    rows = "id,utilization,churn\n" + "".join(
        f"C{i},{v},{i % 2}\n" for i, v in enumerate(["45.3%", "7%", " 100 % ", "-", "12.5"] * 4)
    )
    (tmp_path / "p.csv").write_text(rows)
    text = draft_config(str(tmp_path / "p.csv"), label="churn")
    assert "{name: utilization, type: numeric}" in text
    (tmp_path / "p.yaml").write_text(text)
    res = ingest_customers(load_dataset_config(str(tmp_path / "p.yaml")), str(tmp_path))
    assert res.parse_errors == {}
    got = dict(res.frame.select("customer_id", "utilization").iter_rows())
    assert [got[f"C{i}"] for i in range(5)] == [45.3, 7.0, 100.0, None, 12.5]


def test_an_accountants_negative_in_parentheses_is_read(tmp_path):
    """'($47.81)' is -47.81, as accounts write a negative amount (every such line failed
    values_parse and went to quarantine); '(x)' is still no number."""
    res = _ingest_csv(
        tmp_path,
        'id,balance\nA,($47.81)\nB,"(1,234.50)"\nC,(12)\nD,(x)\nE,3.5\n',
        {"balance": "numeric"},
    )
    assert res.frame.sort("customer_id")["balance"].to_list() == [-47.81, -1234.5, -12.0, None, 3.5]
    assert res.parse_errors == {"balance": 1}


def test_a_minus_sign_before_the_currency_sign_is_kept(tmp_path):
    """'-$37.35' (refunds in a US export) is -37.35: the sign before the currency sign was
    read as no number, so every refund line failed values_parse."""
    res = _ingest_csv(
        tmp_path,
        'id,balance\nA,-$37.35\nB,"- € 12"\nC,+$5\nD,"-$1,234.50"\nE,-EUR 7.5\nF,-$x\n',
        {"balance": "numeric"},
    )
    got = res.frame.sort("customer_id")["balance"].to_list()
    assert got == [-37.35, -12.0, 5.0, -1234.5, -7.5, None]
    assert res.parse_errors == {"balance": 1}
