"""`churn draft-config`: a config drafted from a data file loads, ingests the file without a
parse error, and says what it left out and why; files and options it cannot draft from get an
error naming what to give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from churn_assets.cli import main
from churn_assets.lib.config_draft import DraftError, draft_config
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import ingest_customers, ingest_transactions


def _bank(n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "RowNumber": np.arange(1, n + 1),
            "CustomerId": 15_000_000 + rng.permutation(n * 2)[:n],
            "Surname": [f"Name{i}" for i in rng.permutation(n)],
            "Geography": rng.choice(["France", "Spain", "Germany"], n),
            "Age": rng.integers(18, 90, n),
            "Balance": rng.uniform(0, 200_000, n).round(2),
            "Joined": [f"2020-01-{1 + i % 28:02d}" for i in range(n)],
            "Exited": rng.choice(["0", "1"], n, p=[0.8, 0.2]),
        }
    )


def _load(text: str, tmp_path: Path):
    path = tmp_path / "draft.yaml"
    path.write_text(text)
    return load_dataset_config(str(path)), yaml.safe_load(text)


def test_a_snapshot_draft_types_the_columns_and_ingests_cleanly(tmp_path):
    csv = tmp_path / "Churn_Modelling.csv"
    _bank().write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert cfg.name == "churn_modelling"
    assert raw["customers"]["id_column"] == "CustomerId"
    assert raw["customers"]["signup_date"] == {
        "name": "signup_date",
        "source": "Joined",
        "type": "date",
        "format": "%Y-%m-%d",
    }
    types = {a["name"]: a["type"] for a in raw["customers"]["attributes"]}
    assert types == {"geography": "categorical", "age": "integer", "balance": "numeric"}
    assert '# left out: "RowNumber": a row number' in text
    assert '# left out: "Surname": 400 distinct values in 400 rows' in text
    assert raw["labels"]["churned_positive"] == ["1"]
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.file_problems == [] and res.label_problem is None
    assert res.frame["churned"].sum() == (_bank()["Exited"] == "1").sum()


def test_a_european_export_gets_its_separator_encoding_and_decimal_comma(tmp_path):
    bank = _bank().with_columns(
        pl.col("Balance").map_elements(lambda v: f"{v:,.2f}".replace(",", " ").replace(".", ",")),
        pl.col("Geography").replace({"Germany": "Österreich"}),
        pl.col("Exited").replace({"0": "Nein", "1": "Ja"}),
    )
    csv = tmp_path / "kunden.csv"
    csv.write_bytes(bank.write_csv(separator=";").encode("latin-1"))
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    spec = raw["customers"]
    assert (spec["separator"], spec["decimal"], spec["encoding"]) == (";", ",", "cp1252")
    assert "CHECK: 'Ja' (the rarer of 'Nein' and 'Ja') is taken to mean churned" in text
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    assert spec["thousands"] == " "
    got = res.frame.sort("customer_id")["balance"].to_numpy()
    assert np.allclose(got, _bank().sort("CustomerId")["Balance"].to_numpy())
    assert "Österreich" in res.frame["geography"].to_list()


def test_a_decimal_comma_is_found_behind_a_currency_sign(tmp_path):
    """A German shop's amounts written '269,47 €' and '1.234,50 €': drafted with the decimal
    comma and the '.' thousands separator, and every amount ingests exactly."""
    amounts = [269.47, 1234.5, 12.0, 3.99] * 30
    text_amounts = [
        f"{a:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".") + " €" for a in amounts
    ]
    csv = tmp_path / "kunden.csv"
    bank = _bank(len(amounts)).with_columns(pl.Series("Umsatz", text_amounts))
    csv.write_bytes(bank.write_csv(separator=";").encode("cp1252"))
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert (raw["customers"]["decimal"], raw["customers"]["thousands"]) == (",", ".")
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    got = dict(res.frame.select("customer_id", "umsatz").iter_rows())
    ids = bank["CustomerId"].cast(pl.String).to_list()
    assert [got[i] for i in ids] == amounts


def test_a_thousands_comma_is_no_decimal_comma(tmp_path):
    """An English export's '2,502' points (every comma before three digits, no other mark)
    is drafted as `thousands: ","` with a CHECK, and read whole: drafted as a decimal comma
    it was 2.502, a thousandfold too small for every value from 1,000 up, with every check
    passing. A column holding '2,50' still makes the comma a decimal one."""
    rng = np.random.default_rng(6)
    points = rng.integers(500, 5000, 300)
    bank = _bank(300).with_columns(pl.Series("Points", [f"{p:,}" for p in points]))
    csv = tmp_path / "members.csv"
    bank.write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert raw["customers"]["thousands"] == "," and "decimal" not in raw["customers"]
    assert "CHECK: numbers like '2,502' read as 2502" in text
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    got = dict(res.frame.select("customer_id", "points").iter_rows())
    assert [got[str(i)] for i in bank["CustomerId"].to_list()] == points.tolist()

    cents = bank.with_columns(
        pl.Series("Fee", [f"{p / 100:.2f}".replace(".", ",") for p in points])
    )
    cents.write_csv(csv)
    raw = yaml.safe_load(draft_config(str(csv), label="Exited"))
    assert raw["customers"]["decimal"] == ","


def test_a_transaction_draft_finds_the_columns_and_the_timestamp_format(tmp_path):
    lines = pl.DataFrame(
        {
            "InvoiceNo": ["1001", "1001", "C1002", "1003", "1004"],
            "CustomerID": ["17850.0", "17850.0", "13047.0", None, "13047.0"],
            "InvoiceDate": ["01/12/2010 08:26", "01/12/2010 08:26", "03/12/2010 10:00",
                            "05/12/2010 11:30", "25/12/2010 09:15"],
            "Quantity": [6, 2, -1, 3, 4],
            "UnitPrice": [2.55, 3.39, 2.55, 1.0, 7.5],
            "Country": ["United Kingdom"] * 5,
        }
    )  # fmt: skip
    csv = tmp_path / "retail.csv"
    lines.write_csv(csv)
    text = draft_config(str(csv), timestamp="InvoiceDate")
    cfg, raw = _load(text, tmp_path)
    t = raw["transactions"]
    assert t["timestamp_format"] == "%d/%m/%Y %H:%M"  # 25/12 rules out month first
    assert (t["customer_id"], t["quantity"], t["unit_price"]) == (
        "CustomerID",
        "Quantity",
        "UnitPrice",
    )
    assert (t["invoice_id"], t["cancellation_prefix"], t["country"]) == (
        "InvoiceNo",
        "C",
        "Country",
    )
    assert t["customer_id_required_fraction"] == 0.75
    res = ingest_transactions(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.frame.height == 5


def test_the_command_writes_a_draft_that_loads(tmp_path):
    csv = tmp_path / "bank.csv"
    _bank().write_csv(csv)
    out = tmp_path / "bank.yaml"
    result = CliRunner().invoke(
        main, ["draft-config", str(csv), "--label", "Exited", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert load_dataset_config(str(out)).customers.id_column == "CustomerId"
    # saved under another name, the config takes that name (CHURN_DATASETS_DIR finds a
    # config by its file's name)
    other = tmp_path / "retail_bank.yaml"
    result = CliRunner().invoke(
        main, ["draft-config", str(csv), "--label", "Exited", "--out", str(other)]
    )
    assert result.exit_code == 0, result.output
    assert load_dataset_config(str(other)).name == "retail_bank"


@pytest.mark.parametrize(
    ("kwargs", "frame", "message"),
    [
        ({}, _bank(), "give --label"),
        ({"label": "Exited", "timestamp": "Joined"}, _bank(), "not both"),
        ({"label": "Churn"}, _bank(), "label column 'Churn' is not in the file"),
        (
            {"label": "Geography"},
            _bank(),
            "the label column 'Geography' has 3 values",
        ),
        (  # a churn date (blank while active): the flag to add, not values to list by hand
            {"label": "Ended"},
            _bank().with_columns(
                pl.when(pl.col("Exited") == "1").then(pl.col("Joined")).alias("Ended")
            ),
            "the label column 'Ended' holds dates \\(e.g. '2020-01-",
        ),
        (
            {"label": "Exited", "id_column": "Age"},
            _bank(),
            "the id column 'Age' repeats values",
        ),
    ],
)
def test_what_cannot_be_drafted_says_what_to_give(tmp_path, kwargs, frame, message):
    csv = tmp_path / "t.csv"
    frame.write_csv(csv)
    with pytest.raises(DraftError, match=message):
        draft_config(str(csv), **kwargs)


def test_a_missing_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["draft-config", str(tmp_path / "nope.csv"), "--label", "x"])
    assert result.exit_code == 1 and "nope.csv: no such file" in result.output


@pytest.mark.parametrize(
    ("stamps", "fmt", "note"),
    [
        (["12/1/2010 8:26", "12/25/2010 9:15"], "%m/%d/%Y %H:%M", False),
        (["01/02/2011 10:00", "03/04/2011 11:00"], "%d/%m/%Y %H:%M", True),
        (["2011-02-01T10:00:00Z", "2011-02-01T11:00:00+01:00"], None, False),
    ],
)
def test_timestamp_formats_and_ambiguous_days(tmp_path, stamps, fmt, note):
    csv = tmp_path / "t.csv"
    pl.DataFrame({"customer_id": ["a", "b"], "at": stamps, "amount": [1.0, 2.0]}).write_csv(csv)
    text = draft_config(str(csv), timestamp="at")
    _, raw = _load(text, tmp_path)
    assert raw["transactions"].get("timestamp_format") == fmt
    assert ("CHECK: '%d/%m/%Y %H:%M' and '%m/%d/%Y %H:%M' both read every value" in text) == note


def test_column_names_the_platform_uses_or_that_collide_are_renamed(tmp_path):
    csv = tmp_path / "t.csv"
    _bank().with_columns(pl.col("Geography").alias("split"), pl.col("Age").alias("age")).write_csv(
        csv
    )
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    names = {a["name"]: a.get("source", a["name"]) for a in raw["customers"]["attributes"]}
    assert names["split_attribute"] == "split"
    assert (names["age"], names["age_2"]) == ("Age", "age")
    assert ingest_customers(cfg, str(tmp_path)).parse_errors == {}


def test_blank_labels_are_drafted_as_customers_to_score(tmp_path):
    csv = tmp_path / "t.csv"
    _bank().with_columns(
        pl.when(pl.col("Age") > 80).then(None).otherwise(pl.col("Exited")).alias("Exited")
    ).write_csv(csv)
    blank = int((_bank()["Age"] > 80).sum())
    text = draft_config(str(csv), label="Exited")
    cfg, _ = _load(text, tmp_path)
    assert cfg.labels.allow_unlabelled
    assert f"CHECK: {blank:,} rows have no label" in text
    full = tmp_path / "full.csv"
    _bank().write_csv(full)
    assert "allow_unlabelled" not in draft_config(str(full), label="Exited")


def test_transactions_take_the_customer_column_from_id(tmp_path):
    csv = tmp_path / "t.csv"
    pl.DataFrame(
        {"shopper": ["a", "b"], "at": ["2024-01-01", "2024-01-02"], "amount": [1.0, 2.0]}
    ).write_csv(csv)
    with pytest.raises(DraftError, match="no customer id column found.*give it with --id"):
        draft_config(str(csv), timestamp="at")
    _, raw = _load(draft_config(str(csv), timestamp="at", id_column="shopper"), tmp_path)
    assert raw["transactions"]["customer_id"] == "shopper"


def test_a_tab_separated_file_with_quoted_commas(tmp_path):
    tsv = tmp_path / "t.tsv"
    _bank().with_columns(pl.col("Geography") + ", EU").write_csv(tsv, separator="\t")
    text = draft_config(str(tsv), label="Exited")
    assert 'separator: "\\t"' in text
    cfg, _ = _load(text, tmp_path)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {} and "France, EU" in res.frame["geography"].to_list()


def test_a_column_with_one_value_is_left_out(tmp_path):
    csv = tmp_path / "bank.csv"
    frame = _bank().with_columns(Count=pl.lit(1), Country=pl.lit("France"))
    frame = frame.with_columns(Partly=pl.when(pl.col("Age") > 50).then(pl.lit("x")))
    frame.write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    assert "# left out: \"Count\": '1' in every row read: says nothing" in text
    assert "# left out: \"Country\": 'France' in every row read: says nothing" in text
    # one value and blanks: whether it is there says something
    assert '{name: partly, source: "Partly", type: categorical}' in text


def test_money_columns_are_typed_as_numbers(tmp_path):
    csv = tmp_path / "accounts.csv"
    csv.write_text(
        'id,fee,balance,churn\nA,$29.85,"$1,234.50",Yes\nB,$19.00,"$4,000.00",No\nC,$9.99,$12,No\n'
    )
    text = draft_config(str(csv), label="churn")
    assert "{name: fee, type: numeric}" in text and "{name: balance, type: numeric}" in text
    cfg, _ = _load(text, tmp_path)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    assert res.frame.sort("customer_id")["balance"].to_list() == [1234.5, 4000.0, 12.0]


@pytest.mark.parametrize(
    ("values", "positive"),
    [
        (["Stayed", "Churned", "Joined"], "Churned"),  # a telecom export's customer status
        (["Existing Customer", "Attrited Customer"], "Attrited Customer"),  # card customers
    ],
)
def test_a_label_value_named_like_churn_is_the_positive_one(tmp_path, values, positive):
    csv = tmp_path / "status.csv"
    n = 300
    pl.DataFrame(
        {
            "id": [f"C{i}" for i in range(n)],
            "age": [20 + i % 50 for i in range(n)],
            "status": [values[i % len(values)] if i % 7 else values[0] for i in range(n)],
        }
    ).write_csv(csv)
    text = draft_config(str(csv), label="status")
    assert f'churned_positive: ["{positive}"]   # CHECK: {positive!r} is taken to mean' in text
    cfg, _ = _load(text, tmp_path)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.label_problem is None and res.frame["churned"].sum() > 0


def test_a_label_written_as_1_and_1_0_is_one_value(tmp_path):
    """Two files (or one export) writing the label as 1/0 and 1.0/0.0: the draft does not
    list '1.0' among the retained values, as ingestion reads it as 1."""
    csv = tmp_path / "churn.csv"
    n = 300
    pl.DataFrame(
        {
            "id": [f"C{i}" for i in range(n)],
            "age": [20 + i % 50 for i in range(n)],
            "churn": [("1" if i % 3 == 0 else "0") + (".0" if i % 2 else "") for i in range(n)],
        }
    ).write_csv(csv)
    text = draft_config(str(csv), label="churn")
    assert 'churned_positive: ["1"]' in text and "churned_negative" not in text
    cfg, _ = _load(text, tmp_path)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.label_problem is None and res.frame["churned"].sum() == 100


def test_categories_spelled_two_ways_are_pointed_out(tmp_path):
    """'Credit Card' and 'credit card' (or 'Credit-Card') are two categories to the models:
    the draft marks the column, naming the spellings; a clean column gets no note."""
    csv = tmp_path / "shop.csv"
    n = 300
    pay = ["Credit Card", "credit card", "Debit", "Credit-Card", "Cash"]
    pl.DataFrame(
        {
            "id": [f"C{i}" for i in range(n)],
            "payment": [pay[i % 5] for i in range(n)],
            "plan": ["basic" if i % 2 else "pro" for i in range(n)],
            "churn": ["Yes" if i % 3 == 0 else "No" for i in range(n)],
        }
    ).write_csv(csv)
    text = draft_config(str(csv), label="churn")
    line = next(x for x in text.splitlines() if "name: payment" in x)
    assert "# CHECK: 1 value(s) spelled more than one way" in line
    assert "'Credit Card' / 'Credit-Card' / 'credit card'" in line
    assert "#" not in next(x for x in text.splitlines() if "name: plan" in x)
    _load(text, tmp_path)


def test_a_table_of_ids_and_labels_only_drafts_without_attributes(tmp_path):
    csv = tmp_path / "labels.csv"
    pl.DataFrame({"id": [f"C{i}" for i in range(50)], "churn": ["Yes", "No"] * 25}).write_csv(csv)
    text = draft_config(str(csv), label="churn")
    assert "  attributes:\n    []" in text
    _load(text, tmp_path)


@pytest.mark.parametrize(("days", "horizon", "check"), [(400, 90, False), (61, 30, True)])
def test_a_short_history_gets_a_horizon_that_leaves_history_before_the_cutoff(
    tmp_path, days, horizon, check
):
    rng = np.random.default_rng(1)
    start = np.datetime64("2024-01-01T00:00:00")
    stamps = start + np.sort(rng.integers(0, days * 86_400, 3_000)).astype("timedelta64[s]")
    stamps[-1] = start + np.timedelta64(days * 86_400 - 1, "s")  # the span is exactly `days`
    csv = tmp_path / "orders.csv"
    pl.DataFrame(
        {
            "customer_id": rng.integers(1, 300, 3_000),
            "ordered_at": pl.Series(stamps.astype("datetime64[us]")).dt.strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "amount": rng.gamma(2.0, 30.0, 3_000).round(2),
        }
    ).write_csv(csv)
    text = draft_config(str(csv), timestamp="ordered_at")
    cfg, _ = _load(text, tmp_path)
    assert cfg.labels.horizon_days == horizon
    assert (f"CHECK: the file spans {days} days, too short for a 90-day horizon" in text) == check


def test_a_pandas_parquet_file_keeps_its_types_and_its_signup_timestamp(tmp_path):
    import pandas as pd

    n = 300
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series(np.arange(n) + 10_000, dtype="int32"),
            "tenure": pd.Series(rng.integers(0, 72, n), dtype="Int16"),
            "plan": pd.Categorical(rng.choice(["basic", "pro"], n)),
            "signed_up": pd.Timestamp("2020-01-01", tz="Europe/Berlin")
            + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
            "senior": rng.random(n) < 0.2,
            "churned": rng.random(n) < 0.3,
        }
    )
    frame.loc[::7, "tenure"] = pd.NA
    path = tmp_path / "accounts.parquet"
    frame.to_parquet(path, index=False)
    text = draft_config(str(path), label="churned")
    cfg, raw = _load(text, tmp_path)
    assert raw["customers"]["signup_date"] == {
        "name": "signup_date",
        "source": "signed_up",
        "type": "datetime",
    }
    types = {a["name"]: a["type"] for a in raw["customers"]["attributes"]}
    assert types == {"tenure": "integer", "plan": "categorical", "senior": "boolean"}
    assert raw["labels"]["churned_positive"] == ["true"]
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.file_problems == []
    assert res.frame["signup_date"].null_count() == 0
    assert res.frame["tenure"].null_count() == len(range(0, n, 7))


def test_a_table_without_ids_numbers_its_rows(tmp_path):
    csv = tmp_path / "churn-bigml-80.csv"
    _bank().drop("CustomerId").write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert cfg.customers.row_ids and "id_column" not in raw["customers"]
    assert "CHECK: no customer id column found: rows are numbered from 1" in text
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    assert res.frame["customer_id"].to_list() == [str(i) for i in range(1, 401)]
    assert res.frame.columns[0] == "customer_id"


@pytest.mark.parametrize("kind", ["csv", "parquet", "json"])
def test_a_file_larger_than_the_rows_read_is_judged_on_every_line(tmp_path, kind):
    """The columns are drafted from the first rows; the horizon, the lapsed share and the
    share of lines without a customer come from every line, which polars scans: here the
    first 1,000 of 4,000 lines span a week of a 61-day file, and only 500 lines after them
    lack a customer."""
    n = 4_000
    rng = np.random.default_rng(2)
    start = np.datetime64("2024-03-01T00:00:00")
    stamps = start + np.sort(rng.integers(0, 61 * 86_400, n)).astype("timedelta64[s]")
    stamps[: n // 4] = start + np.sort(rng.integers(0, 7 * 86_400, n // 4)).astype("timedelta64[s]")
    stamps[-1] = start + np.timedelta64(61 * 86_400 - 1, "s")
    ids = pl.Series(rng.integers(1, 400, n)).cast(pl.String)
    frame = pl.DataFrame(
        {
            "customer_id": ids.scatter(list(range(2_000, 2_500)), None),
            "ordered_at": pl.Series(np.sort(stamps).astype("datetime64[us]")).dt.strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "amount": rng.gamma(2.0, 30.0, n).round(2),
        }
    )
    path = tmp_path / f"orders.{kind}"
    if kind == "csv":
        frame.write_csv(path)
    elif kind == "json":  # JSON lines, as event and payment APIs export them
        frame.write_ndjson(path)
    else:
        frame.write_parquet(path, row_group_size=500)

    head = draft_config(str(path), timestamp="ordered_at", sample_rows=1_000)
    cfg, raw = _load(head, tmp_path)

    assert "1,000 rows read; ids and times of all 4,000)" in head
    assert "CHECK: the file spans 61 days, too short for a 90-day horizon" in head
    assert cfg.labels.horizon_days == 30
    assert raw["transactions"]["customer_id_required_fraction"] == 0.82
    assert "# 500 of 4,000 lines in the file have no customer id" in head
    assert "customers known at the cut-off, in the file)" in head
    whole = draft_config(str(path), timestamp="ordered_at")  # every row read: the same draft
    assert whole.splitlines()[1:] == head.splitlines()[1:]


def test_a_file_polars_cannot_scan_is_judged_on_the_lines_read(tmp_path):
    """A compressed export is drafted from the rows read, and says so."""
    import gzip

    csv = "customer_id,ordered_at,amount\n" + "".join(
        f"{i % 50 if i < 900 else ''},2024-01-{1 + i % 28:02d} 10:00:00,{i % 7 + 1}.5\n"
        for i in range(1_000)
    )
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(gzip.compress(csv.encode()))

    text = draft_config(str(path), timestamp="ordered_at", sample_rows=950)

    assert "(950 rows read)." in text
    assert "# 50 of 950 lines in the lines read have no customer id" in text
    assert "CHECK" not in text.split("labels:")[1]  # no horizon judged on part of the file


def test_a_money_column_not_named_amount_is_taken_by_its_name(tmp_path):
    """Subscription payments (KKBox-like): ``actual_amount_paid`` beside a list price, dates
    written as yyyymmdd numbers; the amount is taken by a word in its name, marked CHECK."""
    rng = np.random.default_rng(5)
    n = 600
    days = np.datetime64("2015-01-01") + np.sort(rng.integers(0, 400, n)).astype("timedelta64[D]")
    lines = pl.DataFrame(
        {
            "msno": [f"u{i % 80:03d}+/=" for i in range(n)],
            "payment_method_id": rng.integers(30, 42, n),
            "plan_list_price": rng.choice([99, 129, 149], n),
            "actual_amount_paid": rng.choice([0, 99, 129, 149], n),
            "is_auto_renew": rng.integers(0, 2, n),
            "transaction_date": [int(str(d).replace("-", "")) for d in days],
        }
    )
    csv = tmp_path / "transactions.csv"
    lines.write_csv(csv)

    text = draft_config(str(csv), timestamp="transaction_date", id_column="msno")
    cfg, raw = _load(text, tmp_path)

    t = raw["transactions"]
    assert (t["amount"], t["timestamp_format"]) == ("actual_amount_paid", "%Y%m%d")
    assert "activity_only" not in t
    assert 'amount: "actual_amount_paid"   # CHECK: taken as the amount by its name' in text
    res = ingest_transactions(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.frame.height == n
    assert res.frame["amount"].sum() == lines["actual_amount_paid"].sum()


def test_dates_written_as_whole_numbers_in_a_date_named_column_are_dates(tmp_path):
    """KKBox's members table: ``registration_init_time`` holds 20150301-style numbers (the
    sign-up date); ``bd`` (an age) and ``city`` stay integers."""
    rng = np.random.default_rng(6)
    n = 400
    days = np.datetime64("2008-01-01") + rng.integers(0, 3_000, n).astype("timedelta64[D]")
    members = pl.DataFrame(
        {
            "msno": [f"m{i:04d}" for i in range(n)],
            "city": rng.integers(1, 22, n),
            "bd": rng.integers(15, 70, n),
            "registration_init_time": [int(str(d).replace("-", "")) for d in days],
            "is_churn": rng.integers(0, 2, n),
        }
    )
    csv = tmp_path / "members.csv"
    members.write_csv(csv)

    text = draft_config(str(csv), label="is_churn", id_column="msno")
    cfg, raw = _load(text, tmp_path)

    signup = raw["customers"]["signup_date"]
    assert (signup["source"], signup["type"], signup["format"]) == (
        "registration_init_time",
        "date",
        "%Y%m%d",
    )
    kinds = {a["name"]: a["type"] for a in raw["customers"]["attributes"]}
    assert kinds == {"city": "integer", "bd": "integer"}
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    first = np.datetime64(res.frame["signup_date"].min(), "D")
    assert first == days.min()


def test_a_snapshot_with_its_customers_transactions_drafts_both_sections(tmp_path):
    """KKBox's shape: a members table, labels in a file of their own and the members'
    payments (``--transactions``): one config with customers, transactions and the label
    file, whose features come from the payments before the cut-off."""
    rng = np.random.default_rng(8)
    n = 300
    ids = [f"m{i:04d}" for i in range(n)]
    pl.DataFrame(
        {"msno": ids, "city": rng.integers(1, 22, n), "bd": rng.integers(15, 70, n)}
    ).write_csv(tmp_path / "members.csv")
    pl.DataFrame({"msno": ids[:250], "is_churn": rng.integers(0, 2, 250)}).write_csv(
        tmp_path / "train.csv"
    )
    m = 3_000
    days = np.datetime64("2016-01-01") + rng.integers(0, 400, m).astype("timedelta64[D]")
    pl.DataFrame(
        {
            "msno": rng.choice(ids, m),
            "transaction_date": [int(str(d).replace("-", "")) for d in days],
            "actual_amount_paid": rng.choice([99, 129, 149], m),
        }
    ).write_csv(tmp_path / "transactions.csv")

    text = draft_config(
        str(tmp_path / "members.csv"),
        label="is_churn",
        labels_file=str(tmp_path / "train.csv"),
        transactions_file=str(tmp_path / "transactions.csv"),
        timestamp="transaction_date",
    )
    cfg, raw = _load(text, tmp_path)

    assert raw["customers"]["id_column"] == "msno"
    t = raw["transactions"]
    assert (t["customer_id"], t["timestamp_format"], t["amount"]) == (
        "msno",
        "%Y%m%d",
        "actual_amount_paid",
    )
    assert raw["labels"]["source"] == "columns" and raw["labels"]["churned_column"] == "is_churn"
    assert "# cutoff: YYYY-MM-DD   # CHECK: the date the labels were taken" in text
    assert ingest_transactions(cfg, str(tmp_path)).frame.height == m
    with pytest.raises(DraftError, match="--transactions goes with --label"):
        draft_config(str(tmp_path / "members.csv"), label="is_churn", transactions_file="x.csv")

    # the payments name the member column otherwise ('member'): found by its values, where
    # it said "no customer id column found ...: give it with --id" though --id was given
    pl.read_csv(tmp_path / "transactions.csv").rename({"msno": "member"}).write_csv(
        tmp_path / "payments.csv"
    )
    text = draft_config(
        str(tmp_path / "members.csv"),
        label="is_churn",
        id_column="msno",
        labels_file=str(tmp_path / "train.csv"),
        transactions_file=str(tmp_path / "payments.csv"),
        timestamp="transaction_date",
    )
    assert yaml.safe_load(text)["transactions"]["customer_id"] == "member"
    pl.read_csv(tmp_path / "payments.csv").with_columns(
        ("X" + pl.col("member")).alias("member")
    ).write_csv(tmp_path / "payments.csv")
    with pytest.raises(DraftError, match="has no column 'msno' .* and no column whose values"):
        draft_config(
            str(tmp_path / "members.csv"),
            label="is_churn",
            labels_file=str(tmp_path / "train.csv"),
            transactions_file=str(tmp_path / "payments.csv"),
            timestamp="transaction_date",
        )


def test_blank_customer_ids_in_an_event_log_count_as_missing(tmp_path):
    """Sparkify-style JSON lines: logged-out events carry ``"userId": ""``, which ingestion
    reads as no customer; the draft counts them and admits them."""
    lines = [
        {"ts": 1_538_352_000_000 + i * 3_600_000, "userId": "" if i % 10 == 0 else str(i % 30)}
        | {"page": "NextSong" if i % 3 else "Home"}
        for i in range(200)
    ]
    path = tmp_path / "events.json"
    pl.DataFrame(lines).write_ndjson(path)

    text = draft_config(str(path), timestamp="ts")
    cfg, raw = _load(text, tmp_path)

    assert raw["transactions"]["customer_id_required_fraction"] == 0.85
    assert "# 20 of 200 lines in the file have no customer id" in text
    res = ingest_transactions(cfg, str(tmp_path))
    assert res.frame["customer_id"].null_count() == 20


def test_an_event_log_with_a_cancellation_event_drafts_it_as_an_exit_event(tmp_path):
    """Sparkify's pages: 'Cancellation Confirmation' means the user left ('Cancel', the
    button before it, does not); the draft proposes it as an exit event, marked CHECK."""
    pages = ["NextSong", "Home", "Cancel", "Cancellation Confirmation", "Thumbs Up"]
    lines = [  # with the user's plan beside the page: the page holds the exit event
        {
            "ts": 1_538_352_000_000 + i * 3_600_000,
            "userId": str(i % 40),
            "plan": ["free", "paid"][i % 2],
            "page": pages[i % 5],
        }
        for i in range(500)
    ]
    path = tmp_path / "events.json"
    pl.DataFrame(lines).write_ndjson(path)

    text = draft_config(str(path), timestamp="ts")
    cfg, raw = _load(text, tmp_path)

    assert raw["transactions"]["category"] == "page"
    assert raw["transactions"]["exit_events"] == ["Cancellation Confirmation"]
    assert cfg.transactions.exit_events == ["Cancellation Confirmation"]
    assert 'exit_events: ["Cancellation Confirmation"]   # CHECK: events that mean' in text
    assert "in the horizon after the cut-off, or an exit event in it" in text


def test_dates_other_than_the_signup_are_attributes_and_a_churn_date_is_a_leak(tmp_path):
    """A last login is kept as a date attribute (the model gets the days from it to the
    snapshot's date); a churn date, blank for those who stayed, is left out as a leak."""
    n = 400
    bank = _bank(n)
    exited = bank["Exited"] == "1"
    csv = tmp_path / "accounts.csv"
    bank.with_columns(
        pl.Series("last_login", [f"2024-06-{1 + i % 28:02d}" for i in range(n)]),
        pl.when(exited).then(pl.lit("2024-07-01")).otherwise(None).alias("churn_date"),
    ).write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    types = {a["name"]: a["type"] for a in raw["customers"]["attributes"]}
    assert types["last_login"] == "date" and "churn_date" not in types
    assert '# left out: "churn_date": CHECK: predicts the label almost perfectly' in text
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.frame["last_login"].dtype == pl.Date
    assert "cutoff:" not in text  # the sign-ups date the export
    pl.read_csv(csv).drop("Joined").write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert str(raw["labels"]["cutoff"]) == "2024-06-29"  # the day after the last login
    assert "CHECK: the date the table was exported" in text


def test_columns_named_for_the_outcome_are_left_out_even_when_they_leak_only_in_part(tmp_path):
    """IBM's telecom table: a ``Churn Reason`` blank for those who stayed and for a quarter of
    those who left, and a ``Churn Score`` another model wrote, predict the label only in part
    (no leak by ROC-AUC), yet are recorded with the outcome: left out, marked CHECK."""
    n = 400
    bank = _bank(n)
    rng = np.random.default_rng(1)
    exited = (bank["Exited"] == "1").to_numpy()
    reason = np.where(exited & (rng.random(n) < 0.75), "Price too high", "")
    score = (exited * 30 + rng.uniform(20, 80, n)).round()
    csv = tmp_path / "telecom.csv"
    bank.with_columns(pl.Series("Churn Reason", reason), pl.Series("Churn Score", score)).write_csv(
        csv
    )
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    names = {a["name"] for a in raw["customers"]["attributes"]}
    assert names == {"geography", "age", "balance"}
    for col in ("Churn Reason", "Churn Score"):
        assert f'# left out: "{col}": CHECK: named for the outcome' in text


def test_an_id_not_named_like_one_is_found_by_its_distinct_values(tmp_path):
    """BankChurners' ``CLIENTNUM``: named for its owner and distinct in every row, it is
    the id (marked CHECK), not an integer feature; a row number never is."""
    csv = tmp_path / "BankChurners.csv"
    _bank().rename({"CustomerId": "CLIENTNUM"}).write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert raw["customers"]["id_column"] == "CLIENTNUM" and not cfg.customers.row_ids
    assert "CHECK: named like an id and distinct in every row read" in text
    assert "clientnum" not in {a["name"] for a in raw["customers"]["attributes"]}
    repeated = tmp_path / "repeats.csv"
    _bank().drop("CustomerId").with_columns(pl.lit("7").alias("account_no")).write_csv(repeated)
    assert "row_ids: true" in draft_config(str(repeated), label="Exited")


def test_sequential_ids_named_for_their_owner_are_ids_not_row_numbers(tmp_path):
    """An account number a database counted up, in an export sorted by it (1, 2, 3 … or
    ``0000000``, ``0000001`` …), is the id: numbering rows instead would give a customer
    another's number once an export adds or reorders rows. ``RowNumber`` stays left out."""
    n = 400
    counted = tmp_path / "accounts.csv"
    _bank().drop("CustomerId").with_columns(pl.Series("AccountNo", range(1, n + 1))).write_csv(
        counted
    )
    text = draft_config(str(counted), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert raw["customers"]["id_column"] == "AccountNo" and not cfg.customers.row_ids
    assert '# left out: "RowNumber": a row number' in text
    padded = tmp_path / "padded.csv"
    codes = [f"{i:07d}" for i in range(n)]
    _bank().drop("CustomerId", "RowNumber").with_columns(pl.Series("Acct Code", codes)).write_csv(
        padded
    )
    cfg, raw = _load(draft_config(str(padded), label="Exited"), tmp_path)
    assert raw["customers"]["id_column"] == "Acct Code"
    frame = ingest_customers(cfg, str(tmp_path)).frame
    assert frame["customer_id"].head(2).to_list() == ["0000000", "0000001"]


def test_ids_that_never_come_back_are_marked_for_a_check(tmp_path):
    """Olist's orders name a customer_id per order: no id comes back at another time."""
    rng = np.random.default_rng(3)
    n = 300
    stamps = [f"2023-{1 + i % 12:02d}-{1 + i % 27:02d} 10:00:00" for i in range(n)]
    per_order = pl.DataFrame(
        {"customer_id": [f"c{i:04d}" for i in range(n)], "ts": stamps, "amount": rng.random(n)}
    )
    path = tmp_path / "orders.csv"
    per_order.write_csv(path)
    assert "none of the 300 ids in the lines read comes back" in draft_config(
        str(path), timestamp="ts"
    )
    people = per_order.with_columns(pl.Series("customer_id", [f"c{i % 60}" for i in range(n)]))
    people.write_csv(path)
    assert "comes back" not in draft_config(str(path), timestamp="ts")


def test_a_file_without_a_header_line_is_refused_with_the_command_that_adds_one(tmp_path):
    """CDNOW's master file: values aligned by spaces, no column names. The command in the
    error writes the CSV the draft then reads."""
    import shlex
    import subprocess
    import sys

    path = tmp_path / "CDNOW_master.txt"
    path.write_text("00001 19970101  1   11.77\n00002 19970112  2   89.00\n" * 15)
    with pytest.raises(DraftError, match="the first line holds values, not column names") as e:
        draft_config(str(path), timestamp="column_2")
    command = str(e.value).split("e.g.: ", 1)[1]
    subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, check=True)
    written = pl.read_csv(tmp_path / "CDNOW_master.csv", infer_schema=False)
    assert written.columns == ["column_1", "column_2", "column_3", "column_4"]
    assert written.row(0) == ("00001", "19970101", "1", "11.77") and written.height == 30
    commas = tmp_path / "values.csv"
    commas.write_text("17850,2010-12-01 08:26:00,15.30\n" * 30)
    with pytest.raises(DraftError, match=r"sep=',', header=None"):
        draft_config(str(commas), timestamp="column_2")


def test_a_label_with_an_unknown_value_drafts_what_means_retained(tmp_path):
    """'Yes' / 'No' / 'Unknown': 'No' is drafted as churned_negative and 'Unknown' rows are
    scored, not trained on; without churned_negative the third value is refused, not
    counted as retained."""
    bank = (
        _bank()
        .with_columns(
            pl.Series("Exited", (["Yes", "No", "No", "Unknown", "No"] * 80)),
            pl.lit(None).alias("x"),
        )
        .drop("x")
    )
    csv = tmp_path / "accounts.csv"
    bank.write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert raw["labels"]["churned_positive"] == ["Yes"]
    assert raw["labels"]["churned_negative"] == ["No"]
    assert raw["labels"]["allow_unlabelled"] is True
    res = ingest_customers(cfg, str(tmp_path))
    assert res.label_problem is None
    assert res.frame["churned"].value_counts(sort=True).rows() == [(0, 240), (1, 80), (None, 80)]
    plain = cfg.model_copy(
        update={"labels": cfg.labels.model_copy(update={"churned_negative": None})}
    )
    refused = ingest_customers(plain, str(tmp_path))
    problem = refused.label_problem
    assert problem is not None and "holds 2 values besides churned_positive" in problem
    assert "'No' (240), 'Unknown' (80)" in problem and "labels.churned_negative" in problem
    from dagster import AssetCheckSeverity

    from churn_assets.raw.checks import parse_check

    check = parse_check("raw_customers", refused, None)
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR  # blocks training


def test_ids_exported_as_numbers_with_a_decimal_comma_are_plain_ids(tmp_path):
    """A European export of float ids writes ``15000123,0``: the same customer as the
    ``15000123`` another file names (``1,000`` is left as written)."""
    bank = _bank(30).with_columns(
        (pl.col("CustomerId").cast(pl.String) + ",0").alias("CustomerId"),
        pl.col("Balance").cast(pl.String).str.replace(r"\.", ","),
    )
    csv = tmp_path / "kunden.csv"
    csv.write_text(bank.write_csv(separator=";"))
    cfg, _ = _load(draft_config(str(csv), label="Exited"), tmp_path)
    res = ingest_customers(cfg, str(tmp_path))
    assert sorted(res.frame["customer_id"]) == sorted(_bank(30)["CustomerId"].cast(pl.String))
    from churn_assets.lib.ingest import plain_id

    kept = pl.DataFrame({"c": ["1,000", "C1.0", "0123"]}).select(plain_id(pl.col("c")))["c"]
    assert kept.to_list() == ["1,000", "C1.0", "0123"]  # only numbers lose a .0


def test_postal_and_area_codes_are_categories_or_left_out_never_numbers(tmp_path):
    rng = np.random.default_rng(8)
    csv = tmp_path / "accounts.csv"
    _bank().with_columns(
        pl.Series("Zip Code", [f"{z:05d}" for z in rng.integers(1000, 99999, 400)]),
        pl.Series("Area code", rng.choice(["0408", "0415", "0510"], 400)),
    ).write_csv(csv)
    text = draft_config(str(csv), label="Exited")
    cfg, raw = _load(text, tmp_path)
    types = {a.get("source", a["name"]): a["type"] for a in raw["customers"]["attributes"]}
    assert types["Area code"] == "categorical" and "Zip Code" not in types
    assert '# left out: "Zip Code": a code with' in text
    res = ingest_customers(cfg, str(tmp_path))
    assert set(res.frame["area_code"]) == {"0408", "0415", "0510"}  # leading zeros kept


def test_spreadsheet_serial_dates_are_read_as_excel_days(tmp_path):
    """Excel dates exported as numbers: 40513.35139 is 2010-12-01 08:26 (day 1 is
    1900-01-01), drafted as ``timestamp_format: excel`` and ingested as that time."""
    import datetime as dt

    csv = tmp_path / "orders.csv"
    pl.DataFrame(
        {
            "customer_id": ["a", "b", "a"],
            "at": ["40513.35139", "40908.5", "40544"],
            "amount": [1.0, 2.0, 3.0],
        }
    ).write_csv(csv)
    text = draft_config(str(csv), timestamp="at")
    cfg, raw = _load(text, tmp_path)
    assert raw["transactions"]["timestamp_format"] == "excel"
    assert "(40513.35139 is 2010-12-01 08:26:00)" in text
    got = ingest_transactions(cfg, str(tmp_path)).frame.sort("timestamp")["timestamp"]
    assert got.to_list() == [
        dt.datetime(2010, 12, 1, 8, 26, 0, 96_000),
        dt.datetime(2011, 1, 1),
        dt.datetime(2011, 12, 31, 12),
    ]


def test_excel_unicode_text_utf16_tab_separated_is_drafted_and_ingested(tmp_path):
    """Excel's "Unicode Text (*.txt)": UTF-16 with a byte-order mark, tab-separated."""
    path = tmp_path / "customers.txt"
    path.write_bytes(_bank().write_csv(separator="\t").encode("utf-16"))
    text = draft_config(str(path), label="Exited")
    cfg, raw = _load(text, tmp_path)
    assert (raw["customers"]["encoding"], raw["customers"]["separator"]) == ("utf-16", "\t")
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.rows == 400
    assert sorted(res.frame["customer_id"]) == sorted(_bank()["CustomerId"].cast(pl.String))


def test_a_german_export_names_its_customer_and_amount_columns_in_german(tmp_path):
    csv = tmp_path / "export.csv"
    csv.write_text(
        "Kundennummer;Belegnr;Rechnungsdatum;Warengruppe;Betrag\n"
        + "".join(
            f"{17850 + i % 9};B{i // 2};{1 + i % 28:02d}/03/2011 10:00;W{i % 3};{i},50\n"
            for i in range(60)
        )
    )
    text = draft_config(str(csv), timestamp="Rechnungsdatum")
    _, raw = _load(text, tmp_path)
    tx = raw["transactions"]
    assert (tx["customer_id"], tx["amount"], tx["decimal"]) == ("Kundennummer", "Betrag", ",")
    assert (tx["invoice_id"], tx["category"]) == ("Belegnr", "Warengruppe")
    assert "activity_only" not in tx


def test_a_repeating_id_named_for_its_owner_is_the_id_not_a_feature(tmp_path):
    """A customer-month table whose id is ``cust_id``: the id (its months kept by
    ``latest_by``), never an integer feature beside numbered rows; the same id repeating
    with no month is refused, naming it."""
    rng = np.random.default_rng(1)
    customers, months = 300, 6
    ids = [f"{i:06d}" for i in range(customers)]
    monthly = tmp_path / "customer_months.csv"
    pl.DataFrame(
        {
            "cust_id": np.repeat(ids, months),
            "month": np.tile([f"2024-{m:02d}" for m in range(1, months + 1)], customers),
            "usage": rng.normal(size=customers * months).round(3),
            "churn_next_month": rng.choice([0, 1], customers * months, p=[0.8, 0.2]),
        }
    ).write_csv(monthly)
    text = draft_config(str(monthly), label="churn_next_month")
    cfg, raw = _load(text, tmp_path)
    assert raw["customers"]["id_column"] == "cust_id" and not cfg.customers.row_ids
    assert raw["customers"]["latest_by"]["name"] == "month"
    assert "a customer's rows repeat it (latest_by)" in text
    names = {a["name"] for a in raw["customers"]["attributes"]}
    assert "cust_id" not in names and "month" not in names
    res = ingest_customers(cfg, str(tmp_path))
    assert res.frame.height == customers
    assert res.frame["customer_id"].sort().to_list() == ids  # leading zeros kept

    dups = tmp_path / "dups" / "accounts.csv"
    dups.parent.mkdir()
    pl.DataFrame(
        {
            "cust_no": [f"{i:06d}" for i in range(400)] + ["000007", "000011"],
            "region": rng.choice(["N", "S"], 402),
            "churned_flag": rng.choice([0, 1], 402),
        }
    ).write_csv(dups)
    with pytest.raises(DraftError, match="the id column 'cust_no' repeats values"):
        draft_config(str(dups), label="churned_flag")


@pytest.mark.parametrize(
    ("column", "values", "positive"),
    [
        ("retained", ["1", "0"], "0"),
        ("is_active", ["true", "false"], "false"),
        ("Stayed", ["Yes", "No"], "No"),
        ("Exited", ["1", "0"], "1"),  # a churn word: 1 is churned
    ],
)
def test_a_label_named_for_staying_has_its_no_churned(tmp_path, column, values, positive):
    """``retained`` / ``is_active`` / ``stayed`` with 1-0, true-false, yes-no: churned is
    the 0 / false / no (marked CHECK), not a churn model of the retention rate."""
    csv = tmp_path / "members.csv"
    n = 300
    pl.DataFrame(
        {
            "id": [f"M{i}" for i in range(n)],
            "age": [20 + i % 50 for i in range(n)],
            column: [values[0] if i % 4 else values[1] for i in range(n)],  # 75% the first
        }
    ).write_csv(csv)
    text = draft_config(str(csv), label=column)
    cfg, _ = _load(text, tmp_path)
    assert [v.lower() for v in cfg.labels.churned_positive] == [positive.lower()]
    res = ingest_customers(cfg, str(tmp_path))
    expected = 75 if positive == values[1] else 225
    assert res.label_problem is None and res.frame["churned"].sum() == expected
    if positive == values[1]:
        assert "CHECK:" in text and f"the column's name ({column!r}) says" in text


def test_a_label_spelled_in_several_cases_with_nan_is_two_values(tmp_path):
    """Yes / yes / YES / No / no and NaN (ingestion compares without case): drafted as
    yes churned, No retained, NaN no label; every row ingests with its label."""
    csv = tmp_path / "crm.csv"
    spellings = ["Yes", "yes", "YES", "No", "no", "no", "NaN", "No"]
    n = 400
    pl.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "tenure": [i % 70 for i in range(n)],
            "Churn": [spellings[i % len(spellings)] for i in range(n)],
        }
    ).write_csv(csv)
    text = draft_config(str(csv), label="Churn")
    cfg, _ = _load(text, tmp_path)
    assert [v.lower() for v in cfg.labels.churned_positive] == ["yes"]
    res = ingest_customers(cfg, str(tmp_path))
    assert res.label_problem is None
    assert res.frame["churned"].sum() == 150  # 3 of every 8
    assert res.frame["churned"].null_count() == 50  # the NaN rows: scored, not trained on


