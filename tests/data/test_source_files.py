"""Landing files as users get them: compressed CSV exports, spreadsheets (one sheet, a table
split over yearly sheets, a title above the header), read the same as the plain CSV file; a
file that is none of these is quarantined with a message that says what to change."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import json
import lzma
import zipfile
from pathlib import Path

import polars as pl
import pytest
import xlsxwriter

from churn_assets.lib.config_draft import DraftError, draft_config
from churn_assets.lib.datasets import SourceSpec, load_dataset_config
from churn_assets.lib.ingest import ingest_customers, ingest_transactions, list_source_files
from churn_assets.lib.source_files import UnreadableFile, read_table
from churn_assets.raw.checks import files_check, parse_check

CSV = (
    "InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice\n"
    "536365,17850,2010-12-01 08:26:00,6,2.55\n"
    "C536379,14527,2010-12-01 09:41:00,-1,27.5\n"
    "536380,17850,2010-12-02 10:00:00,12,0.85\n"
)
ROWS = [
    (536365, 17850, dt.datetime(2010, 12, 1, 8, 26), 6, 2.55),
    ("C536379", 14527, dt.datetime(2010, 12, 1, 9, 41), -1, 27.5),
    (536380, 17850, dt.datetime(2010, 12, 2, 10, 0), 12, 0.85),
]
HEADER = ["InvoiceNo", "CustomerID", "InvoiceDate", "Quantity", "UnitPrice"]


def _workbook(
    path: Path, sheets: dict[str, list[tuple]], title: str | None = None, notes: bool = False
) -> Path:
    """A workbook with native cells: numbers as numbers, dates as date cells shown the US
    way (as Excel users see them), text as text; with ``notes``, an "About" sheet first."""
    wb = xlsxwriter.Workbook(str(path))
    shown = wb.add_format({"num_format": "m/d/yyyy h:mm"})
    if notes:
        wb.add_worksheet("About").write_row(0, 0, ["Invoices", "2010-2011"])
    for name, rows in sheets.items():
        ws = wb.add_worksheet(name)
        top = 0
        if title:
            ws.write_string(0, 0, title)
            top = 2  # a title, then a blank line
        ws.write_row(top, 0, HEADER)
        for i, row in enumerate(rows, start=top + 1):
            for j, v in enumerate(row):
                if isinstance(v, dt.datetime):
                    ws.write_datetime(i, j, v, shown)
                elif isinstance(v, str):
                    ws.write_string(i, j, v)
                else:
                    ws.write_number(i, j, v)
    wb.close()
    return path


def _spec(**kw) -> SourceSpec:
    return SourceSpec(path="x", **kw)


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("orders.csv.gz", gzip.compress),
        ("orders.csv.bz2", bz2.compress),
        ("orders.csv.xz", lzma.compress),
        ("orders.dat", gzip.compress),  # the content decides, not the name
    ],
)
def test_compressed_csv_reads_as_the_plain_file(name, pack):
    plain = read_table(CSV.encode(), "orders.csv", _spec())
    assert read_table(pack(CSV.encode()), name, _spec()).equals(plain)
    assert plain.height == 3 and plain["InvoiceNo"].to_list()[1] == "C536379"


def test_a_zip_archive_with_one_table_is_read_and_with_two_is_refused(tmp_path):
    one, two = tmp_path / "one.zip", tmp_path / "two.zip"
    with zipfile.ZipFile(one, "w") as z:
        z.writestr("__MACOSX/._orders.csv", b"junk")  # macOS metadata is not a table
        z.writestr("export/orders.csv", CSV)
    with zipfile.ZipFile(two, "w") as z:
        z.writestr("orders.csv", CSV)
        z.writestr("customers.csv", CSV)
    assert read_table(one.read_bytes(), "one.zip", _spec()).height == 3
    with pytest.raises(UnreadableFile, match=r"holds 2 files \('orders.csv', 'customers.csv'\)"):
        read_table(two.read_bytes(), "two.zip", _spec())


def test_a_truncated_gzip_file_is_unreadable_with_its_reason():
    with pytest.raises(UnreadableFile, match="corrupt compressed file"):
        read_table(gzip.compress(CSV.encode())[:40], "orders.csv.gz", _spec())


def test_spreadsheet_cells_read_as_text_like_a_csv_file(tmp_path):
    book = _workbook(tmp_path / "orders.xlsx", {"Orders": ROWS})
    frame = read_table(book.read_bytes(), "orders.xlsx", _spec())
    assert frame.columns == HEADER and frame.dtypes == [pl.String] * 5
    # date cells as ISO 8601 whatever the display format; numbers as their shortest text
    assert frame.row(0) == ("536365", "17850", "2010-12-01 08:26:00", "6", "2.55")
    assert frame["InvoiceNo"].to_list()[1] == "C536379"
    # the container decides: a workbook saved without its suffix is still a workbook
    assert read_table(book.read_bytes(), "orders", _spec()).equals(frame)
    # and a config that says CSV gets a message naming both, not an encoding error
    with pytest.raises(
        UnreadableFile, match="a spreadsheet file, but the data set config says format: csv"
    ):
        read_table(book.read_bytes(), "orders.xlsx", _spec(format="csv"))


def test_sheets_are_chosen_by_name_index_list_or_all(tmp_path):
    book = _workbook(
        tmp_path / "retail.xlsx", {"Year 2010": ROWS[:2], "Year 2011": ROWS[2:]}
    ).read_bytes()
    assert read_table(book, "r.xlsx", _spec()).height == 2  # the first sheet
    assert read_table(book, "r.xlsx", _spec(sheet=1)).height == 1
    assert read_table(book, "r.xlsx", _spec(sheet="Year 2011")).height == 1
    both = read_table(book, "r.xlsx", _spec(sheet="*"))
    assert both["InvoiceNo"].to_list() == ["536365", "C536379", "536380"]
    assert read_table(book, "r.xlsx", _spec(sheet=["Year 2010", "Year 2011"])).equals(both)
    with pytest.raises(UnreadableFile, match=r"no sheet 'Data'.*'Year 2010', 'Year 2011'"):
        read_table(book, "r.xlsx", _spec(sheet="Data"))


def test_stacked_sheets_must_share_their_columns(tmp_path):
    path = tmp_path / "mixed.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    for sheet, header in (("Orders", ["InvoiceNo", "CustomerID"]), ("Notes", ["Field", "Text"])):
        ws = wb.add_worksheet(sheet)
        ws.write_row(0, 0, header)
        ws.write_row(1, 0, ["a", "b"])
    wb.close()
    with pytest.raises(UnreadableFile, match="'Orders' and 'Notes' have different columns"):
        read_table(path.read_bytes(), "mixed.xlsx", _spec(sheet="*"))


def test_a_title_above_the_header_is_skipped_with_skip_rows(tmp_path):
    book = _workbook(tmp_path / "report.xlsx", {"Report": ROWS}, title="Orders, December")
    assert read_table(book.read_bytes(), "r.xlsx", _spec(skip_rows=2)).columns == HEADER
    text = ("Orders, December\n\n" + CSV).encode()
    assert read_table(text, "r.csv", _spec(skip_rows=2)).columns == HEADER


def test_a_source_folder_lists_compressed_files_and_workbooks(tmp_path):
    for name in ("a.csv.gz", "b.xlsx", "c.tsv.zip", "d.parquet", "e.csv"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.md").write_text("not data")
    (tmp_path / "f.gz").write_bytes(b"x")  # compressed, but not a table's name
    found = [Path(p).name for p in list_source_files(str(tmp_path))]
    assert found == ["a.csv.gz", "b.xlsx", "c.tsv.zip", "d.parquet", "e.csv"]


TRANSACTIONS = """
name: shop
transactions:
  path: orders/
  customer_id: CustomerID
  timestamp: InvoiceDate
  timestamp_format: "{fmt}"
  quantity: Quantity
  unit_price: UnitPrice
  invoice_id: InvoiceNo
  cancellation_prefix: "C"
