"""A first data set config drafted from a data file, for ``churn draft-config``.

Reads a sample of a CSV or Parquet file (the separator, encoding, decimal comma and
timestamp format found from the data), types every column with the same parsers ingestion
uses, and writes the YAML of ``docs/datasets.md`` with a comment on each choice it made:
columns left out (row numbers, free text, identifiers), the churn label's positive value,
the transaction columns it recognised. The draft is validated before it is returned.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
import yaml

from churn_assets.lib.datasets import PLATFORM_COLUMNS, is_time_zone, load_dataset_config
from churn_assets.lib.ingest import (
    SENTENCE,
    given_value,
    has_offset,
    label_key,
    label_keys,
    parse_expr,
    plain_id,
    second_pass,
    without_currency,
)
from churn_assets.lib.leakage import leaking_columns
from churn_assets.lib.source_files import (
    UnreadableFile,
    first_byte,
    holds_values,
    is_packed,
    kind_of,
    parse_csv_text,
    read_json_records,
    read_sample,
    read_spreadsheet,
    scan_csv_columns,
    sheet_names,
)

#: Bytes of a CSV file read to draft its config (cut at the last whole line).
SAMPLE_BYTES = 32 * 1024 * 1024
#: A text column with at most this many distinct values (or 5% of its rows) is categorical.
MAX_CATEGORIES = 100
#: Timestamp formats tried when ISO 8601 does not parse (day-first before month-first).
TIMESTAMP_FORMATS = (
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d-%m-%Y %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    # 12-hour clocks ("12/08/2025 02:17 PM"), as US exports write them
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%d/%m/%Y %I:%M:%S %p",
    "%d/%m/%Y %I:%M %p",
    "%Y-%m-%d %I:%M:%S %p",
    "%Y-%m-%d %I:%M %p",
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y%m%d",
)
#: Numbers taken for times by their size: format, unit, range (1979 to 2099 since 1970;
#: Excel's serial days 1954 to 2119).
EPOCH_RANGES = (
    ("epoch_s", "seconds", (3e8, 4.1e9)),
    ("epoch_ms", "milliseconds", (3e11, 4.1e12)),
    ("epoch_us", "microseconds", (3e14, 4.1e15)),
    ("excel", "days since 1899-12-30 (Excel's serial dates)", (20_000, 80_000)),
)
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d")


def _has_time(fmt: str) -> bool:
    """Whether the strptime format ``fmt`` reads a time of day (24- or 12-hour clock)."""
    return "%H" in fmt or "%I" in fmt


#: Label values that mean churned by their name (lower case, without ``_`` and spaces).
POSITIVE_LABEL_WORDS = (
    "churn",
    "churned",
    "left",
    "exited",
    "cancelled",
    "canceled",
    "closed",
    "lost",
    "terminated",
    "inactive",
    "attrited",
    "attritedcustomer",
    "lapsed",
)
#: Column names recognised (lower case, without ``_`` and spaces) when no option names them.
ID_NAMES = (
    *("customerid", "customer", "clientid", "accountid", "userid", "memberid", "id"),
    # German, French, Spanish / Portuguese and Dutch exports
    *("kundennummer", "kundennr", "kundenid", "kunde", "numeroclient", "idclient"),
    *("idcliente", "cliente", "klantnummer", "klantid", "klant"),
)
AMOUNT_NAMES = (
    *("amount", "total", "revenue", "sales", "value", "paymentamount"),
    *("betrag", "umsatz", "montant", "importe", "monto", "valor", "bedrag"),
)
#: Words in the name of a money column that is not named like :data:`AMOUNT_NAMES`
#: (``actual_amount_paid``, ``payment_value``, ``Purchase Amount (USD)``), in order of
#: preference.
AMOUNT_WORDS = (
    *("amount", "paid", "revenue", "sales", "spend", "spent", "value", "total"),
    *("betrag", "umsatz", "montant", "importe", "monto", "bedrag"),
)
QUANTITY_NAMES = ("quantity", "qty")
PRICE_NAMES = ("unitprice", "price")
INVOICE_NAMES = (
    *("invoiceno", "invoice", "invoiceid", "orderid", "order", "ordernumber"),
    # German, French, Spanish / Portuguese and Dutch exports
    *("belegnr", "belegnummer", "rechnungsnr", "rechnungsnummer", "bestellnr", "bestellnummer"),
    *("facture", "numerofacture", "commande", "factura", "pedido", "fatura", "factuurnummer"),
)
CATEGORY_NAMES = (
    *("category", "productcategory", "productgroup", "plan"),
    *("warengruppe", "kategorie", "categorie", "categoria", "categoría"),
)
COUNTRY_NAMES = ("country", "region")
#: Event-type columns of an activity log (``activity_only``), taken as its category.
EVENT_NAMES = ("event", "eventtype", "eventname", "action", "activity", "page")
SIGNUP_HINTS = (
    *("signup", "sign_up", "signed", "joined", "join", "created", "start", "since", "opened"),
    *("regist", "enrol", "onboard", "activat"),
)


class DraftError(ValueError):
    """The file or the options do not allow a config; the message says what to give."""


@dataclass
class _Column:
    source: str
    type: str
    note: str = ""
    format: str | None = None


@dataclass
class _Table:
    path: str
    format: str
    frame: pl.DataFrame
    encoding: str = "utf-8"
    separator: str = ","
    decimal: str = "."
    thousands: str = ""
    skip_rows: int = 0  # lines above the header
    sheet: tuple[str, ...] = ()  # the workbook's sheets of the table (spreadsheets)
    sheets: tuple[str, ...] = ()  # all of its sheets
    complete: bool = False  # every row of the file was read
    parts: tuple[tuple[str, int], ...] = ()  # a folder's files read, with their rows, in order


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.lower())


def _snake(name: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()
    return s or "column"


#: The last files of a folder whose rows a draft reads (a year of monthly snapshots).
FOLDER_FILES = 12


def _read(path: str, sample_rows: int, want: str | None = None) -> _Table:
    """A sample of the file's table: Parquet, a spreadsheet (the first sheet with a column
    named ``want``) or CSV (separator and encoding sniffed), compressed or not; without
    rows whose every field is empty (ingestion skips them). A folder (daily exports, monthly
    snapshots) is drafted from its last data file by name, with the rows of the others of
    the same settings and columns beside it (a customer's rows in several monthly
    snapshots then show), and read whole by the config."""
    folder = Path(path)
    if folder.is_dir():
        from churn_assets.lib.ingest import list_source_files

        files = list_source_files(str(folder))
        if not files:
            raise DraftError(f"{path}: a folder without data files (.csv, .parquet, .xlsx, ...)")
        recent = files[-FOLDER_FILES:]
        share = max(1_000, sample_rows // len(recent))
        table = _read(files[-1], share, want)
        others, parts = [], []
        for f in recent[:-1]:
            other = _read(f, share, want)
            same = (other.format, other.encoding, other.separator, other.skip_rows) == (
                table.format,
                table.encoding,
                table.separator,
                table.skip_rows,
            )
            # an earlier export may lack a column the source added since (or have one it
            # dropped): its rows count for the columns it shares with the last file
            shared = [c for c in table.frame.columns if c in other.frame.columns]
            if same and (want is None or want in shared) and 2 * len(shared) > table.frame.width:
                others.append(other.frame.select(shared))
                parts.append((Path(f).name, other.frame.height))
        table.parts = (*parts, (Path(files[-1]).name, table.frame.height))
        if others:
            frames = [f.cast(pl.String) if table.format != "parquet" else f for f in others]
            table.frame = pl.concat([*frames, table.frame], how="diagonal_relaxed").select(
                table.frame.columns
            )
        table.path = str(folder.resolve())
        table.complete = False  # one file of several
        return table
    table = _read_file(path, sample_rows, want)
    table.complete = table.complete and table.frame.height < sample_rows
    table.frame = table.frame.filter(~pl.all_horizontal(pl.all().is_null()))
    if table.frame.width >= 3:  # a report's footer line, as ingestion skips it
        first = pl.col(table.frame.columns[0]).cast(pl.String)
        filled = pl.sum_horizontal(pl.all().is_not_null())
        note = (filled == 1) & first.str.contains(SENTENCE).fill_null(False)
        table.frame = table.frame.filter(~note)
    return table


def _read_file(path: str, sample_rows: int, want: str | None = None) -> _Table:
    p = Path(path)
    if not p.is_file():
        raise DraftError(f"{path}: no such file")
    if p.suffix.lower() in (".parquet", ".pq"):
        frame = pl.scan_parquet(p).head(sample_rows).collect()
        return _Table(str(p.resolve()), "parquet", frame, complete=True)
    try:
        data, inner = read_sample(str(p), SAMPLE_BYTES)
        kind = kind_of(data, inner)
        if kind == "parquet":
            frame = pl.read_parquet(io.BytesIO(data), n_rows=sample_rows)
            return _Table(str(p.resolve()), "parquet", frame, complete=len(data) < SAMPLE_BYTES)
        if kind == "excel":
            return _read_sheet(p, data, sample_rows, want)
        if kind == "json":
            complete = len(data) < SAMPLE_BYTES
            if not complete:  # cut: whole records (lines) only, or all of it
                if first_byte(data) == b"[":
                    data, _ = read_sample(str(p), -1)
                    complete = True
                else:
                    data = data[: data.rindex(b"\n") + 1]
            frame = read_json_records(data, sample_rows)
            return _Table(str(p.resolve()), "json", frame, complete=complete)
    except UnreadableFile as e:
        raise DraftError(f"{path}: {e}") from e
    complete = len(data) < SAMPLE_BYTES
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # Excel's "Unicode Text": UTF-16 with a BOM
        encoding, text = "utf-16", data.decode("utf-16", errors="ignore")
        if not complete and "\n" in text:
            text = text[: text.rindex("\n") + 1]
    else:
        if not complete and b"\n" in data:
            data = data[: data.rindex(b"\n") + 1]
        for encoding in ("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8", "cp1252"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            encoding, text = "latin-1", data.decode("latin-1")
    lines = text.splitlines()[:50]
    try:
        separator = csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        separator = ","
    widths = [
        len(row) if any(c.strip() for c in row) else 0
        for row in csv.reader(lines, delimiter=separator)
    ]
    skip = _header_row(widths)
    _refuse_headerless(path, lines[skip] if skip < len(lines) else "", separator)
    try:
        frame = parse_csv_text(text, separator=separator, skip_rows=skip, n_rows=sample_rows)
    except UnreadableFile as e:
        detail = str(e).removeprefix("unreadable file: ")
        raise DraftError(f"{path}: not a readable CSV file ({detail})") from e
    table = _Table(
        str(p.resolve()), "csv", frame, encoding, separator, skip_rows=skip, complete=complete
    )
    _number_marks(table)
    return table


def _refuse_headerless(path: str, first: str, separator: str) -> None:
    """Files must start with a line of column names. A first line of values only (CDNOW's
    ``00001 19970101  1   11.77``) would read as names and lose that row: refused with
    the command that writes the file with a header line (and as CSV when its values are
    aligned by spaces, which no separator reads)."""
    fields = [f.strip() for f in first.split(separator)]
    if not holds_values(fields):
        return
    spaced = len(fields) == 1 and len(first.split()) > 1
    count = len(first.split()) if spaced else len(fields)
    names = ", ".join(f"'column_{i}'" for i in range(1, count + 1))
    sep = r"r'\s+'" if spaced else repr(separator)
    raise DraftError(
        f"{path}: the first line holds values, not column names ({first.strip()[:60]!r}"
        + (", separated by runs of spaces" if spaced else "")
        + "): the platform reads files whose first line names the columns. Write it with "
        f'a header line, naming the columns, e.g.: python -c "import pandas as pd; '
        f"pd.read_csv('{Path(path).name}', sep={sep}, header=None, dtype=str, "
        f"names=[{names}]).to_csv('{Path(path).stem}.csv', index=False)\""
    )


def _read_sheet(p: Path, data: bytes, sample_rows: int, want: str | None) -> _Table:
    """The first sheet of a workbook that has a column named ``want`` (else the first),
    with every sheet of the same columns (a table split by year, say) listed to stack."""
    names = sheet_names(data)
    heads = {n: read_spreadsheet(data, n, n_rows=1).columns for n in names}
    name = next(
        (n for n in names if want is None or any(_key(c) == _key(want) for c in heads[n])),
        names[0],
    )
    top = read_spreadsheet(data, name, header_row=None, n_rows=30)
    skip = _header_row(top.select(pl.sum_horizontal(pl.all().is_not_null())).to_series().to_list())
    if skip:
        heads = {n: read_spreadsheet(data, n, skip_rows=skip, n_rows=1).columns for n in names}
    stacked = tuple(n for n in names if set(heads[n]) == set(heads[name]))
    frame = read_spreadsheet(data, name, skip_rows=skip, n_rows=sample_rows)
    return _Table(
        str(p.resolve()),
        "excel",
        frame,
        sheet=stacked,
        sheets=tuple(names),
        skip_rows=skip,
        complete=len(stacked) == 1,
    )


#: Names of a column that orders a customer's rows over time (lower case, no separators).
PERIOD_NAMES = (
    "month",
    "date",
    "period",
    "snapshot",
    "snapshotdate",
    "asof",
    "asofdate",
    "week",
    "year",
    "yearmonth",
    "reportdate",
    "time",
)


def _latest_column(table: _Table, ident: str, label: str) -> _Column | None:
    """The column that tells a customer's rows apart over time (a month, a date): unique
    with the id, never blank, and typed as a date or named like a period; None without one."""
    frame = table.frame.filter(pl.col(ident).is_not_null())
    found = []
    for col in table.frame.columns:
        if col in (ident, label) or frame[col].null_count():
            continue
        if frame.select(pl.struct(ident, col).is_duplicated().any()).item():
            continue
        c = _column_type(table, col)
        named = _key(col) in PERIOD_NAMES
        if c.type in ("date", "datetime") or (named and c.type != "skip"):
            found.append((c.type not in ("date", "datetime"), not named, c))
    return min(found, key=lambda f: f[:2])[2] if found else None


def _header_row(widths: list[int]) -> int:
    """The header's line among a file's first lines, by their count of filled fields: the
    first at least as wide as most lines are, when every line above it is narrower (a title
    or notes); else 0."""
    filled = [w for w in widths if w]
    if not filled:
        return 0
    usual = Counter(filled).most_common(1)[0][0]
    first = next(i for i, w in enumerate(widths) if w >= usual)
    return first if usual > 1 else 0


_COMMA_NUMBER = re.compile(r"^\s*[-+]?[\d.\s\u00a0\u202f']*\d(,\d+)?\s*$")
_THOUSANDS = {".": re.compile(r"\d\.\d{3}(,|$)"), " ": re.compile(r"\d[ \u00a0\u202f]\d{3}")}
#: Digits grouped in threes by commas, nothing else: "2,502", "12,345,678" (never "2,50").
_COMMA_GROUPS = re.compile(r"^\s*[-+]?\d{1,3}(,\d{3})+\s*$")


def _number_marks(table: _Table) -> None:
    """Decimal comma (and a ``.`` or space thousands separator) when the text columns that
    look like numbers are written that way: some values with a comma, none with a dot
    decimal. A column whose commas all group digits in threes ("2,502", "12,345") is an
    English export's thousands comma instead (``thousands: ","``): read as a decimal comma
    it would shrink every value from 1,000 up a thousandfold."""
    comma = 0
    grouped = 0
    seen: set[str] = set()
    for col in table.frame.columns:
        raw = table.frame.get_column(col)
        if raw.dtype != pl.String or not raw.str.contains(",", literal=True).any():
            continue  # no comma: neither mark (a wide table's 300 number columns: 4 s saved)
        text = raw.to_frame().select(without_currency(pl.col(col)))[col]  # "269,47 €"
        values = text.drop_nulls().str.strip_chars()
        values = values.filter(values != "").head(5000).to_list()
        if values and all(_COMMA_NUMBER.match(v) for v in values):
            with_comma = [v for v in values if "," in v]
            if not with_comma:
                continue
            marks = {m for m, rx in _THOUSANDS.items() if any(rx.search(v) for v in values)}
            if not marks and all(_COMMA_GROUPS.match(v) for v in with_comma):
                grouped += 1
                continue
            comma += 1
            seen |= marks
    if comma:
        table.decimal = ","
        table.thousands = "." if "." in seen else " " if " " in seen else ""
    elif grouped:
        table.thousands = ","


def _parses(table: _Table, col: str, target: str, fmt: str | None = None) -> float:
    """Share of the non-blank values of ``col`` that parse as ``target``."""
    return _parsed(table, col, target, fmt)[0]


def _parsed(
    table: _Table, col: str, target: str, fmt: str | None = None
) -> tuple[float, pl.Series]:
    """:func:`_parses` and the parsed values (as ingestion would type them). The plain
    parse is tried first: when it reads every value, ingestion's second, lenient pass
    (currency signs, ISO dates; regular expressions, the slow part on a wide table) adds
    nothing."""
    frame = table.frame.get_column(col).to_frame()  # a select on one column, not all
    given = given_value(col, target)
    parsed = _parse_expression(table, col, target, fmt, False)
    # an integer column is a number column whose numbers are whole
    number = _parse_expression(table, col, "numeric", fmt, False) if target == "integer" else parsed
    plain = frame.select(given=given, number=number, parsed=parsed)
    present = plain.filter(pl.col("given"))
    if present.height and present["number"].null_count() == 0:
        return float(present["parsed"].is_not_null().mean()), plain["parsed"]
    parsed = _parse_expression(table, col, target, fmt)
    s = frame.select(given=given, parsed=parsed)
    present = s.filter(pl.col("given"))  # "N/A", "-" in a number column are missing values
    share = float(present["parsed"].is_not_null().mean()) if present.height else 0.0
    return share, s["parsed"]


def _parse_expression(
    table: _Table, col: str, target: str, fmt: str | None, lenient: bool = True
) -> pl.Expr:
    """``col`` typed as ``target``, as ingestion types it (without its second, lenient pass
    unless ``lenient``)."""
    parsed = parse_expr(
        col,
        None,
        target,
        fmt,
        decimal=table.decimal,
        thousands=table.thousands,
        offset=target == "datetime" and fmt is None and has_offset(table.frame[col]),
    )
    if lenient and table.frame.schema[col] == pl.String:
        # what ingestion reads in its second pass: "$1,234.50", an ISO date
        lenient = second_pass(parsed, col, target, table.decimal)
        parsed = parsed if lenient is None else lenient
    return parsed


#: Words in the name of a column of codes written in digits (``zip``, ``Postal Code``,
#: ``area_code``): categories (with their leading zeros), never numbers.
CODE_WORDS = ("zip", "postal", "postcode", "plz", "areacode", "fips")


def _column_type(table: _Table, col: str) -> _Column:
    s = table.frame[col]
    if table.format == "parquet" and s.dtype != pl.String:
        if s.dtype.is_integer():
            typ = "integer"
        elif s.dtype.is_numeric():
            typ = "numeric"
        elif s.dtype == pl.Boolean:
            typ = "boolean"
        elif s.dtype == pl.Date:
            return _Column(col, "date")
        elif isinstance(s.dtype, pl.Datetime):
            return _Column(col, "datetime")
        else:
            typ = "categorical"
        if typ == "integer" and _row_number(s):
            return _Column(col, "skip", "a row number")
        if s.null_count() == 0 and s.n_unique() == 1:  # as a text file's column would be
            return _Column(col, "skip", f"{s[0]!r} in every row read: says nothing")
        return _Column(col, typ)
    text = s.cast(pl.String).str.strip_chars()
    present = text.filter(text.is_not_null() & (text != ""))
    if present.len() == 0:
        return _Column(col, "skip", "always empty")
    if present.n_unique() == 1 and present.len() == text.len():
        return _Column(col, "skip", f"{present[0]!r} in every row read: says nothing")
    if any(w in _key(col) for w in CODE_WORDS):  # digits that name a place, not a number
        distinct = present.n_unique()
        if distinct <= MAX_CATEGORIES:
            return _Column(col, "categorical")
        return _Column(
            col,
            "skip",
            f"a code with {distinct:,} values in {present.len():,} rows: too many to be a "
            "category (a region column says more)",
        )
    share, integers = _parsed(table, col, "integer")
    if share == 1.0:
        if _row_number(integers):
            return _Column(col, "skip", "a row number")
        if _yyyymmdd(table, col, integers):
            return _Column(col, "date", format="%Y%m%d")
        return _Column(col, "integer")
    if _parses(table, col, "numeric") == 1.0:
        return _Column(col, "numeric")
    if not _all_have_digits(present):  # "Yes", "Fiber optic": no date (100k rows: 2 s saved)
        return _category_or_text(col, present)
    for fmt in DATE_FORMATS:
        if _parses(table, col, "date", fmt) == 1.0:
            return _Column(col, "date", format=fmt)
    if _parses(table, col, "datetime") == 1.0:
        return _Column(col, "datetime")
    for fmt in TIMESTAMP_FORMATS:  # "03/12/2026 14:05", "12/03/2026 02:05 PM"
        if _has_time(fmt) and _parses(table, col, "datetime", fmt) == 1.0:
            return _Column(col, "datetime", format=fmt)
    return _category_or_text(col, present)


def _spellings(present: pl.Series) -> str:
    """A CHECK note when categories differ only in case, spacing or punctuation ('Credit
    Card', 'credit card', 'Credit-Card'): each is a category of its own to the models."""
    values = present.unique().sort()
    keys = values.str.to_lowercase().str.replace_all(r"[\s_\-.]+", "")
    groups = (
        pl.DataFrame({"v": values, "k": keys})
        .group_by("k", maintain_order=True)
        .agg(pl.col("v"))
        .filter(pl.col("v").list.len() > 1)
    )
    if groups.is_empty():
        return ""
    shown = "; ".join(" / ".join(map(repr, g)) for g in groups["v"].head(3).to_list())
    return (
        f"CHECK: {groups.height} value(s) spelled more than one way ({shown}): each spelling "
        "is a category of its own; write them alike before landing if they mean the same"
    )


def _all_have_digits(present: pl.Series) -> bool:
    """Whether every distinct value (but the texts that mean missing) holds a digit, as
    every date, time and number does."""
    from churn_assets.lib.ingest import MISSING_TOKENS

    values = present.unique()
    values = values.filter(~values.is_in(list(MISSING_TOKENS)))
    return bool(values.str.contains(r"\d").all())


def _category_or_text(col: str, present: pl.Series) -> _Column:
    """A categorical column, or one left out: too many distinct values to be a category."""
    distinct = present.n_unique()
    if distinct <= MAX_CATEGORIES or distinct <= 0.05 * present.len():
        return _Column(col, "categorical", _spellings(present))
    return _Column(
        col,
        "skip",
        f"{distinct:,} distinct values in {present.len():,} rows: free text or an identifier",
    )


#: Words in the name of a column of dates written as whole numbers (``20150301``).
DATE_HINTS = ("date", "time", "day", "expir", "datum", "fecha", *SIGNUP_HINTS)


def _yyyymmdd(table: _Table, col: str, integers: pl.Series) -> bool:
    """Whole numbers that are dates written as yyyymmdd (KKBox's
    ``registration_init_time``: 20150301), in a column named like a date."""
    if not any(h in col.lower() for h in DATE_HINTS):
        return False
    values = integers.drop_nulls()
    if values.len() == 0 or values.min() < 19000101 or values.max() > 21001231:  # type: ignore[operator]
        return False
    return _parses(table, col, "date", "%Y%m%d") == 1.0


def _row_number(s: pl.Series) -> bool:
    values = s.drop_nulls()
    if values.len() < 3 or values.len() != s.len():
        return False
    first = int(values[0])
    return first in (0, 1) and values.to_list() == list(range(first, first + values.len()))


def _column_of_ids(payments: _Table, ids: pl.Series, ident: str) -> str:
    """The column of the transactions file holding the customer table's ids (``ident``
    there) under another name (``member`` for ``email``): the one whose values are most
    often such ids, at least half of them; else one named like a customer id."""
    known = ids.cast(pl.String).drop_nulls().unique()
    best, share = None, 0.5
    for col in payments.frame.columns:
        values = payments.frame[col].cast(pl.String).drop_nulls()
        if values.len():
            found = float(values.is_in(known.implode()).mean() or 0.0)
            if found > share:
                best, share = col, found
    best = best or _find(payments, None, ID_NAMES, "customer id")
    if best is None:
        raise DraftError(
            f"the transactions file has no column {ident!r} (the customer table's id) and no "
            "column whose values are mostly those ids: rename its customer id column to "
            f"{ident!r}, or check that both files name customers the same way"
        )
    return best


def _find(table: _Table, given: str | None, names: tuple[str, ...], what: str) -> str | None:
    if given is not None:
        if given not in table.frame.columns:
            raise DraftError(
                f"{what} column {given!r} is not in the file; its columns: "
                f"{', '.join(table.frame.columns)}"
            )
        return given
    by_key = {_key(c): c for c in table.frame.columns}
    # a nested JSON field ("metadata.plan") also goes by its own name
    for c in table.frame.columns:
        by_key.setdefault(_key(c.rsplit(".", 1)[-1]), c)
    return next((by_key[n] for n in names if n in by_key), None)


#: Parts of the name of an id column not named like :data:`ID_NAMES` (``CLIENTNUM``,
#: ``account_no``, ``subscriber_key``): owners, and endings that number things.
ID_OWNER_WORDS = ("customer", "client", "account", "member", "user", "subscriber", "cust")
ID_ENDINGS = ("id", "num", "no", "nr", "number", "key", "code")


#: A repeating column named for an owner and like a number (``cust_id`` of a customer-month
#: table) is taken for the id when it has at least this many distinct values.
MIN_REPEATED_IDS = 20


def _distinct_id(table: _Table, taken: tuple[str | None, ...]) -> str | None:
    """A column that identifies customers though not named like :data:`ID_NAMES`: named
    for an owner (``CLIENTNUM``) or ending like a number (``account_no``), text or whole
    numbers, present and distinct in every row read, and not a row number (1, 2, 3 … in a
    column named for no owner, ``RowNumber``: an owner's sequential ids, an account number
    a database counted up and the export sorted by, are ids).
    Without one, a column named for an owner and ending like a number (``cust_id``) whose
    values repeat: the id of a table with several rows per customer (``latest_by``), or of
    one with duplicates, which the draft then refuses naming them."""
    repeated = None
    for col in table.frame.columns:
        key = _key(col)
        owner = any(w in key for w in ID_OWNER_WORDS)
        if col in taken or not (owner or key.endswith(ID_ENDINGS)):
            continue
        s = table.frame[col]
        text = s.cast(pl.String).str.strip_chars()
        if text.null_count() or (text == "").any() or s.dtype.is_float():
            continue
        if text.n_unique() != text.len():
            enough = text.n_unique() >= max(MIN_REPEATED_IDS, 0.05 * text.len())
            if repeated is None and owner and key.endswith(ID_ENDINGS) and enough:
                repeated = col
            continue
        share, integers = _parsed(table, col, "integer")
        if share == 1.0 and _row_number(integers) and not (owner or _zero_padded(text)):
            continue
        return col
    return repeated


def _zero_padded(text: pl.Series) -> bool:
    """Whether whole numbers are written to a fixed width with leading zeros (``0000042``):
    a code an export formats, not a row number."""
    return bool(text.str.contains(r"^0\d").any()) and text.str.len_chars().n_unique() == 1


#: Column names (as :func:`_key` gives them) of the currency beside an amount.
CURRENCY_NAMES = ("currency", "currencycode", "curr", "waehrung", "währung", "devise", "moneda")


def _cents(table: _Table, column: str) -> list[str]:
    """``amount_scale: 0.01`` when ``column`` holds minor units: its name says cents
    (``amount_cents``, ``price_in_cents``), or its values are all whole numbers beside a
    currency column (what payment APIs such as Stripe export; marked CHECK)."""
    key = _key(column)
    if "cents" in key:
        return ["  amount_scale: 0.01   # the column holds cents: amounts in currency units"]
    if not any(_key(c) in CURRENCY_NAMES for c in table.frame.columns):
        return []
    values = table.frame[column]
    if not values.dtype.is_numeric():
        values = values.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    values = values.drop_nulls()
    if values.len() == 0 or not bool((values.round(0) == values).all()):
        return []
    return [
        "  amount_scale: 0.01   # CHECK: whole-number amounts beside a currency column, as "
        "payment APIs export cents; drop it if they are currency units"
    ]


def _money_column(table: _Table, taken: tuple[str, ...]) -> str | None:
    """A column of numbers whose name holds one of :data:`AMOUNT_WORDS` (the first word
    that any column's name holds), not one of the columns ``taken``."""
    for word in AMOUNT_WORDS:
        for col in table.frame.columns:
            if col in taken or word not in _key(col):
                continue
            if table.frame[col].dtype.is_numeric() or _parses(table, col, "numeric") >= 0.99:
                return col
    return None


#: Label values that say the outcome is not known (compared by :func:`_key`, lower case).
UNKNOWN_LABELS = ("unknown", "unk", "na", "n/a", "nan", "none", "null", "pending", "tbd", "?")
#: Label column names (as :func:`_key` gives them, after a leading ``is``, ``has`` or
#: ``still``) that say the customer stayed: their yes / 1 / true means retained.
RETAINED_LABEL_NAMES = (
    *("retained", "retention", "retain", "active", "stayed", "stay", "renewed", "renewal"),
    *("renew", "loyal", "subscribed", "current", "alive", "survived", "activecustomer"),
)


def _means_retained(label: str) -> bool:
    """Whether the label column's name says the customer stayed (``retained``,
    ``is_active``, ``still_subscribed``)."""
    key = _key(label)
    for prefix in ("is", "has", "still"):
        if key.startswith(prefix) and key[len(prefix) :] in RETAINED_LABEL_NAMES:
            return True
    return key in RETAINED_LABEL_NAMES


def _shared_ids(table: _Table, ident: str) -> str:
    """What a folder's files repeating each other's ids may mean, when they do."""
    if len(table.parts) < 2:
        return ""
    frame = table.frame.select(plain_id(pl.col(ident).cast(pl.String)).alias("id")).with_columns(
        _file_rows(table)
    )
    spread = frame.drop_nulls("id").group_by("id").agg(pl.col("file").n_unique().alias("files"))
    shared = spread.filter(pl.col("files") > 1)
    if shared.is_empty():
        return ""
    example = shared["id"].sort()[0]
    files = frame.filter(pl.col("id") == example)["file"].unique(maintain_order=True).to_list()
    return (
        f". {shared.height:,} ids are in more than one file (e.g. {example!r} in "
        f"{' and '.join(map(repr, files[:2]))}): if the files hold different customers (a "
        "training and a test file), land one of them, or make the ids distinct before "
        "landing (a prefix per file); if they are snapshots of the same customers, name the "
        "files so that name order is time order and set customers.latest_by: file (each "
        "customer's rows from the last file holding it are kept), or add a column that "
        "dates each file's rows (customers.latest_by: {name: ..., type: date})"
    )


#: A year-first date in a file name (``2026-12-01``, ``20261201``, ``2024_06``): files so
#: named sort by their date, so name order is time order.
_NAME_DATE = re.compile(
    r"(?<!\d)(19|20)\d{2}[-_.]?(0[1-9]|1[0-2])([-_.]?(0[1-9]|[12]\d|3[01]))?(?!\d)"
)


def _file_rows(table: _Table) -> pl.Series:
    """The file each row of a folder's table was read from."""
    return pl.Series("file", [name for name, n in table.parts for _ in range(n)], pl.String)


def _dated_snapshots(table: _Table, ident: str) -> bool:
    """Whether a folder's files are full snapshots of the customers over time: at least two
    files, every name holding a year-first date (so name order is time order), and no id
    repeated within a file. Their repeated ids are then the same customers later
    (``latest_by: file``), not a training and a test file naming others alike."""
    names = [name.rsplit("/", 1)[-1] for name, _ in table.parts]
    if len(names) < 2 or not all(_NAME_DATE.search(n) for n in names):
        return False
    ids = table.frame.select(plain_id(pl.col(ident).cast(pl.String)).alias("id"))
    ids = ids.with_columns(_file_rows(table)).drop_nulls("id")
    return not ids.select(pl.struct("file", "id").is_duplicated().any()).item()


def _positive(table: _Table, label: str) -> tuple[str, str, list[str] | None]:
    """The label value that means churned, why (compared as ingestion compares it), and
    the values that mean retained when there are more than two: a third that says the
    outcome is not known (``Unknown``), or several named by a churn word's column
    (``Stayed``, ``Joined`` beside ``Churned``)."""
    values = table.frame[label].cast(pl.String).str.strip_chars().drop_nulls()
    values = values.filter(values != "")
    counts = values.value_counts(sort=True).rows()
    unknown = [(v, n) for v, n in counts if _key(v) in UNKNOWN_LABELS]
    known = _same_values([(v, n) for v, n in counts if _key(v) not in UNKNOWN_LABELS])
    if unknown and len(known) == 2:
        positive, why = _positive_of(known, label)
        negative = next(v for v, _ in known if v != positive)
        shown = ", ".join(f"{v!r} ({n:,})" for v, n in unknown)
        return positive, f"{why}; CHECK: {negative!r} means retained, {shown}: no label", [negative]
    if len(counts) > 3 and _column_type(table, label).type in ("date", "datetime"):
        raise DraftError(
            f"the label column {label!r} holds dates (e.g. {counts[0][0]!r}): a churn date is "
            "no label as it is. Add a churn flag beside it, 1 where the date is set, e.g. "
            f"pandas: df['churned'] = df[{label!r}].notna().astype(int), then give "
            f"--label churned; the draft leaves {label!r} out (it would leak the outcome)"
        )
    positive, why = _positive_of(_same_values(counts), label)
    if len(_same_values(counts)) == 1:  # all "No" (or all "Yes"): one class to learn from
        ((only, n),) = _same_values(counts)
        why += (
            f"; CHECK: every labelled row holds {only!r} ({n:,}): one class, nothing to train "
            "on until the table holds both"
        )
    values = [v for v, _ in counts]
    keys = dict(zip(values, label_keys(values), strict=True))
    key = label_keys([positive])[0]
    others = [v for v in values if keys[v] != key]  # '1.0' is '1', as ingestion reads it
    return positive, why, others if len({keys[v] for v in others}) > 1 else None


def _same_values(counts: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Label values and counts with the spellings ingestion reads as one value ("Yes",
    "yes", "YES"; "1", "1.0") added up under the most common one, most common first."""
    merged: dict[str, tuple[str, int]] = {}
    for (value, n), key in zip(counts, label_keys([v for v, _ in counts]), strict=True):
        first, total = merged.get(key, (value, 0))
        merged[key] = (first, total + n)
    return sorted(merged.values(), key=lambda vn: -vn[1])


def _positive_of(counts: list[tuple[str, int]], label: str) -> tuple[str, str]:
    """:func:`_positive` of a label column's values and their counts, most common first. A
    column named for staying (:func:`_means_retained`) has its yes / 1 / true retained."""
    labels = pl.DataFrame({"v": [v for v, _ in counts]}, schema={"v": pl.String})
    keys = set(labels.select(label_key(pl.col("v")))["v"])
    stays = _means_retained(label)
    if keys and keys <= {"1.0", "0.0"}:
        if stays and keys == {"1.0", "0.0"}:
            return "0", f"CHECK: 0 means churned: the column's name ({label!r}) says 1 stayed"
        return "1", "1 means churned"
    for yes, no in (("yes", "no"), ("true", "false"), ("y", "n"), ("t", "f")):
        if keys and keys <= {yes, no}:
            if stays and keys == {yes, no}:
                original = next((v for v, _ in counts if v.lower() == no), no)
                return original, (
                    f"CHECK: {original!r} means churned: the column's name ({label!r}) says "
                    f"{yes!r} stayed"
                )
            original = next((v for v, _ in counts if v.lower() == yes), yes)
            return original, f"{original!r} means churned"
    churn_words = [v for v, _ in counts if _key(v) in POSITIVE_LABEL_WORDS]
    if len(churn_words) == 1 and len(counts) >= 2:
        others = ", ".join(repr(v) for v, _ in counts if v != churn_words[0])
        return churn_words[0], (
            f"CHECK: {churn_words[0]!r} is taken to mean churned by its name; {others} count "
            "as retained"
        )
    if len(counts) == 2:
        rarer = counts[-1][0]
        return rarer, (
            f"CHECK: {rarer!r} (the rarer of {counts[0][0]!r} and {rarer!r}) is taken to mean "
            "churned"
        )
    shown = ", ".join(f"{v!r} ({n:,})" for v, n in counts[:10])
    raise DraftError(
        f"the label column {label!r} has {len(counts)} values ({shown}); a churn label has two "
        "(and may have one that says the outcome is not known, like 'Unknown'): pick another "
        "column with --label, or write labels.churned_positive and labels.churned_negative "
        "by hand (docs/datasets.md)"
    )


_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([Zz]|[+-]\d{2}:?\d{2})?$"


#: A time zone name ending a timestamp ("2023-03-01 08:26:00 Europe/Berlin").
_ZONE_NAME = r"\s((?:[A-Za-z_]+/)+[A-Za-z0-9_+\-]+|UTC|GMT)$"


def _timestamp_format(
    table: _Table, col: str, given: str | None = None
) -> tuple[str | None, str, str | None]:
    """The ``timestamp_format`` of ``col`` (None: ISO 8601), a note when the day and the
    month could be either way round, and the ``timezone`` named after every time; with
    ``given`` (``--timestamp-format``), that format once it reads the column."""
    if given is not None:
        return _given_timestamp_format(table, col, given), "", None
    values = table.frame[col].cast(pl.String).str.strip_chars().drop_nulls().head(5000)
    zones = values.str.extract(_ZONE_NAME, 1)
    if values.len() and zones.null_count() == 0:
        return _zoned_format(table, col, zones.unique().sort().to_list())
    return (*_plain_timestamp_format(table, col, values), None)


def _zoned_format(table: _Table, col: str, zones: list[str]) -> tuple[str, str, str]:
    """Timestamps that end with a time zone's name: the format with the name as text and
    the zone as ``timezone`` (polars' ``%Z`` reads a name without applying it)."""
    example = table.frame[col].drop_nulls()[0]
    if len(zones) > 1:
        raise DraftError(
            f"the timestamps of column {col!r} name {len(zones)} time zones "
            f"({', '.join(zones[:4])}; e.g. {example!r}): write them with UTC offsets "
            "('2023-03-01 08:26:00+01:00') before landing, or land each zone's lines as a "
            "table of its own with its timezone"
        )
    zone = zones[0]
    if not is_time_zone(zone):
        raise DraftError(
            f"the timestamps of column {col!r} end with {zone!r} (e.g. {example!r}), not an "
            "IANA time zone name: write them with UTC offsets before landing"
        )
    stems = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", *TIMESTAMP_FORMATS)
    for stem in stems:
        fmt = f"{stem} {zone}"
        if _parses(table, col, "datetime", fmt) >= 0.99:
            return fmt, f"CHECK: local times in {zone}, converted to UTC (timezone)", zone
    raise DraftError(
        f"the timestamps of column {col!r} (e.g. {example!r}) end with the time zone {zone!r} "
        f"but match no common format before it: set timestamp_format ('%Y-%m-%d %H:%M:%S "
        f"{zone}') and timezone: {zone} in the draft"
    )


def _given_timestamp_format(table: _Table, col: str, fmt: str) -> str:
    """``fmt`` when it reads at least 99% of the times in ``col``; :class:`DraftError`
    naming a time it does not read otherwise."""
    share, parsed = _parsed(table, col, "datetime", fmt)
    if share >= 0.99:
        return fmt
    given = table.frame.select(given=given_value(col, "datetime"), value=pl.col(col))
    unread = given.filter(pl.col("given") & parsed.is_null())["value"]
    example = f" (e.g. {str(unread[0])!r})" if unread.len() else ""
    raise DraftError(
        f"--timestamp-format {fmt!r} reads {share:.0%} of the times in column {col!r}"
        f"{example}: give the strptime format they are written in"
    )


def _plain_timestamp_format(table: _Table, col: str, values: pl.Series) -> tuple[str | None, str]:
    """:func:`_timestamp_format` of timestamps without a zone name."""
    numbers = values.cast(pl.Float64, strict=False)
    if values.len() and numbers.null_count() == 0:
        for fmt, unit, (low, high) in EPOCH_RANGES:
            if low <= numbers.min() and numbers.max() <= high:
                first = _parsed(table, col, "datetime", fmt)[1].drop_nulls()[0]
                since = "" if fmt == "excel" else " since 1970-01-01 UTC"
                return fmt, (
                    f"CHECK: numbers read as {unit}{since} "
                    f"({values[0]} is {first:%Y-%m-%d %H:%M:%S})"
                )
    iso = values.str.contains(_ISO).mean() or 0.0
    if iso >= 0.99 and _parses(table, col, "datetime") >= 0.99:
        return None, ""
    found = [
        fmt
        for fmt in TIMESTAMP_FORMATS
        if _parses(table, col, "datetime" if _has_time(fmt) else "date", fmt) >= 0.99
    ]
    if found:
        fmt = found[0]
        swapped = fmt.replace("%d", "%?").replace("%m", "%d").replace("%?", "%m")
        note = (
            f"CHECK: {fmt!r} and {swapped!r} both read every value; day first was taken"
            if swapped != fmt and swapped in found
            else ""
        )
        kind = "datetime" if _has_time(fmt) else "date"
        years = _parsed(table, col, kind, fmt)[1].drop_nulls().dt.year()
        if "%Y" in fmt and years.len() and years.max() < 100:  # "10/07/24": year 24
            fmt = fmt.replace("%Y", "%y")
            note = "; ".join(
                n
                for n in (
                    note.replace("%Y", "%y"),
                    "CHECK: two-digit years, 00-69 read as 2000-2069 and 70-99 as 1970-1999",
                )
                if n
            )
        return fmt, note
    raise DraftError(
        f"the timestamps of column {col!r} (e.g. {table.frame[col].drop_nulls()[0]!r}) match "
        "neither ISO 8601 nor a common format: give their strptime format with "
        "--timestamp-format (e.g. '%d %b %Y %H:%M' for '03 Dec 2026 14:05')"
    )


def _yaml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a YAML double-quoted scalar
    return str(value)


def _without_leaks(
    table: _Table, label: str, positive: str, attributes: list[_Column]
) -> tuple[list[_Column], list[tuple[str, str]]]:
    """The attributes without those that predict the label almost perfectly alone (see
    :mod:`churn_assets.lib.leakage`), and a CHECK note for each one left out."""
    raw = table.frame[label].cast(pl.String).str.strip_chars()
    labelled = (raw.is_not_null() & (raw != "")).to_numpy()
    if labelled.sum() < 20 or not attributes:
        return attributes, []
    keys = table.frame.select(label_key(pl.col(label).cast(pl.String).str.strip_chars()))
    target = label_key(pl.lit(positive))
    y = keys.select(pl.col(label) == pl.select(target).item()).to_series().to_numpy()
    frame = pl.DataFrame(
        {
            c.source: _parsed(table, c.source, c.type, c.format)[1].to_physical()
            if c.type in ("integer", "numeric", "date", "datetime")
            else table.frame[c.source]
            for c in attributes
        }
    ).filter(pl.Series(labelled))
    leaks, _ = leaking_columns(frame, y[labelled].astype(int), frame.columns)
    notes = [
        (
            col,
            f"CHECK: predicts the label almost perfectly alone (ROC-AUC {auc:.3f} on the rows "
            "read), as a value recorded after the outcome would; add it back if it is known "
            "before",
        )
        for col, auc in leaks.items()
    ]
    return [c for c in attributes if c.source not in leaks], notes


#: Words in the name of a column recorded with the outcome (IBM's ``Churn Reason``,
#: ``Churn Category``, ``Churn Score``): left out of a draft even when they predict it
#: only in part (a reason left blank for some who churned).
OUTCOME_WORDS = ("churn", "attrition")
OUTCOME_NAME_NOTE = (
    "CHECK: named for the outcome, as a churn reason, category or score recorded with or "
    "after it is; add it back if it is known before"
)


def _outcome(c: _Column) -> bool:
    return any(w in _key(c.source) for w in OUTCOME_WORDS)


def _attribute_line(c: _Column, taken: set[str]) -> str:
    name = _snake(c.source)
    if name in PLATFORM_COLUMNS:
        name = f"{name}_attribute"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    parts = [f"name: {name}"]
    if name != c.source:
        parts.append(f"source: {_yaml(c.source)}")
    parts.append(f"type: {c.type}")
    if c.format:
        parts.append(f"format: {_yaml(c.format)}")
    note = c.note
    twin = re.fullmatch(r"(.+)_duplicated_(\d+)", c.source)
    if not note and twin:  # how polars names a header repeated in the file
        nth = {0: "second", 1: "third"}.get(int(twin.group(2)), f"{int(twin.group(2)) + 2}th")
        note = (
            f"CHECK: the {nth} column headed {twin.group(1)!r} (the file repeats that "
            "header); keep one if they hold the same values"
        )
    return "    - {" + ", ".join(parts) + "}" + (f"   # {note}" if note else "")


def _source_lines(table: _Table, indent: str = "  ") -> list[str]:
    """The source settings of ``table`` as YAML lines: path, format, sheet, encoding, ..."""
    source = [f"  path: {_yaml(table.path)}", f"  format: {table.format}"]
    if table.format == "excel" and len(table.sheets) > 1:
        others = ", ".join(n for n in table.sheets if n not in table.sheet)
        if len(table.sheet) == 1:
            source.append(
                f"  sheet: {_yaml(table.sheet[0])}  # the workbook's other sheets: {others}"
            )
        else:
            listed = ", ".join(_yaml(n) for n in table.sheet)
            note = f"; not {others}" if others else ""
            source.append(f"  sheet: [{listed}]  # stacked: the same columns{note}")
    if table.skip_rows:
        source.append(f"  skip_rows: {table.skip_rows}   # lines above the header (a title)")
    if table.format == "csv":
        source += [f"  encoding: {table.encoding}", f"  separator: {_yaml(table.separator)}"]
        if table.decimal != ".":
            source.append('  decimal: ","')
            if table.thousands:
                source.append(f"  thousands: {_yaml(table.thousands)}")
        elif table.thousands:
            source.append(
                f"  thousands: {_yaml(table.thousands)}   # CHECK: numbers like '2,502' read "
                'as 2502; were the commas decimal marks, write decimal: "," instead'
            )
    return [indent + line[2:] for line in source]


def draft_config(
    path: str,
    *,
    name: str | None = None,
    label: str | None = None,
    value: str | None = None,
    id_column: str | None = None,
    timestamp: str | None = None,
    amount: str | None = None,
    quantity: str | None = None,
    unit_price: str | None = None,
    invoice: str | None = None,
    labels_file: str | None = None,
    transactions_file: str | None = None,
    timestamp_format: str | None = None,
    horizon_days: int = 90,
    sample_rows: int = 100_000,
) -> str:
    """The YAML of a data set config for the file at ``path``: a snapshot table with churn
    column ``label`` (and optionally value column ``value``), or, with ``timestamp``, a table
    of transactions (``amount``, or ``quantity`` and ``unit_price``). Columns not named are
    found by their names where they can be. With ``labels_file``, the churn (and value)
    column is in that file, joined by customer id (``labels.file``). With
    ``transactions_file`` (and ``label``), the snapshot's customers also have transactions
    (``timestamp`` names their time column), whose behaviour becomes features.
    ``timestamp_format`` (strptime) reads times no common format reads. Raises
    :class:`DraftError` when the file or the options do not allow one; the draft returned
    always loads as a config."""
    if transactions_file is not None:
        if label is None or timestamp is None:
            raise DraftError(
                "--transactions goes with --label (the snapshot's churn column) and "
                "--timestamp (the time column of the transactions)"
            )
    elif (label is None) == (timestamp is None):
        raise DraftError(
            "give --label (a snapshot table with a churn column) or --timestamp (a table of "
            "transactions, churn derived from purchases after a cut-off)"
            + (", not both" if label is not None else "")
        )
    if labels_file is not None and label is None:
        raise DraftError("--labels-file goes with --label: the churn column of that file")
    if timestamp_format is not None and timestamp is None:
        raise DraftError("--timestamp-format goes with --timestamp: the column it reads")
    table = _read(path, sample_rows, want=None if labels_file else label or timestamp)
    cols = table.frame.columns
    stem = _snake(Path(path).stem)
    name = name or (stem if stem[0].isalpha() else f"data_{stem}")
    lines = [
        f"# Drafted by `churn draft-config` from {Path(path).name}"
        + ("/ (its last files" if Path(path).is_dir() else " (")
        + f"{', ' if Path(path).is_dir() else ''}{table.frame.height:,} rows "
        "read).",
        "# Check the lines marked CHECK, then: churn demo --dataset <this file>",
        f"name: {name}",
        f"description: {_yaml(f'{Path(path).name}, drafted config')}",
    ]
    if label is None:
        assert timestamp is not None
        section, history = _transactions(
            table, id_column, timestamp, amount, quantity, unit_price, invoice, timestamp_format
        )
        lines += section
        drafted = yaml.safe_load("\n".join(lines))["transactions"]
        if history.whole and not table.complete:
            lines[0] = lines[0].removesuffix(").") + f"; ids and times of all {history.lines:,})."
        horizon_days, horizon_note = _horizon(history, horizon_days)
        lines += [
            "labels:",
            "  source: transactions",
            *horizon_note,
            f"  horizon_days: {horizon_days}           # churned = no "
            + ("activity" if drafted.get("activity_only") else "purchase")
            + " in the horizon after the cut-off"
            + (", or an exit event in it" if drafted.get("exit_events") else ""),
            "  # cutoff: YYYY-MM-DD          # default: the last purchase minus the horizon",
            f"  # active_within_days: {horizon_days}      # leave out customers who lapsed "
            "already" + _lapsed_note(history, horizon_days),
        ]
    else:
        assert label is not None
        labels_table = _read(labels_file, sample_rows, want=label) if labels_file else table
        ident = _find(table, id_column, ID_NAMES, "id")
        shared = [c for c in cols if c in labels_table.frame.columns and c != label]
        if ident is None and labels_file is not None and len(shared) == 1:
            ident = shared[0]  # the one column both files have: the key they join on
        if ident is None and labels_file is not None:
            raise DraftError(
                f"no customer id column found among {', '.join(cols)}: give it with --id"
            )
        judged, label_id = table, None
        if labels_file is not None:
            label = _find(labels_table, label, (), "label")
            value = _find(labels_table, value, (), "value") if value else None
            label_id = _find(
                labels_table, ident if ident in labels_table.frame.columns else None, ID_NAMES, "id"
            )
            if label_id is None:
                raise DraftError(
                    f"no customer id column found in {labels_file} among "
                    f"{', '.join(labels_table.frame.columns)}: name it like {ident!r}"
                )
            kept = [label, *([value] if value else [])]
            joined = table.frame.with_columns(pl.col(ident).cast(pl.String)).join(
                labels_table.frame.select(pl.col(label_id).cast(pl.String).alias(ident), *kept),
                on=ident,
                how="inner",
            )
            judged = dataclasses.replace(table, frame=joined)
        else:
            label = _find(table, label, (), "label")
            value = _find(table, value, (), "value") if value else None
        guessed = ident is None and id_column is None
        if guessed:
            ident = _distinct_id(table, (label, value))
        ids = (
            table.frame.select(plain_id(pl.col(ident).cast(pl.String)))[ident].drop_nulls()
            if ident
            else pl.Series([], dtype=pl.String)
        )  # as ingestion compares them: "2.0" is "2"
        latest: _Column | Literal["file"] | None = None
        if ids.n_unique() != ids.len():
            latest = _latest_column(table, ident, label)
            if latest is None and _dated_snapshots(table, ident):
                latest = "file"
            if latest is None:
                raise DraftError(
                    f"the id column {ident!r} repeats values ({ids.len() - ids.n_unique():,} "
                    "duplicates in the rows read) and no column (a month, a date) tells a "
                    "customer's rows apart: a snapshot has one row per customer"
                    + _shared_ids(table, ident)
                )
        positive, why, negative = _positive(labels_table, label)
        lines += [
            "customers:",
            *_source_lines(table),
            f"  id_column: {_yaml(ident)}"
            + (
                (
                    "   # CHECK: named like an id, a customer's rows repeat it (latest_by): "
                    "the customer id, not a feature"
                    if latest is not None
                    else "   # CHECK: named like an id and distinct in every row read: the "
                    "customer id, not a feature"
                )
                if guessed
                else ""
            )
            if ident
            else "  row_ids: true   # CHECK: no customer id column found: rows are numbered "
            "from 1 in file order; give --id if a column identifies customers",
        ]
        if latest == "file":
            repeated = ids.len() - ids.n_unique()
            lines.append(
                f"  latest_by: file   # CHECK: {repeated:,} rows repeat a customer over "
                f"{len(table.parts)} files named by date: snapshots of the same customers, "
                "each one's rows from the last file holding it are kept"
            )
            last = table.frame.with_columns(_file_rows(table))
            last = last.filter(
                pl.col(ident).is_null()
                | (
                    pl.col("file")
                    == pl.col("file").max().over(plain_id(pl.col(ident).cast(pl.String)))
                )
            )
            table = dataclasses.replace(table, frame=last.drop("file"))
            if labels_file is None:
                labels_table = judged = table
        elif latest is not None:
            repeated = ids.len() - ids.n_unique()
            fmt = f", format: {_yaml(latest.format)}" if latest.format else ""
            order = " (sorted as text)" if latest.type == "categorical" else ""
            named = _snake(latest.source)
            src = f", source: {_yaml(latest.source)}" if named != latest.source else ""
            lines.append(
                f"  latest_by: {{name: {named}{src}, type: {latest.type}{fmt}}}   # CHECK: "
                f"{repeated:,} rows repeat a customer; "
                f"each one's latest by {latest.source!r}{order} is kept"
            )
            table = dataclasses.replace(
                table,
                frame=table.frame.sort(latest.source, maintain_order=True).unique(
                    ident, keep="last", maintain_order=True
                ),
            )
            if labels_file is None:
                labels_table = judged = table
        signup, attributes, skipped = None, [], []
        for col in cols:
            if col in (ident, label, value) or (
                isinstance(latest, _Column) and col == latest.source
            ):
                continue
            c = _column_type(table, col)
            dated = c.type in ("date", "datetime")
            if dated and signup is None and any(h in col.lower() for h in SIGNUP_HINTS):
                signup = c
            elif c.type == "skip":
                skipped.append((col, c.note))
            else:
                attributes.append(c)
        attributes, leaks = _without_leaks(judged, label, positive, attributes)
        skipped += leaks + [(c.source, OUTCOME_NAME_NOTE) for c in attributes if _outcome(c)]
        attributes = [c for c in attributes if not _outcome(c)]
        if signup is not None:
            fmt = f", format: {_yaml(signup.format)}" if signup.format else ""
            lines.append(
                f"  signup_date: {{name: signup_date, source: {_yaml(signup.source)}, "
                f"type: {signup.type}{fmt}}}"
            )
        lines.append("  attributes:")
        taken: set[str] = set()
        lines += [_attribute_line(c, taken) for c in attributes] or ["    []"]
        lines += [f"    # left out: {_yaml(col)}: {why_}" for col, why_ in skipped]
        if transactions_file is not None:
            assert timestamp is not None
            payments = _read(transactions_file, sample_rows, want=timestamp)
            own = (
                ident
                if ident in payments.frame.columns
                else _column_of_ids(payments, table.frame[ident], ident)
            )
            lines += _transactions(
                payments, own, timestamp, amount, quantity, unit_price, invoice, timestamp_format
            )[0]
        lines += ["labels:", "  source: columns"]
        if transactions_file is not None:
            lines.append(
                "  # cutoff: YYYY-MM-DD   # CHECK: the date the labels were taken; the "
                "transactions before it become features (default: the last one minus "
                f"{horizon_days} days)"
            )
        else:
            lines += _export_date(table, attributes, signup)
        if labels_file is not None:
            lines.append("  file:")
            lines += _source_lines(labels_table, indent="    ")
            if label_id != ident:
                lines.append(f"    id_column: {_yaml(label_id)}")
        lines += [
            f"  churned_column: {_yaml(label)}",
            f"  churned_positive: [{_yaml(positive)}]   # {why}",
        ]
        if negative is not None:
            lines.append(f"  churned_negative: [{', '.join(_yaml(v) for v in negative)}]")
        answered = [positive, *(negative or [])]
        text_label = pl.col(label).cast(pl.String).str.strip_chars().fill_null("")
        blank = (
            (labels_table if labels_file else table)
            .frame.select(
                ((text_label == "") | (~text_label.is_in(answered) if negative else False)).sum()
            )
            .item()
        )
        if labels_file is not None:
            lines.append(
                "  allow_unlabelled: true   # CHECK: customers without a label row are scored "
                "and served, not trained on; remove it when every customer has one"
            )
        elif blank:
            lines.append(
                f"  allow_unlabelled: true   # CHECK: {blank:,} rows have no label: scored and "
                "served, not trained on"
            )
        if value:
            values_table = labels_table if labels_file else table
            numbers = _parsed(values_table, value, "numeric")[1]
            below = int((numbers < 0).sum())
            lines.append(
                f"  total_sales_column: {_yaml(value)}"
                + (
                    f"   # CHECK: {below:,} negative values in the rows read (refunds, "
                    "credits): no value model is trained while any is; floor them at 0 "
                    "before landing, or leave the value label out"
                    if below
                    else ""
                )
            )
        else:
            lines.append("  # total_sales_column: <column>  # a value label, if the table has one")
    text = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / f"{name}.yaml"
        check.write_text(text)
        load_dataset_config(str(check))
    return text


@dataclass(frozen=True)
class _History:
    """What the draft tells of the customers' history: from every line of the file
    (``whole``), or from the lines read."""

    stamps: pl.LazyFrame  # c: customer id (text), t: time as ingestion parses it; both set
    lines: int
    missing_ids: int
    first: dt.datetime | None
    last: dt.datetime | None
    whole: bool

    folder: bool = False  # every file of a folder
    worst_file: tuple[str, float] | None = None  # folder: the file with the fewest ids, share

    @property
    def where(self) -> str:
        if not self.whole:
            return "in the lines read"
        return "in the folder's files" if self.folder else "in the file"


def _every_line(table: _Table, columns: list[str]) -> pl.LazyFrame | None:
    """``columns`` of every row of the table's file, scanned by polars without holding the
    file: a plain local CSV in UTF-8, JSON lines (top-level fields, as text) or an
    uncompressed Parquet file; None for anything else (compressed, a JSON array, a
    spreadsheet, a folder). A workbook split into sheets by year is read whole, every
    sheet of the table (a workbook holds at most a million rows a sheet)."""
    path = Path(table.path)
    if path.is_dir():  # every data file of the folder, when all are of the drafted kind
        from churn_assets.lib.ingest import list_source_files

        files = list_source_files(str(path))
        kinds = {Path(f).suffix.lower() for f in files}
        if len(kinds) != 1:
            return None
        parts = [_every_line(dataclasses.replace(table, path=f), columns) for f in files]
        if any(p is None for p in parts):
            return None
        return pl.concat(
            [
                p.with_columns(_file=pl.lit(Path(f).name))
                for p, f in zip(parts, files, strict=True)
                if p is not None
            ],
            how="vertical",
        )
    if path.is_file() and table.format == "excel" and len(table.sheet) > 1:
        data, _ = read_sample(str(path), -1)
        stacked = read_spreadsheet(data, list(table.sheet), skip_rows=table.skip_rows)
        return stacked.lazy().select(columns)
    if not path.is_file() or table.format not in ("csv", "parquet", "json"):
        return None
    with open(path, "rb") as f:
        head = f.read(8192)
    if is_packed(head) or head.startswith(b"PK"):
        return None
    if table.format == "parquet":
        return pl.scan_parquet(path).select(columns) if head.startswith(b"PAR1") else None
    if table.format == "json":
        if first_byte(head) != b"{" or any("." in c for c in columns):
            return None
        scan = pl.scan_ndjson(path, infer_schema_length=10_000)
        return scan.select(pl.col(c).cast(pl.String) for c in columns)
    if table.encoding not in ("utf-8", "utf-8-sig"):
        return None
    return scan_csv_columns(str(path), table.separator, table.skip_rows, columns)


def _history(table: _Table, cfg: dict[str, Any]) -> _History:
    """The :class:`_History` of the drafted ``transactions`` section ``cfg``: of every line
    when the file was read whole or polars can scan it (10x Online Retail, 495 MB: 3.8 s
    and 0.6 GB in all), else of the lines read."""
    who, when = cfg["customer_id"], cfg["timestamp"]
    parsed = _parse_expression(table, when, "datetime", cfg.get("timestamp_format"))
    sources = [(table.frame.lazy(), table.complete)]
    if not table.complete:
        scan = _every_line(table, list(dict.fromkeys([who, when])))
        if scan is not None:
            sources.insert(0, (scan.filter(pl.any_horizontal(pl.all().is_not_null())), True))
    ident = pl.col(who).cast(pl.String)
    ident = pl.when(ident.str.strip_chars() != "").then(ident)  # blank: no customer, as ingested
    for frame, whole in sources:
        lines = frame.select(c=ident, t=parsed)
        stamped = pl.col("t").filter(pl.col("c").is_not_null())  # min/max skip a null t
        summary = lines.select(
            pl.len(), pl.col("c").null_count(), stamped.min().alias("a"), stamped.max()
        )
        try:  # one pass over the file
            n, missing, first, last = summary.collect(engine="streaming").row(0)
        except (pl.exceptions.ComputeError, pl.exceptions.ColumnNotFoundError):
            if frame is sources[-1][0]:
                raise
            continue  # a line the scan cannot parse: judged on the lines read
        folder = whole and Path(table.path).is_dir()
        worst = None
        if folder and missing:  # the check applies file by file: the one with the fewest ids
            per_file = (
                frame.group_by("_file")
                .agg(share=ident.is_not_null().mean())
                .sort("share", "_file")
                .collect(engine="streaming")
            )
            worst = per_file.row(0)
        return _History(lines.drop_nulls(), n, missing, first, last, whole, folder, worst)
    raise AssertionError("unreachable: the lines read give a history or raise")


def _id_fraction(history: _History) -> list[str]:
    """The ``customer_id_required_fraction`` line, when lines lack a customer id."""
    if not history.missing_ids:
        return []
    share = 1 - history.missing_ids / history.lines
    worst = ""
    if history.worst_file is not None and history.worst_file[1] < share:
        name, share = history.worst_file
        worst = f"; each file is checked on its own, and {name} names one on {share:.0%}"
    return [
        f"  customer_id_required_fraction: {max(0.0, round(share - 0.05, 2))}"
        f"   # {history.missing_ids:,} of {history.lines:,} lines {history.where} have no "
        "customer id" + worst
    ]


#: Label horizons a draft may propose, longest first.
HORIZONS = (90, 60, 30, 14, 7)


def _horizon(history: _History, wanted: int) -> tuple[int, list[str]]:
    """The horizon to draft: ``wanted``, or, when every line was seen and the file spans
    less than twice it, the longest of :data:`HORIZONS` that leaves as much history before
    the cut-off as after it; with a CHECK comment line when it differs or none fits."""
    if not history.whole or history.first is None or history.last is None:
        return wanted, []
    span = (history.last.date() - history.first.date()).days + 1
    if span >= 2 * wanted:
        return wanted, []
    fits = [h for h in HORIZONS if 2 * h <= span]
    spans = "the folder's files span" if history.folder else "the file spans"
    if not fits:
        return wanted, [
            f"  # CHECK: {spans} {span} day(s), too short a history to learn churn "
            "from: land a longer one"
        ]
    return fits[0], [
        f"  # CHECK: {spans} {span} days, too short for a {wanted}-day horizon with as "
        "much history before the cut-off"
    ]


def _lapsed_note(history: _History, horizon_days: int) -> str:
    """How many customers known at the default cut-off bought nothing in the horizon before
    it (subscriptions that ended long ago inflate the churn rate)."""
    if history.last is None:
        return ""
    last = history.last
    cutoff = dt.datetime.combine(last.date(), dt.time()) + dt.timedelta(days=1 - horizon_days)
    known, lapsed = (
        history.stamps.filter(pl.col("t") < cutoff)
        .group_by("c")
        .agg(pl.col("t").max())
        .select(pl.len(), (pl.col("t") < cutoff - dt.timedelta(days=horizon_days)).sum())
        .collect(engine="streaming")
        .row(0)
    )
    if known == 0:
        return ""
    return (
        f" ({lapsed / known:.0%} of the {known:,} customers known at the cut-off, {history.where})"
    )


def _export_date(table: _Table, attributes: list[_Column], signup: _Column | None) -> list[str]:
    """A snapshot with date attributes but no sign-up date: ``labels.cutoff``, the date its
    ``days_since_<date>`` features count to, drafted as the day after its latest date not
    in the future (CHECK: the export's date belongs there)."""
    dated = [c for c in attributes if c.type in ("date", "datetime")]
    if signup is not None or not dated:
        return []
    today = dt.date.today()
    latest = None
    for c in dated:
        values = _parsed(table, c.source, c.type, c.format)[1].drop_nulls().cast(pl.Date)
        past = values.filter(values <= today)
        if past.len() and (latest is None or past.max() > latest):  # type: ignore[operator]
            latest = past.max()
    if latest is None:
        return []
    return [
        f"  cutoff: {latest + dt.timedelta(days=1)}   # CHECK: the date the table was "  # type: ignore[operator]
        "exported: its date columns become days before it (days_since_<name>)"
    ]


def _one_time_ids(table: _Table, customer: str, ts: str) -> str:
    """A CHECK when no customer id in the lines read comes back at another time: an id
    per order or visit (Olist's ``customer_id``; its ``customer_unique_id`` names the
    person) would make every customer one who never bought again."""
    pairs = table.frame.select(
        pl.col(customer).cast(pl.String).str.strip_chars().alias("id"), pl.col(ts)
    ).filter(pl.col("id").is_not_null() & (pl.col("id") != ""))
    ids = pairs["id"].n_unique()
    if ids < 20 or pairs.unique().height != ids:
        return ""
    return (
        f"   # CHECK: none of the {ids:,} ids in the lines read comes back at another time: "
        "it must name a customer who can buy again, not an order or a visit"
    )


def _transactions(
    table: _Table,
    id_column: str | None,
    timestamp: str,
    amount: str | None,
    quantity: str | None,
    unit_price: str | None,
    invoice: str | None,
    timestamp_format: str | None = None,
) -> tuple[list[str], _History]:
    """The ``transactions`` section drafted from ``table`` (the lines of a transactions
    file, or a snapshot's payments with ``--transactions``) and the :class:`_History` of
    its lines, which gives ``customer_id_required_fraction``."""
    source = _source_lines(table)
    customer = _find(table, id_column, ID_NAMES, "customer id")
    if customer is None:
        raise DraftError(
            f"no customer id column found among {', '.join(table.frame.columns)}: give it with --id"
        )
    ts = _find(table, timestamp, (), "timestamp")
    assert ts is not None
    fmt, note, zone = _timestamp_format(table, ts, timestamp_format)
    out = [
        "transactions:",
        *source,
        *([f"  timezone: {_yaml(zone)}   # the zone the times are local to"] if zone else []),
        f"  customer_id: {_yaml(customer)}" + _one_time_ids(table, customer, ts),
        f"  timestamp: {_yaml(ts)}",
    ]
    if fmt:
        out.append(f"  timestamp_format: {_yaml(fmt)}" + (f"   # {note}" if note else ""))
    amt = _find(table, amount, AMOUNT_NAMES, "amount") if not (quantity or unit_price) else None
    activity = False
    if amt is not None:
        out.append(f"  amount: {_yaml(amt)}")
        out += _cents(table, amt)
    else:
        qty = _find(table, quantity, QUANTITY_NAMES, "quantity")
        price = _find(table, unit_price, PRICE_NAMES, "unit price")
        if (quantity or unit_price) and (qty is None or price is None):
            raise DraftError("--quantity and --price go together: give both")
        money = None if quantity or unit_price else _money_column(table, (customer, ts))
        if (qty is None or price is None) and money is not None:
            out.append(
                f"  amount: {_yaml(money)}   # CHECK: taken as the amount by its name; give "
                "--amount (or --quantity and --price) if another column holds it"
            )
            out += _cents(table, money)
        elif qty is None or price is None:
            activity = True
            out.append(
                "  activity_only: true   # CHECK: no amount column found: each line counts as "
                "one event (logins, sessions) and no value model is trained; give --amount if "
                "a column holds money"
            )
            numbers = [
                c
                for c in table.frame.columns
                if c not in (customer, ts) and _column_type(table, c).type in ("numeric", "integer")
            ]
            if numbers:
                out.append(
                    f"  # left out: {', '.join(map(_yaml, numbers[:5]))}: numbers a line "
                    "carries are not used (a line counts once); to weigh lines by one, give "
                    "it as --amount (its sums become the spend features and a value label)"
                )
        else:
            out += [f"  quantity: {_yaml(qty)}", f"  unit_price: {_yaml(price)}"]
            out += _cents(table, price)
    inv = _find(table, invoice, INVOICE_NAMES, "invoice")
    if inv is not None:
        out.append(f"  invoice_id: {_yaml(inv)}")
        ids = table.frame[inv].cast(pl.String).drop_nulls()
        returns = ids.filter(ids.str.starts_with("C")).len()
        if 0 < returns < 0.5 * ids.len():
            out.append('  cancellation_prefix: "C"   # invoices starting with C are returns')
    for key, names in (
        # an activity log's event type says more than a plan; either, the one holding an
        # exit event ('Cancellation Confirmation') first
        ("category", EVENT_NAMES + CATEGORY_NAMES if activity else CATEGORY_NAMES),
        ("country", COUNTRY_NAMES),
    ):
        found = [c for n in names if (c := _find(table, None, (n,), key)) is not None]
        found = list(dict.fromkeys(found))
        col = next((c for c in found if key == "category" and _exit_events(table, c)), None)
        col = col or (found[0] if found else None)
        if col is not None:
            out.append(f"  {key}: {_yaml(col)}")
            if key == "category":
                out += _exit_events(table, col)
    history = _history(table, yaml.safe_load("\n".join(out))["transactions"])
    return out + _id_fraction(history), history


#: Parts of an event name (lower case, no separators) that mean the customer left.
EXIT_WORDS = (
    "cancellationconfirm",
    "unsubscrib",
    "accountclos",
    "closeaccount",
    "accountdelet",
    "deleteaccount",
    "churn",
)


def _exit_events(table: _Table, col: str) -> list[str]:
    """The ``exit_events`` line when the category (event type) column holds events that
    mean the customer left (Sparkify's ``Cancellation Confirmation``)."""
    values = table.frame[col].cast(pl.String).drop_nulls().unique().sort().to_list()
    exits = [v for v in values if any(w in _key(v) for w in EXIT_WORDS)]
    if not exits:
        return []
    return [
        f"  exit_events: [{', '.join(_yaml(v) for v in exits)}]   # CHECK: events that mean "
        "the customer left: churned when one falls in the horizon, left out once one is "
        "before the cut-off"
    ]