def test_an_activity_log_says_which_numbers_it_leaves_out(tmp_path):
    """Sessions with their minutes and no money: drafted as activity_only (a line counts
    once), and the numbers the lines carry are named as left out, with how to weigh lines by
    one of them (they were dropped without a word)."""
    rng = np.random.default_rng(4)
    n = 400
    pl.DataFrame(
        {
            "user_id": [f"u{i % 40}" for i in range(n)],
            "started": [f"2024-0{1 + i % 9}-1{i % 10} 10:00:00" for i in range(n)],
            "minutes": rng.integers(1, 90, n),
            "pages": rng.integers(1, 30, n),
        }
    ).write_csv(tmp_path / "sessions.csv")
    text = draft_config(str(tmp_path / "sessions.csv"), timestamp="started")
    assert yaml.safe_load(text)["transactions"]["activity_only"] is True
    assert '# left out: "minutes", "pages": numbers a line carries are not used' in text
    assert "give it as --amount" in text


def test_a_constant_column_of_a_parquet_file_is_left_out_as_in_a_csv(tmp_path):
    """A typed column with one value in every row says nothing: left out with its reason,
    as the same column of a CSV or workbook is (it was kept from Parquet)."""
    bank = _bank().with_columns(pl.lit(7.0).alias("Constant"))
    bank.write_parquet(tmp_path / "bank.parquet")
    text = draft_config(str(tmp_path / "bank.parquet"), label="Exited")
    assert '# left out: "Constant": 7.0 in every row read: says nothing' in text