labels:
  source: transactions
  horizon_days: 30
"""


def _shop(tmp_path: Path, fmt: str) -> tuple[object, str]:
    orders = tmp_path / "landing" / "orders"
    orders.mkdir(parents=True)
    _workbook(orders / "2010-12.xlsx", {"Orders": ROWS})
    (orders / "2010-12-02.csv.gz").write_bytes(
        gzip.compress(
            b"InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice\n"
            b"536390,14527,12/2/2010 11:00,3,1.25\n"
            b"536391,14527,yesterday,1,1.00\n"
        )
    )
    cfg = tmp_path / "shop.yaml"
    cfg.write_text(TRANSACTIONS.format(fmt=fmt))
    return load_dataset_config(str(cfg)), str(tmp_path / "landing")


def test_a_workbook_and_a_gzip_export_land_in_one_table_with_the_display_format(tmp_path):
    """The config names the format users see in Excel ("12/1/2010 8:26"); date cells read as
    ISO 8601 still parse, as ISO text is never ambiguous, and the gzip file's text uses the
    configured format. What parses neither way is still counted and quarantined."""
    cfg, landing = _shop(tmp_path, "%m/%d/%Y %H:%M")
    res = ingest_transactions(cfg, landing)
    assert res.file_problems == []
    assert res.parse_errors == {"timestamp": 1}
    good = res.frame.filter(pl.col("_parse_errors").is_null()).sort("timestamp")
    assert good["timestamp"].to_list() == [
        dt.datetime(2010, 12, 1, 8, 26),
        dt.datetime(2010, 12, 1, 9, 41),
        dt.datetime(2010, 12, 2, 10, 0),
        dt.datetime(2010, 12, 2, 11, 0),
    ]
    assert sorted(set(good["customer_id"].to_list())) == ["14527", "17850"]
    assert good["amount"].to_list() == pytest.approx([15.3, -27.5, 10.2, 3.75])
    assert not parse_check("raw_transactions", res, None).passed


def test_a_workbook_without_the_configured_column_names_the_columns_it_has(tmp_path):
    landing = tmp_path / "landing" / "customers"
    landing.mkdir(parents=True)
    _workbook(landing / "customers.xlsx", {"Orders": ROWS}, title="Customer list")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: c\ncustomers:\n  path: customers/\n  id_column: CustomerID\n"
        "labels:\n  source: columns\n  churned_column: Churn\n"
    )
    res = ingest_customers(load_dataset_config(str(cfg)), str(tmp_path / "landing"))
    check = files_check("raw_customers", res, None)
    assert not check.passed
    # the title row was read as the header: the message shows it and names the setting
    assert "customers.xlsx: missing column (column 'CustomerID')" in check.description
    assert "'Customer list'" in check.description and "skip_rows" in check.description


def test_draft_config_reads_a_workbook_split_by_year_after_a_notes_sheet(tmp_path):
    path = tmp_path / "online_retail_II.xlsx"
    _workbook(path, {"Year 2010": ROWS[:2], "Year 2011": ROWS[2:]}, notes=True)
    text = draft_config(str(path), timestamp="InvoiceDate")
    assert "format: excel" in text
    assert 'sheet: ["Year 2010", "Year 2011"]  # stacked: the same columns; not About' in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    cfg = load_dataset_config(str(out))
    res = ingest_transactions(cfg, str(tmp_path))
    assert res.parse_errors == {} and res.rows == 3


def test_draft_config_judges_a_workbook_split_by_year_on_every_sheet(tmp_path):
    """The lines without a customer and the time span come from both years' sheets, not
    from the first sheet the draft read rows of."""
    first = [(536000 + i, 17000 + i % 5, dt.datetime(2010, 1, 1 + i), 1, 2.0) for i in range(20)]
    second = [
        (537000 + i, "" if i % 4 == 0 else 18000 + i % 5, dt.datetime(2011, 6, 1 + i), 1, 2.0)
        for i in range(20)
    ]
    path = tmp_path / "online_retail_II.xlsx"
    _workbook(path, {"Year 2010": first, "Year 2011": second})
    text = draft_config(str(path), timestamp="InvoiceDate")
    assert "ids and times of all 40" in text
    assert "# 5 of 40 lines in the file have no customer id" in text


def test_draft_config_reads_a_gzip_export(tmp_path):
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(gzip.compress(CSV.replace(",", ";").encode("cp1252")))
    text = draft_config(str(path), timestamp="InvoiceDate")
    assert 'separator: ";"' in text and "format: csv" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_transactions(load_dataset_config(str(out)), str(tmp_path))
    assert res.file_problems == [] and res.parse_errors == {} and res.rows == 3


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_draft_config_skips_a_report_title_above_the_header(tmp_path, kind):
    """An export from a reporting tool: a title and a blank line above the header, in CSV
    and in a workbook."""
    if kind == "csv":
        path = tmp_path / "report.csv"
        path.write_text("Orders, December (all shops)\n\n" + CSV)
    else:
        path = _workbook(tmp_path / "report.xlsx", {"Report": ROWS}, title="Orders, December")
    text = draft_config(str(path), timestamp="InvoiceDate")
    assert "skip_rows: 2   # lines above the header (a title)" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    cfg = load_dataset_config(str(out))
    assert cfg.transactions.skip_rows == 2 and cfg.transactions.customer_id == "CustomerID"
    res = ingest_transactions(cfg, str(tmp_path))
    assert res.file_problems == [] and res.parse_errors == {} and res.rows == 3


def test_draft_config_keeps_the_first_line_as_header_without_a_title(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(CSV)
    assert "skip_rows" not in draft_config(str(path), timestamp="InvoiceDate")


def test_rows_with_every_field_empty_are_skipped_and_counted(tmp_path):
    """A public churn export with one all-empty row (",,,,,") trains as the rest of it; a row
    with data but no id is still a bad row."""
    (tmp_path / "c.csv").write_text(
        "CustomerID,Age,Churn\n1.0,30.0,0.0\n,,\n2.0,41.0,1.0\n,,\n,52.0,1.0\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: c\ncustomers:\n  path: c.csv\n  id_column: CustomerID\n  attributes:\n"
        "    - {name: age, source: Age, type: integer}\n"
        "labels:\n  source: columns\n  churned_column: Churn\n"
    )
    res = ingest_customers(load_dataset_config(str(cfg)), str(tmp_path))
    assert res.empty_rows == 2 and res.rows == 3
    assert res.frame["customer_id"].to_list() == ["1", "2", None]
    check = files_check("raw_customers", res, None)
    assert check.passed and check.description == "1 file(s) read; 2 empty row(s) skipped"
    text = draft_config(str(tmp_path / "c.csv"), label="Churn")
    assert "allow_unlabelled" not in text and "(3 rows read)" in text


def test_draft_config_of_a_folder_of_daily_exports_reads_them_all(tmp_path):
    orders = tmp_path / "orders"
    orders.mkdir()
    (orders / "2010-12-01.csv.gz").write_bytes(gzip.compress(CSV.encode()))
    (orders / "2010-12-02.csv.gz").write_bytes(
        gzip.compress(
            b"InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice\n"
            b"536390,14527,2010-12-02 11:00:00,3,1.25\n"
        )
    )
    text = draft_config(str(orders), timestamp="InvoiceDate")
    assert text.startswith("# Drafted by `churn draft-config` from orders/ (its last files, 4 rows")
    assert f"path: {json.dumps(str(orders.resolve()))}" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_transactions(load_dataset_config(str(out)), str(tmp_path))
    assert res.files == ["2010-12-01.csv.gz", "2010-12-02.csv.gz"] and res.rows == 4


CHARGES = [
    {
        "id": "ch_1",
        "amount": 1900,
        "created": 1704067200,
        "customer": {"id": "cus_A"},
        "metadata": {"plan": "basic"},
        "refunds": [],
    },
    {
        "id": "ch_2",
        "amount": 4900.5,
        "created": 1706745600,
        "customer": {"id": "cus_B"},
        "metadata": {"plan": None},
        "refunds": [{"amount": 100}],
    },
    {
        "id": "ch_3",
        "amount": 1900,
        "created": 1711929600,
        "customer": {"id": "cus_A"},
        "metadata": {"plan": "basic"},
        "refunds": [],
    },
]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_json_records_read_as_text_with_nested_fields_flattened(layout):
    if layout == "lines":
        data = "".join(json.dumps(r) + "\n" for r in CHARGES).encode()
    else:
        data = json.dumps(CHARGES).encode()
    frame = read_table(data, "charges.json", _spec())
    assert frame.columns == ["id", "amount", "created", "customer.id", "metadata.plan"]
    assert frame.dtypes == [pl.String] * 5  # lists (refunds) are left out
    assert frame["amount"].to_list() == ["1900.0", "4900.5", "1900.0"]
    assert frame["metadata.plan"].to_list() == ["basic", None, "basic"]
    assert read_table(data, "x.jsonl", _spec(), n_rows=2).height == 2
    with pytest.raises(UnreadableFile, match="unreadable JSON"):
        read_table(data[:-7], "charges.json", _spec())


def test_a_payments_export_in_json_lines_drafts_and_ingests(tmp_path):
    """A Stripe-like export: nested customer id, Unix times, a plan in metadata."""
    path = tmp_path / "charges.jsonl.gz"
    lapsed = {**CHARGES[0], "id": "ch_0", "created": 1685577600, "customer": {"id": "cus_C"}}
    records = [lapsed, *CHARGES]  # cus_C paid last in June 2023, long before the cut-off
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    text = draft_config(str(path), timestamp="created", id_column="customer.id")
    assert "format: json" in text and 'timestamp_format: "epoch_s"' in text
    assert 'category: "metadata.plan"' in text  # found by its own name
    assert "lapsed already (50% of the 2 customers known at the cut-off" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_transactions(load_dataset_config(str(out)), str(tmp_path))
    assert res.parse_errors == {} and res.rows == 4
    assert res.frame["customer_id"].to_list() == ["cus_C", "cus_A", "cus_B", "cus_A"]
    assert res.frame["timestamp"].to_list()[2] == dt.datetime(2024, 2, 1)
    assert res.frame["amount"].to_list() == [1900.0, 1900.0, 4900.5, 1900.0]


def test_a_nested_and_a_dotted_key_alike_make_the_file_unreadable_not_the_run(tmp_path):
    """``{"customer": {"id": 1}, "customer.id": 2}`` flattens to two ``customer.id``
    columns: the run failed with polars' DuplicateError, naming no file. The file is now
    refused as unreadable, named, and the others are read."""
    path = tmp_path / "charges.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in CHARGES).encode()))
    text = draft_config(str(path), timestamp="created", id_column="customer.id")
    (tmp_path / "draft.yaml").write_text(text)
    clash = {**CHARGES[0], "customer.id": "cus_Z"}
    (tmp_path / "clash.jsonl").write_text(json.dumps(clash) + "\n")
    (tmp_path / "draft.yaml").write_text(text.replace("charges.jsonl.gz", "*.jsonl*"))
    res = ingest_transactions(load_dataset_config(str(tmp_path / "draft.yaml")), str(tmp_path))
    (problem,) = res.file_problems
    assert problem.file == "clash.jsonl" and "two columns of the same name" in problem.message()
    assert res.rows == len(CHARGES)


def test_amounts_in_cents_are_drafted_and_read_in_currency_units(tmp_path):
    """Whole-number amounts beside a currency column (a Stripe charges export) draft
    ``amount_scale: 0.01`` marked CHECK; a column named for cents drafts it plainly; ingestion
    scales the amounts (and ``max_amount`` judges the scaled ones). Fractional amounts beside
    a currency column are currency units and draft nothing."""
    paid = [
        {**c, "amount": int(c["amount"]), "currency": "usd", "customer": {"id": f"cus_{i % 2}"}}
        for i, c in enumerate(CHARGES * 3)
    ]
    path = tmp_path / "charges.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in paid))
    text = draft_config(str(path), timestamp="created", id_column="customer.id")
    assert "amount_scale: 0.01   # CHECK: whole-number amounts beside a currency column" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text.replace("  amount_scale:", "  max_amount: 100\n  amount_scale:"))
    res = ingest_transactions(load_dataset_config(str(out)), str(tmp_path))
    assert res.parse_errors == {} and res.rows == len(paid)
    assert sorted(set(res.frame["amount"].to_list())) == [19.0, 49.0]
    cents = tmp_path / "cents.csv"
    cents.write_text("user,ts,amount_cents\nu1,2024-01-02,1999\nu2,2024-01-03,500\n")
    text = draft_config(str(cents), timestamp="ts", id_column="user", amount="amount_cents")
    assert "amount_scale: 0.01   # the column holds cents" in text
    # found by its money word, not given: the same (it read a hundredfold too large)
    text = draft_config(str(cents), timestamp="ts", id_column="user")
    assert 'amount: "amount_cents"   # CHECK: taken as the amount by its name' in text
    assert "amount_scale: 0.01   # the column holds cents" in text
    path.write_text("".join(json.dumps({**r, "amount": r["amount"] + 0.5}) + "\n" for r in paid))
    assert "amount_scale" not in draft_config(
        str(path), timestamp="created", id_column="customer.id"
    )


def test_only_the_configured_columns_of_a_wide_file_are_read():
    wide = CSV.replace("InvoiceNo,", " InvoiceNo ,")  # header names are matched stripped
    frame = read_table(wide.encode(), "o.csv", _spec(), columns=["CustomerID", "InvoiceNo"])
    assert frame.columns == ["CustomerID", "InvoiceNo"] and frame.height == 3
    parquet = io.BytesIO()
    read_table(CSV.encode(), "o.csv", _spec()).write_parquet(parquet)
    only = read_table(parquet.getvalue(), "o.parquet", _spec(), columns=["Quantity"])
    assert only.columns == ["Quantity"]
    # a column the file lacks: every column comes back, so the message can list them
    assert read_table(wide.encode(), "o.csv", _spec(), columns=["Nope"]).width == 5


def test_plain_local_files_are_read_from_their_path_and_the_rest_from_bytes(tmp_path):
    from churn_assets.lib.source_files import read_local_table

    (tmp_path / "o.csv").write_text(CSV)
    (tmp_path / "o.csv.gz").write_bytes(gzip.compress(CSV.encode()))
    (tmp_path / "latin.csv").write_bytes("id,Ort\n1,Köln\n".encode("latin-1"))
    cols = ["CustomerID", "InvoiceNo"]
    frame = read_local_table(str(tmp_path / "o.csv"), "o.csv", _spec(), cols, {})
    assert frame is not None and frame.columns == cols and frame.height == 3
    assert read_local_table(str(tmp_path / "o.csv.gz"), "o.csv.gz", _spec(), cols, {}) is None
    # not UTF-8: left to the byte reader, which names the offending byte
    assert read_local_table(str(tmp_path / "latin.csv"), "latin.csv", _spec(), ["id"], {}) is None
    latin = _spec(encoding="latin-1")
    assert read_local_table(str(tmp_path / "latin.csv"), "latin.csv", latin, ["id"], {}) is None


def _hive_folder(root: Path, days: int = 3) -> Path:
    """Events in a Hive-style folder: every day's file is ``part-0.parquet``."""
    for d in range(days):
        day = root / f"date=2024-01-{d + 1:02d}"
        day.mkdir(parents=True)
        pl.DataFrame(
            {
                "id": [f"u{i}" for i in range(4)],
                "ts": [dt.datetime(2024, 1, d + 1, 10 + i) for i in range(4)],
                "amount": [1.0, 2.0, 3.0, 4.0],
            }
        ).write_parquet(day / "part-0.parquet")
    return root


def test_a_hive_style_folder_gets_one_partition_per_file(tmp_path):
    """Files of the same name in their own folders are partitions of their own, keyed by
    their path under the source folder (a file directly in it keeps its name)."""
    from churn_assets.lib.ingest import file_partition_key, transaction_files

    events = _hive_folder(tmp_path / "events")
    cfg = tmp_path / "events.yaml"
    cfg.write_text(
        "name: events\ntransactions:\n"
        f"  path: {events}\n  customer_id: id\n  timestamp: ts\n  amount: amount\n"
        "labels:\n  source: transactions\n  horizon_days: 1\n"
    )
    files = transaction_files(load_dataset_config(str(cfg)), str(tmp_path / "landing"))
    assert list(files) == [f"date=2024-01-0{d}_part-0.parquet" for d in (1, 2, 3)]
    assert files["date=2024-01-02_part-0.parquet"].endswith("date=2024-01-02/part-0.parquet")
    assert file_partition_key("s3://b/landing/tx/2011-03 (1).csv", "s3://b/landing/tx") == (
        "2011-03__1_.csv"
    )


def test_draft_config_of_a_folder_judges_every_file_and_takes_the_fraction_of_the_worst(
    tmp_path,
):
    """From the command line, a folder of monthly exports: its lines are counted in every
    file, and since each file is checked on its own, the drafted share of lines that must
    name a customer is the lowest of any file's."""
    from click.testing import CliRunner

    from churn_assets.cli import main

    folder = tmp_path / "monthly"
    folder.mkdir()
    for month, missing in ((1, 2), (2, 10), (3, 0)):
        rows = [
            (f"{month}{i:03d}", "" if i < missing else f"c{i % 7}", f"2024-0{month}-{1 + i:02d}")
            for i in range(20)
        ]
        text = "invoice,customer_id,ts,amount\n" + "".join(f"{a},{b},{c},5.0\n" for a, b, c in rows)
        (folder / f"2024-0{month}.csv").write_text(text)
    out = tmp_path / "draft.yaml"
    result = CliRunner().invoke(
        main, ["draft-config", str(folder), "--timestamp", "ts", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "12 of 60 lines in the folder's files have no customer id" in text
    assert "customer_id_required_fraction: 0.45" in text  # 2024-02.csv: 10 of 20 named
    assert "2024-02.csv names one on 50%" in text
    cfg = load_dataset_config(str(out))
    res = ingest_transactions(cfg, str(tmp_path))
    assert res.rows == 60


def test_a_line_with_more_fields_than_the_header_says_the_separator_may_differ():
    """One month exported with ';' and decimal commas in a folder of ',' files."""
    from churn_assets.lib.source_files import parse_csv_text

    with pytest.raises(UnreadableFile, match="more fields than the header at separator ','"):
        parse_csv_text("InvoiceNo;CustomerID;Amount\n536365;17850;2,55\n", separator=",")


def _ingest_orders(tmp_path: Path, text: str):
    """``text`` landed as ``orders.csv`` and ingested with the Online Retail columns."""
    landing = tmp_path / "landing" / "t"
    landing.mkdir(parents=True)
    (landing / "orders.csv").write_text(text)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "name: t\ntransactions:\n  path: t/orders.csv\n  customer_id: CustomerID\n"
        "  timestamp: InvoiceDate\n  quantity: Quantity\n  unit_price: UnitPrice\n"
        "  invoice_id: InvoiceNo\nlabels:\n  source: transactions\n  horizon_days: 1\n"
    )
    return ingest_transactions(load_dataset_config(str(cfg)), str(tmp_path / "landing"))


def test_a_totals_row_at_the_end_of_an_export_is_skipped_and_counted(tmp_path):
    """Excel's "Total,,,12345.67" under the lines: no row at all (not a line without a
    customer, nor a bad amount); a line whose invoice is "TOTAL" but names a customer stays."""
    res = _ingest_orders(
        tmp_path, CSV.replace("536380,", "TOTAL,") + "Total,,,\r\nGrand total:,,,\n"
    )
    assert res.rows == 3 and res.total_rows == 2
    assert "TOTAL" in res.frame["invoice_id"].to_list()
    check = files_check("raw_transactions", res, None)
    assert check.passed and "2 totals row(s) skipped" in check.description


def test_a_reports_footer_lines_are_skipped_not_unlabelled_customers(tmp_path):
    """A CRM export ends with "Report generated by ..." and "Confidential - internal use
    only" alone in the first column: no customers (they would be scored and served), no
    ``allow_unlabelled`` in the draft. A two-word id alone ("ACME Corp") and a sentence with
    other fields beside it stay rows."""
    rows = [f"C{i},{20 + i % 50},{'basic' if i % 3 else 'pro'},{i % 4 == 0:d}" for i in range(60)]
    footer = (
        '"Report generated by SalesCRM on 2025-03-02 14:00"\nConfidential - internal use only\n'
    )
    text = "account,age,plan,churned\n" + "\n".join(rows) + "\n\n" + footer
    csv = tmp_path / "export.csv"
    csv.write_text(text)
    draft = draft_config(str(csv), label="churned")
    assert "allow_unlabelled" not in draft and "(60 rows read)" in draft
    cfg = tmp_path / "export.yaml"
    cfg.write_text(draft)
    res = ingest_customers(load_dataset_config(str(cfg)), str(tmp_path))
    assert res.rows == 60 and res.note_rows == 2 and res.empty_rows == 1
    check = files_check("raw_customers", res, None)
    assert check.passed and "2 note line(s) skipped" in check.description
    csv.write_text(text.replace(footer, "ACME Corp,,,\nthe big account,30,pro,1\n"))
    res = ingest_customers(load_dataset_config(str(cfg)), str(tmp_path))
    assert res.note_rows == 0 and {"ACME Corp", "the big account"} <= set(res.frame["customer_id"])


def test_draft_config_of_a_folder_of_monthly_snapshots_keeps_each_customers_latest(tmp_path):
    """The same customers in three monthly files: the rows of every file are read, so the
    draft sees a customer's rows repeat and proposes ``latest_by`` on the month."""
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for m in (4, 5, 6):
        rows = "".join(
            f"C{i},2024-0{m},{10 + i + m},{'Yes' if i % 4 == 0 else 'No'}\n" for i in range(40)
        )
        (folder / f"2024-0{m}.csv").write_text("customer_id,month,tenure,Churn\n" + rows)
    text = draft_config(str(folder), label="Churn")
    assert "latest_by: {name: month" in text and "80 rows repeat a customer" in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_customers(load_dataset_config(str(out)), str(tmp_path))
    assert res.rows == 40 and res.earlier_rows == 80
    assert set(res.frame["tenure"]) == {16 + i for i in range(40)}  # June's rows


def test_draft_config_of_a_training_and_a_test_file_sharing_ids_says_what_to_do(tmp_path):
    """Kaggle's split churn tables: a training file writing ids as floats (``2.0``) and a
    test file with ``2``, different customers. Ingestion reads ``2.0`` as ``2``, so does the
    draft: it refuses the folder, naming the shared ids and the files, instead of a config
    whose ingestion quarantines every repeated customer."""
    from churn_assets.lib.config_draft import DraftError

    folder = tmp_path / "kaggle"
    folder.mkdir()
    head = "CustomerID,Age,Churn\n"
    train = "".join(f"{i}.0,{20 + i % 50},{float(i % 3 == 0)}\n" for i in range(1, 301))
    test = "".join(f"{i},{30 + i % 40},{i % 2}\n" for i in range(1, 61))
    (folder / "churn-training.csv").write_text(head + train)
    (folder / "churn-testing.csv").write_text(head + test)
    with pytest.raises(DraftError) as err:
        draft_config(str(folder), label="Churn")
    msg = str(err.value)
    assert "60 duplicates" in msg and "60 ids are in more than one file" in msg
    assert "'churn-testing.csv' and 'churn-training.csv'" in msg and "a prefix per file" in msg
    # with distinct ids the same folder drafts (the label's 1.0 and 1 are one value)
    (folder / "churn-testing.csv").write_text(
        head + "".join(f"T{i},{30 + i % 40},{i % 2}\n" for i in range(1, 61))
    )
    text = draft_config(str(folder), label="Churn")
    assert "latest_by" not in text and "churned_negative" not in text


def test_a_file_without_a_header_line_says_so_when_a_config_names_its_columns(tmp_path):
    """A hand-written config on a headerless export: the first line was read as the
    column names, and the problem says the file has no header line."""
    res = _ingest_orders(tmp_path, "".join(CSV.splitlines(keepends=True)[1:]))
    (problem,) = res.file_problems
    assert problem.problem == "missing column"
    assert "its first line holds values, not column names" in problem.hint


def test_a_column_renamed_in_letter_case_only_is_named_as_such(tmp_path):
    """A later export writes 'customerid' for the configured 'CustomerID': refused, as
    before, but the hint names the renamed column instead of 'skip_rows' and 'separator'."""
    res = _ingest_orders(tmp_path, CSV.replace("CustomerID", "customer id"))
    (problem,) = res.file_problems
    assert problem.message().startswith("orders.csv: missing column (column 'CustomerID')")
    assert problem.hint.endswith(
        "('customer id' differs from 'CustomerID' only in letter case, spaces or underscores: "
        "the export renamed it; land the file with the configured name)"
    )


def test_binary_data_named_like_a_csv_is_not_taken_for_an_encoding_problem():
    """A binary file with a .csv name (a renamed archive, random bytes) is refused as not a
    text file, not sent to the config's ``encoding``; text in another encoding still is."""
    from churn_assets.lib.source_files import read_csv_text

    junk = b"ID,x\n\x00\x80\x01\x02\x03,\xff\n" * 300
    with pytest.raises(UnreadableFile, match="not a text file"):
        read_csv_text(junk, encoding="utf-8")
    latin = "customer_id,plan\nC9,mensuel é\n".encode("latin-1")
    with pytest.raises(UnreadableFile, match="unknown encoding: byte 0xe9"):
        read_csv_text(latin, encoding="utf-8")


def test_a_named_pipe_in_the_landing_zone_is_not_read(tmp_path):
    """A named pipe in the landing folder blocked ingestion forever (open() waits for a
    writer, holding the ingest pool): only regular files are listed; links to files are
    followed (a landing folder of links into a data lake), a broken link is left out."""
    import os

    from churn_assets.lib.ingest import list_source_files

    folder = tmp_path / "transactions"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n")
    (tmp_path / "lake.csv").write_text("y\n")
    os.mkfifo(folder / "pipe.csv")
    os.symlink(tmp_path / "lake.csv", folder / "linked.csv")
    os.symlink(tmp_path / "gone.csv", folder / "broken.csv")
    names = [p.rsplit("/", 1)[-1] for p in list_source_files(str(folder))]
    assert names == ["a.csv", "linked.csv"]
    assert [p.rsplit("/", 1)[-1] for p in list_source_files(str(folder / "*.csv"))] == names


def test_a_decompression_bomb_is_refused_as_it_is_read():
    """An 18 MB .gz unpacking to 6 GB took 12 GB of memory before failing (or was killed):
    unpacking stops past 100 times the file's size (64 MB at least) with a clear reason."""
    import gzip
    import zipfile

    from churn_assets.lib.source_files import UnreadableFile, unpack

    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb") as f:
        for _ in range(20):
            f.write(b"0" * (10 << 20))  # 200 MB of one byte: about 200 KB packed
    with pytest.raises(UnreadableFile, match="refused as a decompression bomb"):
        unpack(packed.getvalue(), "orders.csv.gz")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z, z.open("o.csv", "w") as f:
        for _ in range(20):
            f.write(b"0" * (10 << 20))
    with pytest.raises(UnreadableFile, match="unpacks to more than 64 MB"):
        unpack(zipped.getvalue(), "orders.zip")
    table = b"id,amount\n" + b"C1,2.5\n" * 1000  # a real table unpacks as before
    assert unpack(gzip.compress(table), "t.csv.gz") == (table, "t.csv")


def test_a_workbook_spanning_billions_of_cells_is_refused_before_it_is_opened():
    """A 1.6 KB .xlsx naming one cell at XFD1048576 made the reader allocate 512 GB and
    abort the whole process (the run worker with it); so did one declaring four billion
    distinct strings. Both are refused, as unreadable files, before the reader sees them."""
    import zipfile

    from churn_assets.lib.source_files import UnreadableFile, read_spreadsheet

    def workbook(sheet: str, strings: str | None = None) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("xl/workbook.xml", "<workbook/>")
            z.writestr("xl/worksheets/sheet1.xml", sheet)
            if strings is not None:
                z.writestr("xl/sharedStrings.xml", strings)
        return out.getvalue()

    far = '<worksheet><sheetData><row r="1"><c r="A1"/></row><row r="1048576">'
    far += '<c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData></worksheet>'
    with pytest.raises(UnreadableFile, match="spans 17,179,869,184 cells"):
        read_spreadsheet(workbook(far))
    many = '<sst count="4000000000" uniqueCount="4000000000"><si><t>a</t></si></sst>'
    with pytest.raises(UnreadableFile, match="declares 4,000,000,000 distinct strings"):
        read_spreadsheet(
            workbook(
                '<worksheet><sheetData><row r="1"><c r="A1"/></row></sheetData></worksheet>', many
            )
        )


def test_a_parquet_dictionary_bomb_is_refused_before_it_is_spelled_out(tmp_path):
    """A 7 MB Parquet file of 500,000 rows pointing at one 200 KB category needed 100 GB
    once read as text (the process was killed); it is refused as a dictionary bomb, named,
    and a real dictionary-encoded file reads as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn_assets.lib.source_files import UnreadableFile, _read_parquet

    n = 500_000
    bomb = pa.table(
        {"category": pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), ["x" * 200_000])}
    )
    pq.write_table(bomb, tmp_path / "bomb.parquet")
    with pytest.raises(UnreadableFile, match="refused as a dictionary bomb"):
        _read_parquet(str(tmp_path / "bomb.parquet"), None)
    fine = pa.table({"category": pa.array(["toys", "books"] * 1000).dictionary_encode()})
    pq.write_table(fine, tmp_path / "fine.parquet")
    assert _read_parquet(str(tmp_path / "fine.parquet"), None).height == 2000


def _damaged_gzip(text: str) -> bytes:
    """A gzip file whose header and length are right but whose deflate bytes are not: as a
    copy broken in transit leaves it (zlib raises its own error, not an OSError)."""
    data = gzip.compress(text.encode(), mtime=0)
    return data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:]


def test_a_gzip_file_with_damaged_bytes_is_unreadable_not_a_crash(tmp_path):
    """Damaged bytes inside a gzip file raised zlib.error, which nothing caught: the landing
    run failed instead of quarantining the file, and churn draft-config printed a traceback.
    The file is now unreadable with its reason, and the other files are read."""
    bad = _damaged_gzip(CSV * 50)
    with pytest.raises(UnreadableFile, match="corrupt compressed file"):
        read_table(bad, "orders.csv.gz", _spec())
    (tmp_path / "orders.csv.gz").write_bytes(bad)
    with pytest.raises(DraftError, match=r"orders\.csv\.gz: corrupt compressed file"):
        draft_config(str(tmp_path / "orders.csv.gz"), timestamp="InvoiceDate")
    good = tmp_path / "good.csv.gz"
    good.write_bytes(gzip.compress(CSV.encode()))
    out = tmp_path / "draft.yaml"
    out.write_text(draft_config(str(good), timestamp="InvoiceDate").replace("good.csv.gz", "*.gz"))
    res = ingest_transactions(load_dataset_config(str(out)), str(tmp_path))
    (problem,) = res.file_problems
    assert problem.file == "orders.csv.gz" and "corrupt compressed file" in problem.message()
    assert res.rows == 3