def test_a_label_of_one_value_is_drafted_with_a_check_note(tmp_path):
    """A table whose labels are all "No" got `churned_positive: ["yes"]`, a value not in
    the data, without a word; the note now says the column holds one class."""
    path = tmp_path / "all_no.csv"
    pl.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(50)],
            "tenure": list(range(50)),
            "churn": ["No"] * 50,
        }
    ).write_csv(path)
    text = draft_config(str(path), label="churn")
    assert "CHECK: every labelled row holds 'No' (50): one class" in text


def test_a_date_and_time_attribute_in_a_common_format_is_a_datetime(tmp_path):
    """A last-login column written '12/08/2025 02:17 PM' (or '08/12/2025 14:17') was taken
    for free text and left out; it is a datetime attribute with its format now, read whole
    by ingestion."""
    rng = np.random.default_rng(9)
    n = 300
    times = np.datetime64("2025-01-01T00:00") + rng.integers(0, 500_000, n).astype("timedelta64[m]")
    stamps = pl.Series(times.astype("datetime64[us]"))
    pl.DataFrame(
        {
            "account": [f"A{i:03d}" for i in range(n)],
            "last_login": stamps.dt.strftime("%m/%d/%Y %I:%M %p"),
            "last_ticket": stamps.dt.strftime("%d/%m/%Y %H:%M"),
            "seats": rng.integers(1, 50, n),
            "churned": rng.integers(0, 2, n),
        }
    ).write_csv(tmp_path / "accounts.csv")
    text = draft_config(str(tmp_path / "accounts.csv"), label="churned", id_column="account")
    cfg, raw = _load(text, tmp_path)
    got = {a["name"]: (a["type"], a.get("format")) for a in raw["customers"]["attributes"]}
    assert got == {
        "last_login": ("datetime", "%m/%d/%Y %I:%M %p"),
        "last_ticket": ("datetime", "%d/%m/%Y %H:%M"),
        "seats": ("integer", None),
    }
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    first = res.frame.sort("customer_id")["last_login"][0]
    assert first == stamps[0]


def test_a_repeated_header_is_read_as_a_second_column_marked_for_a_check(tmp_path):
    """An export of joined tables heads two columns ``Balance``: the second is read, under
    the name polars gives it, and marked CHECK; ingestion reads both as drafted."""
    bank = _bank()
    csv = tmp_path / "joined.csv"
    header = "CustomerId,Age,Balance,Balance,Exited"
    rows = [
        f"{r['CustomerId']},{r['Age']},{r['Balance']},{r['Balance'] * 2},{r['Exited']}"
        for r in bank.iter_rows(named=True)
    ]
    csv.write_text("\n".join([header, *rows]) + "\n")
    text = draft_config(str(csv), label="Exited")
    assert "CHECK: the second column headed 'Balance' (the file repeats that header)" in text
    cfg, raw = _load(text, tmp_path)
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {}
    twin = res.frame["balance_duplicated_0"].to_numpy()
    assert np.allclose(twin, 2 * res.frame["balance"].to_numpy())


def test_a_folder_whose_newer_export_adds_a_column_is_drafted_as_dated_snapshots(tmp_path):
    """The newer export has a column the older lacks: the older file's rows still count
    (the repeated ids show ``latest_by: file``), the new column is an attribute, and the
    config reads the older export with it missing."""
    exports = tmp_path / "exports"
    exports.mkdir()
    bank = _bank()
    bank.write_csv(exports / "customers_2025-03-01.csv")
    plans = np.random.default_rng(4).choice(["basic", "pro", "max"], bank.height)
    bank.with_columns(pl.Series("Plan", plans)).write_csv(exports / "customers_2025-03-02.csv")
    text = draft_config(str(exports), label="Exited")
    assert "latest_by: file   # CHECK: 400 rows repeat a customer over 2 files" in text
    cfg, raw = _load(text, tmp_path)
    assert "plan" in {a["name"] for a in raw["customers"]["attributes"]}
    res = ingest_customers(cfg, str(tmp_path))
    assert res.file_problems == [] and res.parse_errors == {}
    assert res.absent_columns == {"customers_2025-03-01.csv": ["Plan"]}


def test_a_value_label_with_negative_values_is_marked_for_a_check(tmp_path):
    """Net revenue after refunds below 0 for some customers: the platform trains no value
    model on it (it forecasts spend of 0 or more), so the draft says so beside the column."""
    bank = _bank()
    csv = tmp_path / "net.csv"
    net = bank["Balance"].to_numpy() - 20_000
    bank.with_columns(pl.Series("net_revenue", net.round(2))).write_csv(csv)
    below = int((net < 0).sum())
    assert below > 0
    text = draft_config(str(csv), label="Exited", value="net_revenue")
    assert f"CHECK: {below:,} negative values in the rows read" in text
    bank.with_columns(pl.Series("net_revenue", (net + 20_000).round(2))).write_csv(csv)
    assert "negative values" not in draft_config(str(csv), label="Exited", value="net_revenue")
