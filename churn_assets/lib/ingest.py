"""Read raw landing-zone files into the platform's typed raw tables.

Nothing is dropped silently: a file that cannot be read (empty, unknown encoding, missing
column, malformed) is reported as a :class:`FileProblem` and quarantined whole; a value
that cannot be parsed into its column's type is counted per column and its row is marked
in ``_parse_errors`` so it can be quarantined.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import polars as pl

from churn_assets.lib.datasets import (
    ColumnSpec,
    CustomersSpec,
    DatasetConfig,
    SourceSpec,
    TransactionsSpec,
)
from churn_assets.lib.source_files import (
    DATA_SUFFIXES,
    UnreadableFile,
    holds_values,
    is_blank,
    local_csv_batches,
    read_local_table,
    read_table,
    repeated_lines,
)

FALSE_VALUES = ("0", "false", "no", "n", "f")


class IngestError(RuntimeError):
    """The source of a table cannot be found at all (nothing to ingest)."""


@dataclass(frozen=True)
class FileProblem:
    """A landing file that could not be ingested; it is quarantined whole."""

    file: str
    problem: str
    column: str | None = None
    rows: int = 0
    hint: str = ""  # what the file holds instead, or how to fix it

    def message(self) -> str:
        col = f" (column '{self.column}')" if self.column else ""
        hint = f": {self.hint}" if self.hint else ""
        return f"{self.file}: {self.problem}{col}{hint}"


@dataclass
class IngestResult:
    """A typed raw table plus everything that went wrong reading it."""

    table: str
    frame: pl.DataFrame
    files: list[str]
    file_problems: list[FileProblem] = field(default_factory=list)
    parse_errors: dict[str, int] = field(default_factory=dict)  # column -> unparseable values
    parse_hints: dict[str, str] = field(default_factory=dict)  # column -> likely fix
    label_problem: str | None = None  # why the churn label column is unusable
    label_blocks: bool = False  # the problem stops ingestion (labels would be wrong)
    raw_bytes: dict[str, bytes] = field(default_factory=dict)  # bytes of quarantined files
    empty_rows: int = 0  # rows with every field empty, skipped
    total_rows: int = 0  # a spreadsheet's totals rows ("Total", no customer id), skipped
    label_rows: tuple[int, int] | None = None  # label file: rows naming a customer, all rows
    earlier_rows: int = 0  # customers.latest_by: earlier rows of a customer, left out
    zero_value_labels: int = 0  # labelled customers whose value label was blank: 0 sales
    urls: dict[str, str] = field(default_factory=dict)  # file name -> full URL
    stamps: dict[str, str | None] = field(default_factory=dict)  # file name -> when read
    changed_since_read: list[str] = field(default_factory=list)  # so left in the landing zone
    repeated_lines: dict[str, int] = field(default_factory=dict)  # file -> lines seen before
    # file -> attribute columns it lacks (an export before the column was added), read as
    # missing values for its rows
    absent_columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.frame.height


def resolve_source(spec: SourceSpec, landing_url: str) -> str:
    """The URL of a source: absolute paths and URLs as given, others under the landing zone."""
    path = spec.path
    if "://" in path or path.startswith("/"):
        return path
    return f"{landing_url.rstrip('/')}/{path}"


def list_source_files(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Data files named by a source URL: a file, every data file in a directory, or a glob,
    as they are now: an object store's cached listings are dropped first (fsspec keeps one
    per file system in a long-lived process, such as the code server the landing sensor
    runs in, and would hide files landed since, or a file rewritten under the same name)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.invalidate_cache()
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    if any(ch in path for ch in "*?["):
        found = [p for p in fs.glob(path) if not fs.isdir(p)]
    elif fs.isdir(path):
        found = [
            p
            for p in fs.find(path)
            if p.lower().endswith(DATA_SUFFIXES) and not p.rsplit("/", 1)[-1].startswith(".")
        ]
    elif fs.exists(path):
        found = [path]
    else:
        raise IngestError(
            f"no such file or directory: {url} (land the file there; for the synthetic data "
            "set, `churn seed`; for the real ones, set CHURN_REAL_DATA_DIR to their folder; "
            "or fix 'path' in the data set config)"
        )
    if not protocol or protocol == "file://":
        found = [p for p in found if _regular_file(p)]
    return sorted(protocol + p if protocol and not p.startswith(protocol) else p for p in found)


def _regular_file(path: str) -> bool:
    """Whether a local ``path`` is (or links to) a regular file: a named pipe would block
    the read forever, holding the ingest pool; a device is no table either. Links are
    followed: a landing folder of links into a data lake is read as its files."""
    import os
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def file_partition_key(url: str, root: str | None = None) -> str:
    """The partition key of a landing file: its path under the source folder ``root``
    (its name when directly in it, or without ``root``), with characters other than
    letters, digits and ``._=-`` replaced by ``_``: a Hive-style folder of
    ``date=2024-01-01/part-0.parquet`` files gives ``date=2024-01-01_part-0.parquet``."""
    name = url.rsplit("/", 1)[-1]
    if root is not None:
        base = _without_protocol(root).rstrip("/") + "/"
        path = _without_protocol(url)
        if path.startswith(base):
            name = path[len(base) :]
    return re.sub(r"[^A-Za-z0-9._=-]", "_", name)


def _without_protocol(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def identical_files(
    url: str, others: list[str], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Those of ``others`` holding exactly the bytes of ``url`` (a file landed twice,
    ``2011-03 (1).csv``). Sizes first; contents only of files of the same size."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    size = fs.size(path)
    digest = None
    same = []
    for other in others:
        ofs, opath = fsspec.core.url_to_fs(other, **(storage_options or {}))
        if other == url or ofs.size(opath) != size:
            continue
        if digest is None:
            digest = file_sha256(fs, path)
        if file_sha256(ofs, opath) == digest:
            same.append(other)
    return same


def lines_sha256(frame: pl.DataFrame) -> str | None:
    """The sha256 of a typed table's lines (every column but ``_source_file``, as CSV), or
    None when it has none: the same lines re-sent with other line ends, quoting, compression
    or file format give the same digest."""
    if frame.is_empty():
        return None
    lines = frame.drop("_source_file", strict=False)
    h = hashlib.sha256(",".join(lines.columns).encode())
    for chunk in lines.iter_slices(200_000):
        h.update(chunk.write_csv(include_header=False).encode())
    return h.hexdigest()


def file_sha256(fs: Any, path: str) -> str:
    """The sha256 of the file at ``path`` on ``fs``, read in 1 MB blocks."""
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def transaction_files(
    cfg: DatasetConfig, landing_url: str, storage_options: dict[str, Any] | None = None
) -> dict[str, str]:
    """The transaction files of ``cfg`` in the landing zone: partition key → file URL, in
    name order (nothing for snapshot data sets or a missing source folder). Names that give
    the same key (``2025-06-27 x.csv`` and ``2025-06-27_x.csv``) each get one: the file
    named like the key (else the first by name) keeps it, the others have a short hash of
    their path added (``2025-06-27_x.csv--1a2b3c4d``), so that neither stops the rest."""
    if cfg.transactions is None:
        return {}
    try:
        files = list_source_files(resolve_source(cfg.transactions, landing_url), storage_options)
    except IngestError:
        return {}
    root = resolve_source(cfg.transactions, landing_url)
    by_key: dict[str, list[str]] = {}
    for url in files:
        by_key.setdefault(file_partition_key(url, root), []).append(url)
    out: dict[str, str] = {}
    for key, urls in by_key.items():
        plain = next((u for u in urls if u.rsplit("/", 1)[-1] == key), urls[0])
        out[key] = plain
        for url in urls:
            if url != plain:
                digest = hashlib.sha1(_without_protocol(url).encode()).hexdigest()[:8]
                out[f"{key}--{digest}"] = url
    order = {url: i for i, url in enumerate(files)}
    return dict(sorted(out.items(), key=lambda item: order[item[1]]))


def _read_one(
    url: str,
    spec: SourceSpec,
    wanted: list[str],
    storage_options: dict[str, Any],
    repeats: dict[str, int] | None = None,
    optional: frozenset[str] = frozenset(),
    absent: dict[str, list[str]] | None = None,
) -> tuple[pl.DataFrame | None, FileProblem | None, bytes]:
    """Read one file as strings (CSV, spreadsheets) or its own types (Parquet), keeping
    ``wanted`` columns; compressed files are unpacked first. A column of ``optional`` the
    file lacks is read as missing values (and put in ``absent``); any other is a problem.
    A plain local CSV or Parquet file is read by polars from its path (no copy of its
    bytes in memory: 100x Online Retail, a 5.1 GB CSV, peaks 4.5 GB lower); its bytes are
    read only to quarantine it.
    With ``repeats``, a readable CSV file's count of repeated lines is put there."""
    name = url.rsplit("/", 1)[-1]
    try:
        df, data = read_local_table(url, name, spec, wanted, storage_options), b""
    except UnreadableFile as e:  # read from its path: its bytes are moved, not held
        return None, FileProblem(name, str(e)), b""
    if df is None:
        with fsspec.open(url, "rb", **storage_options) as f:
            data = f.read()
        if is_blank(data):
            return None, FileProblem(name, "empty file (0 data bytes)"), data
        try:
            df = read_table(data, name, spec, columns=wanted)
        except UnreadableFile as e:
            return None, FileProblem(name, str(e)), data
        except pl.exceptions.DuplicateError as e:  # a nested and a dotted key alike, say
            return None, FileProblem(name, f"two columns of the same name: {e}"), data
    problem = None
    if df.height == 0:
        problem = FileProblem(name, "empty file (header only, 0 rows)")
    missing = [c for c in wanted if c not in df.columns]
    lacking = [c for c in missing if c in optional]
    missing = [c for c in missing if c not in optional]
    if missing and problem is None:
        found = ", ".join(repr(c) for c in df.columns[:12])
        more = f" and {df.width - 12} more" if df.width > 12 else ""
        why = (
            "its first line holds values, not column names: the file has no header line; "
            "write it with one (churn draft-config prints a command that does)"
            if holds_values(list(df.columns))
            else "a title above the header needs 'skip_rows'; another separator, 'separator'"
        )
        spelled = [c for c in df.columns if _plain_name(c) == _plain_name(missing[0])]
        if spelled:  # the export renamed it: "Amount", "amount " for "amount"
            why = (
                f"{spelled[0]!r} differs from {missing[0]!r} only in letter case, spaces or "
                "underscores: the export renamed it; land the file with the configured name"
            )
        problem = FileProblem(
            name,
            "missing column",
            column=missing[0],
            rows=df.height,
            hint=f"the file's columns are {found}{more} ({why})",
        )
    if problem is not None:
        if not data:  # read from its path: its bytes go to quarantine
            with fsspec.open(url, "rb", **storage_options) as f:
                data = f.read()
        return None, problem, data
    if repeats is not None:  # counted while the bytes are at hand (a local file: its path)
        repeats[name] = repeated_lines(url, name, spec, storage_options, data) or 0
    if lacking:
        df = df.with_columns(pl.lit(None, pl.String).alias(c) for c in lacking)
        if absent is not None:
            absent[name] = lacking
    return df.select(wanted).with_columns(pl.lit(name).alias("_source_file")), None, b""


def _plain_name(column: str) -> str:
    """A column name without letter case, spaces and underscores."""
    return re.sub(r"[\s_]+", "", column).lower()


#: A field that marks a spreadsheet's totals row ("Total", "Grand total:", "Sum").
TOTALS = r"(?i)^\s*(grand\s+|sub)?totals?\s*:?\s*$|^\s*sum\s*:?\s*$"


def _without_empty_rows(
    df: pl.DataFrame, wanted: list[str], ident: str | None = None
) -> tuple[pl.DataFrame, int, int]:
    """``df`` without the lines whose every field is empty (",,,,", a spreadsheet's blank
    row) and without a totals row (a field "Total" / "Grand total" / "Sum" and no customer
    id in ``ident``, or "Total" as the id): they are no rows at all, never a customer
    without an id. Returns the frame and the counts of both. Only sparse lines without an
    id (at most half their fields filled) are searched for the word."""
    empty = pl.all_horizontal(pl.col(c).is_null() for c in wanted)
    texts = [c for c in wanted if df.schema.get(c) == pl.String]
    if not texts or ident not in df.columns:
        n = df.select(empty.sum()).item()
        return (df.filter(~empty), n, 0) if n else (df, 0, 0)
    candidate = pl.col(ident).is_null()
    if df.schema[ident] == pl.String:  # typed files (Parquet, Excel) may hold numeric ids
        candidate = candidate | pl.col(ident).str.contains(TOTALS)
    filled = pl.sum_horizontal(pl.col(c).is_not_null() for c in wanted)
    sparse = (filled > 0) & (filled * 2 <= len(wanted))  # a label and a sum or two
    flags = df.select(empty=filled == 0, maybe=candidate & sparse)  # one pass for both
    at = flags["maybe"].arg_true()
    marked = pl.any_horizontal(pl.col(c).str.contains(TOTALS).fill_null(False) for c in texts)
    totals = df[at].with_columns(_row=at).filter(marked)["_row"] if at.len() else at
    n = int(flags["empty"].sum())
    if not n and not totals.len():
        return df, 0, 0
    drop = flags.select(pl.col("empty") | pl.int_range(pl.len()).is_in(totals.implode()))
    return df.filter(~drop.to_series()), n, totals.len()


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    s = expr.cast(pl.String).str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s)


#: Text that marks a missing number, date or flag in exports (pandas' defaults, spreadsheet
#: errors, "-" and "?"), in lower, upper or title case. In such a column it is a missing
#: value, not a parse failure; never in a text column, where "NA" may be a country.
MISSING_TOKENS = frozenset(
    v
    for t in (
        *("na", "n/a", "#n/a", "#na", "<na>", "nan", "-nan", "nat", "null", "none", "nil"),
        *("-", "--", "?", "#value!", "#div/0!", "missing"),
    )
    for v in (t, t.upper(), t.title())
)


def given_value(raw: str, target: str) -> pl.Expr:
    """True where text column ``raw`` holds a value: not blank and, for a number, date or
    flag, not one of :data:`MISSING_TOKENS`."""
    s = _blank_to_null(pl.col(raw))
    if target in ("string", "categorical"):
        return s.is_not_null()
    return s.is_not_null() & ~s.is_in(list(MISSING_TOKENS))


def _number_text(s: pl.Expr, decimal: str, thousands: str) -> pl.Expr:
    """Number text in the platform's form: thousands separators removed, a ``.`` decimal."""
    if thousands:
        marks = thousands + ("\u00a0\u202f" if thousands == " " else "")
        s = s.str.replace_all(f"[{re.escape(marks)}]", "")
    if decimal != ".":
        # with a decimal comma, a "." left (not a thousands separator) makes no number:
        # "1.234" is not read as 1.234
        s = pl.when(s.str.contains(".", literal=True)).then(None).otherwise(s)
        s = s.str.replace_all(decimal, ".", literal=True)
    return s


def parse_expr(
    raw: str,
    col: ColumnSpec | None,
    target: str,
    fmt: str | None = None,
    *,
    decimal: str = ".",
    thousands: str = "",
    offset: bool = False,
) -> pl.Expr:
    """A polars expression turning raw column ``raw`` into type ``target``; bad values → null.
    Numbers may use another ``decimal`` mark and a ``thousands`` separator. Timestamps with a
    UTC offset (a ``%z`` format, or with ``offset`` ISO 8601 ending in one) become UTC."""
    c = pl.col(raw)
    s = _blank_to_null(c)
    if target in ("string", "categorical"):
        return s
    if target == "numeric":
        return _number_text(s, decimal, thousands).cast(pl.Float64, strict=False)
    if target == "integer":
        f = _number_text(s, decimal, thousands).cast(pl.Float64, strict=False)
        return pl.when(f == f.round(0)).then(f).otherwise(None).cast(pl.Int64, strict=False)
    if target == "boolean":
        trues = [v.lower() for v in (col.true_values if col else ["1", "true", "yes"])]
        low = s.str.to_lowercase()
        return (
            pl.when(low.is_in(trues))
            .then(True)
            .when(low.is_in(FALSE_VALUES))
            .then(False)
            .otherwise(None)
        )
    if target in ("date", "datetime") and fmt in EPOCH_FORMATS:
        # seconds (or ms, µs) since 1970-01-01 UTC, or Excel's serial days since 1899-12-30;
        # outside 1900-2200 is a wrong unit
        shift = EXCEL_EPOCH_DAYS if fmt == "excel" else 0
        us = ((s.cast(pl.Float64, strict=False) - shift) * EPOCH_FORMATS[fmt]).round(0)
        ok = us.is_between(_EPOCH_MIN_US, _EPOCH_MAX_US)
        t = pl.from_epoch(pl.when(ok).then(us).cast(pl.Int64), time_unit="us")
        return t.dt.date() if target == "date" else t
    if target == "date":
        return s.str.to_date(fmt or "%Y-%m-%d", strict=False)
    if target == "datetime":
        if fmt is None and offset:
            # ISO 8601 with "Z" or "+01:00": UTC, as every other timestamp (no time zone)
            return _iso_with_offset(s)
        if fmt is None:
            # without a format only ISO 8601 is read: polars guesses a format from the first
            # value, and a file of "07/01/2025 06:00" was read day first, six months early
            parsed = pl.when(s.str.contains(_ISO_DATE_START)).then(
                s.str.to_datetime(None, strict=False, time_unit="us")
            )
        elif re.search(r"%#?z", fmt):  # "Z" is the offset +00:00, which %z does not read
            t = s.str.replace(r"[Zz]$", "+00:00")
            parsed = t.str.to_datetime(fmt, strict=False, time_unit="us")
        else:
            parsed = s.str.to_datetime(fmt, strict=False, time_unit="us")
        if fmt is not None and re.search(r"%#?[zZ]", fmt):
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return parsed
    raise ValueError(f"unknown column type {target!r}")


def _bad_counts(typed: pl.DataFrame, bad_cols: list[str]) -> dict[str, int]:
    sums = typed.select(pl.col(c).sum() for c in bad_cols).row(0)
    return {c[len("__bad_") :]: int(n) for c, n in zip(bad_cols, sums, strict=True) if n}


#: A currency sign or ISO code before or after a number ("$12", "12 €", "EUR 12"), or a
#: percent sign after it ("45.3%": 45.3, in percent as written).
_CURRENCY = r"^\s*(?:[$€£¥₹]|[A-Z]{3}\s)?\s*|\s*(?:[$€£¥₹%]|\s[A-Z]{3})?\s*$"


#: A plus or minus sign written before the currency sign or ISO code ("-$37.35", "-EUR 12").
_SIGNED_CURRENCY = r"^\s*([-+])\s*(?:[$€£¥₹]|[A-Z]{3}\s)\s*"


def without_currency(s: pl.Expr) -> pl.Expr:
    """Number text without a currency sign or ISO code before or after it ("12 €": "12"),
    or a percent sign after it ("45.3%": "45.3")."""
    return s.str.replace_all(_CURRENCY, "")


def plain_number(raw: str, target: str, decimal: str) -> pl.Expr:
    """Text column ``raw`` read as a number without its currency sign (a sign before it
    kept: "-$37.35": -37.35), a negative one in parentheses as accounts write it
    ("($47.81)": -47.81), and, where the digits
    are grouped in threes by the mark that is not the decimal one, without the grouping:
    only where that cannot be a decimal mark, with two groups or more ("1,234,567") or a
    decimal part ("1,234.50" with a "." decimal); "1,234" stays unread, as it may be a
    decimal comma."""
    # a sign before the currency sign ("-$37.35", "- € 12"): the sign stays, the sign goes
    s = _blank_to_null(pl.col(raw)).str.replace(_SIGNED_CURRENCY, "${1}")
    s = without_currency(s)
    # an accountant's negative: "(47.81)", "($47.81)"
    s = (
        pl.when(s.str.contains(r"^\(.*\)$"))
        .then("-" + without_currency(s.str.slice(1, s.str.len_chars() - 2)))
        .otherwise(s)
    )
    g, d = re.escape("," if decimal == "." else "."), re.escape(decimal)
    grouped = rf"^[-+]?\d{{1,3}}(({g}\d{{3}}){{2,}}({d}\d+)?|{g}\d{{3}}{d}\d+)$"
    group = "," if decimal == "." else "."
    s = (
        pl.when(s.str.contains(grouped))
        .then(s.str.replace_all(group, "", literal=True))
        .otherwise(s)
    )
    f = _number_text(s, decimal, "").cast(pl.Float64, strict=False)
    if target == "integer":
        return pl.when(f == f.round(0)).then(f).otherwise(None).cast(pl.Int64, strict=False)
    return f


def second_pass(
    first: pl.Expr, raw: str, target: str, decimal: str, timezone: str | None = None
) -> pl.Expr | None:
    """``first`` (the configured parse of text column ``raw``) with what no config makes
    ambiguous read as well: ISO 8601 dates (date-times local to ``timezone``), numbers
    with a currency sign or digit grouping; None for types without such a reading."""
    if target == "date":
        return pl.coalesce(first, _iso_8601(raw, target))
    if target == "datetime":  # each value with its offset, or without one local to timezone
        naive = text_times_to_utc(pl.col(raw), _iso_8601(raw, target), timezone)
        return pl.coalesce(first, naive, _iso_with_offset(_blank_to_null(pl.col(raw))))
    if target in ("numeric", "integer"):
        return pl.coalesce(first, plain_number(raw, target, decimal))
    return None


def _iso_8601(raw: str, target: str) -> pl.Expr:
    """Text column ``raw`` read as an ISO 8601 date or date and time (no offset)."""
    s = _blank_to_null(pl.col(raw))
    parsed = pl.coalesce(
        s.str.to_datetime(f, strict=False, time_unit="us")
        for f in (
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d",
        )
    )
    return parsed.dt.date() if target == "date" else parsed


def _iso_with_offset(s: pl.Expr) -> pl.Expr:
    """ISO 8601 date-times that end in a UTC offset or "Z", as UTC (no zone); others null."""
    t = s.str.replace(r"[Zz]$", "+00:00")
    aware = pl.coalesce(t.str.to_datetime(f, strict=False, time_unit="us") for f in ISO_WITH_OFFSET)
    return aware.dt.convert_time_zone("UTC").dt.replace_time_zone(None)


#: ``format`` / ``timestamp_format`` values for numbers since 1970-01-01 UTC: µs per unit.
EPOCH_FORMATS = {
    "epoch_s": 1_000_000,
    "epoch_ms": 1_000,
    "epoch_us": 1,
    "excel": 86_400_000_000,  # serial days (and fractions) since 1899-12-30
}
#: Excel's serial day of 1970-01-01 (day 1 is 1900-01-01, counting its phantom 1900-02-29).
EXCEL_EPOCH_DAYS = 25_569
_EPOCH_MIN_US = -2_208_988_800 * 1_000_000  # 1900-01-01
_EPOCH_MAX_US = 7_258_118_400 * 1_000_000  # 2200-01-01

#: The start of an ISO 8601 date or date and time ("2025-07-01", "2025-07-01T06:00").
_ISO_DATE_START = r"^\d{4}-\d{2}-\d{2}(?:[T ]|$)"
#: ISO 8601 timestamps with a UTC offset ("Z" is read as "+00:00").
ISO_WITH_OFFSET = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%d %H:%M%#z",
)
#: Text that ends in a UTC offset or "Z" (after an ISO 8601 time).
_ENDS_WITH_OFFSET = re.compile(r"\d[Zz]$|\d[+-]\d\d:?\d\d$")


#: A date alone ("2024-03-01"): a calendar day, the same in every time zone.
_DATE_ONLY = r"^\s*\d{4}-\d{2}-\d{2}\s*$"


def text_times_to_utc(text: pl.Expr, times: pl.Expr, timezone: str | None) -> pl.Expr:
    """``times`` read from ``text`` as local to ``timezone`` (:func:`local_to_utc`), except
    dates alone: a calendar day stays that day (at 00:00), not the evening before in UTC."""
    if timezone is None:
        return times
    return (
        pl.when(text.str.contains(_DATE_ONLY)).then(times).otherwise(local_to_utc(times, timezone))
    )


def _days_only(fmt: str) -> bool:
    """Whether a ``strftime`` format reads calendar days alone (no time of day)."""
    return not re.search(r"%[-#]?[HIklMSpPTRrcsfXx]", fmt)


def local_to_utc(times: pl.Expr, timezone: str | None) -> pl.Expr:
    """Date-times local to ``timezone`` as UTC (no zone; as is without one). A time the
    clocks skipped is null (a bad value); one they passed twice is the earlier."""
    if timezone is None:
        return times
    return (
        times.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
    )


def has_offset(values: pl.Series) -> bool:
    """Whether a file's timestamps carry a UTC offset, by its first value: how the first
    pass reads them all (one parse, not one per form); values of the other form are read
    by the second pass."""
    first = values.head(1000).drop_nulls().head(1).to_list() or (
        values.drop_nulls().head(1).to_list()
    )
    return bool(first) and bool(_ENDS_WITH_OFFSET.search(str(first[0]).strip()))


#: Number text written with a decimal comma ("1234,56", "-1.234,5", "1 234,56").
_DECIMAL_COMMA = r"^\s*[-+]?[\d.\s\u00a0\u202f']*\d,\d+\s*$"
#: One comma before three digits, nothing else ("2,502"): a thousands comma or a decimal one.
_THOUSANDS_COMMA = r"^\s*[-+]?\d{1,3},\d{3}\s*$"


def _typed(
    df: pl.DataFrame,
    columns: dict[str, tuple[str, str, str | None, ColumnSpec | None]],
    decimal: str = ".",
    thousands: str = "",
    offsets: dict[str, bool] | None = None,
    timezone: str | None = None,
):
    """Type ``df``: columns maps out name → (raw name, type, format, spec); numbers as
    ``decimal`` / ``thousands`` say; local date-times in ``timezone`` become UTC.

    Returns the typed frame (with ``_parse_errors``), the count of bad values per column, a
    hint per column whose bad values look like numbers written with a decimal comma, and
    whether each ISO timestamp column carries a UTC offset: judged by its first value, or
    given as ``offsets`` (a later batch of the same file).
    """
    judged: dict[str, bool] = dict(offsets or {})
    exprs, checks = [], []
    bad_exprs: dict[str, pl.Expr] = {}
    grouped_exprs: dict[str, pl.Expr] = {}  # of those, "2,502": a thousands comma as likely
    first_pass: dict[str, pl.Expr] = {}
    local: dict[str, str | None] = {}  # date-time columns read as local times
    for out, (raw, typ, fmt, spec) in columns.items():
        dtype = df.schema[raw]
        native = (
            (typ == "numeric" and dtype.is_numeric())
            or (typ == "integer" and dtype.is_integer())
            or (typ == "boolean" and dtype == pl.Boolean)
            or (typ == "date" and dtype == pl.Date)
            or (typ == "datetime" and isinstance(dtype, pl.Datetime))
        )
        if native:
            e = pl.col(raw).cast(
                {"numeric": pl.Float64, "integer": pl.Int64}.get(typ, dtype), strict=False
            )
            if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
                e = e.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            elif isinstance(dtype, pl.Datetime):
                e = local_to_utc(e, timezone)
            exprs.append(e.alias(out))
            continue
        if typ == "datetime" and dtype == pl.Date:  # calendar days: no zone to convert
            exprs.append(pl.col(raw).cast(pl.Datetime("us")).alias(out))
            continue
        if typ == "datetime" and fmt is None and out not in judged:
            judged[out] = has_offset(df[raw])  # by the first value of the file
        offset = judged.get(out, False)
        parsed = parse_expr(
            raw, spec, typ, fmt, decimal=decimal, thousands=thousands, offset=offset
        )
        aware = offset or fmt in EPOCH_FORMATS or bool(fmt and re.search(r"%#?z", fmt))
        if typ == "datetime" and not aware and not (fmt and _days_only(fmt)):
            parsed = text_times_to_utc(pl.col(raw).cast(pl.String), parsed, timezone)
        if typ == "datetime" and (fmt is None or not aware):
            # the second pass reads ISO values without an offset as local to the zone, in a
            # file whose first value has one too (they were read as UTC)
            local[out] = timezone
        exprs.append(parsed.alias(out))
        if typ in ("string", "categorical"):
            continue  # text cannot fail to parse
        first_pass[out] = parsed
        bad = given_value(raw, typ) & parsed.is_null()
        # a flag per value (one bit a row; a column of error texts costs 16 bytes a row
        # even when every value is null: 870 MB a column at 54M lines)
        checks.append(bad.fill_null(False).alias(f"__bad_{out}"))
        if typ in ("numeric", "integer") and decimal == ".":
            text = without_currency(pl.col(raw).cast(pl.String))
            bad_exprs[out] = bad & text.str.contains(_DECIMAL_COMMA)
            grouped_exprs[out] = bad & text.str.contains(_THOUSANDS_COMMA)
    typed = df.with_columns(checks).with_columns(exprs)
    bad_cols = [c for c in typed.columns if c.startswith("__bad_")]
    counts: dict[str, int] = {}
    if bad_cols:
        counts = _bad_counts(typed, bad_cols)
    if counts:
        # a second pass, only for columns with failures, for text that is unambiguous
        # whatever the config says: ISO 8601 dates (a spreadsheet's date cell, a mixed
        # export) and numbers with a currency sign or digit grouping ("$1,234.50" when the
        # decimal mark is "."); from the raw text in ``df``, as ``typed`` may have replaced
        # a column of that name
        redo = []
        for out in counts:
            raw, typ = columns[out][0], columns[out][1]
            if (
                df.schema[raw] != pl.String
                or (fixed := second_pass(first_pass[out], raw, typ, decimal, local.get(out)))
                is None
            ):
                continue
            bad = given_value(raw, typ) & fixed.is_null()
            redo.append(fixed.alias(out))
            redo.append(bad.fill_null(False).alias(f"__bad_{out}"))
        if redo:
            typed = typed.with_columns(df.select(redo).get_columns())
            counts = _bad_counts(typed, bad_cols)
    if counts:
        failed = [f"__bad_{out}" for out in counts]
        names = [pl.when(pl.col(c)).then(pl.lit(c[len("__bad_") :])) for c in failed]
        typed = typed.with_columns(
            pl.when(pl.any_horizontal(failed))
            .then(pl.concat_str(names, separator=",", ignore_nulls=True))
            .alias("_parse_errors")
        )
    else:
        typed = typed.with_columns(pl.lit(None, dtype=pl.String).alias("_parse_errors"))
    hints: dict[str, str] = {}
    commas = {c: e for c, e in bad_exprs.items() if c in counts}
    if commas:
        found = df.select(
            *(e.sum().alias(c) for c, e in commas.items()),
            *(grouped_exprs[c].sum().alias(f"__grouped_{c}") for c in commas),
        ).row(0, named=True)
        for out in commas:
            n = found[out]
            if n and n == found[f"__grouped_{out}"] and n * 2 >= counts[out]:
                hints[out] = (
                    f"{n} look like numbers with a thousands comma (e.g. '2,502'): set "
                    '`thousands: ","` for this table in the data set config (or `decimal: ","` '
                    "if the commas are decimal marks)"
                )
            elif n and n * 2 >= counts[out]:
                hints[out] = (
                    f"{n} look like numbers with a decimal comma (e.g. '1234,56'): set "
                    '`decimal: ","` for this table in the data set config (and `thousands` '
                    "when they have a thousands separator)"
                )
    for out in counts:
        if out not in hints:
            hints[out] = _bad_example(df, typed[f"__bad_{out}"], columns[out], local.get(out))
    keep = [*columns.keys(), "_source_file", "_parse_errors"]
    return typed.select(keep), counts, hints, judged


def parse_times(
    values: pl.Series, kind: str, fmt: str | None, timezone: str | None = None
) -> pl.Series:
    """``values`` read as ingestion reads a ``date`` or ``datetime`` column: with its format,
    offsets and ``timezone``, as UTC without a zone; bad values null."""
    df = pl.DataFrame({"v": values, "_source_file": pl.repeat("", len(values), eager=True)})
    typed, *_ = _typed(df, {"t": ("v", kind, fmt, None)}, timezone=timezone)
    return typed["t"]


def _bad_example(
    df: pl.DataFrame,
    bad: pl.Series,
    column: tuple[str, str, str | None, Any],
    timezone: str | None = None,
) -> str:
    """A value of ``column`` that did not parse, and how it was read (a local time the
    clocks of ``timezone`` skipped is said to be one)."""
    raw, typ, fmt, _ = column
    value = df.filter(bad)[raw].head(1).to_list()
    shown = repr(str(value[0])) if value else "?"
    if typ == "datetime" and timezone and value and df.schema[raw] == pl.String:
        text = pl.DataFrame({raw: [str(value[0])]})
        wall = parse_expr(raw, None, typ, fmt) if fmt else _iso_8601(raw, typ)
        if text.select(wall.is_not_null()).item():
            return (
                f"e.g. {shown}: no such time in {timezone} (the clocks skipped it, as summer "
                "time began)"
            )
    if typ in ("date", "datetime"):
        how = f"the format {fmt!r}" if fmt else "ISO 8601 (set the format in the config)"
        unit = _epoch_unit(str(value[0])) if value and not fmt else None
        if unit:
            how = (
                f"ISO 8601; it looks like Unix time in {unit[1]}: set `timestamp_format: "
                f"{unit[0]}` (a column's `format`) in the config"
            )
        return f"e.g. {shown}, read as {typ} with {how}"
    return f"e.g. {shown}, read as {typ}"


#: Whole numbers taken for Unix times by their size (1979 to 2099): format, unit, range.
_EPOCH_SIZES = (
    ("epoch_s", "seconds", (3e8, 4.1e9)),
    ("epoch_ms", "milliseconds", (3e11, 4.1e12)),
    ("epoch_us", "microseconds", (3e14, 4.1e15)),
)


def _epoch_unit(text: str) -> tuple[str, str] | None:
    """The epoch format and unit ``text`` (a time that did not parse) would be in, by its
    size, when it is a plain number (``1768866749``: seconds); None otherwise."""
    if not re.fullmatch(r"\d{9,16}(\.\d+)?", text.strip()):
        return None
    number = float(text)
    return next(
        ((fmt, unit) for fmt, unit, (low, high) in _EPOCH_SIZES if low <= number < high), None
    )


def _ingest(
    table: str,
    spec: SourceSpec,
    columns: dict[str, tuple[str, str, str | None, ColumnSpec | None]],
    landing_url: str,
    storage_options: dict[str, Any],
    finish: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    only: list[str] | None = None,
    count_repeats: bool = False,
    optional: frozenset[str] = frozenset(),
    optional_in: dict[str, frozenset[str]] | None = None,
) -> IngestResult:
    """Read, type and (with ``finish``) post-process every file of a table, then stack them.

    ``finish`` runs on each typed file, which is then rechunked, before the stack: every
    column of the table then has one chunk per file, so later ``with_columns``/``drop``
    calls on it share the buffers; on misaligned chunks polars would rechunk (copy) the
    whole table in each of them. With ``only`` (file URLs, e.g. from
    :func:`transaction_files`), just those files are read, without listing the source.
    With ``count_repeats``, each CSV file's lines repeating an earlier line are counted.
    A file lacking columns of ``optional`` (attributes an export did not have yet) is read
    with them missing when it comes before every file that has them (name order, the time
    order of dated exports); a file lacking one after a file with it (an export that dropped
    it), or a column no file has (misnamed in the config), is a problem as without
    ``optional``: the files are then read again, each allowed its columns of
    ``optional_in``.
    """
    finish = finish or (lambda frame: frame)
    url = resolve_source(spec, landing_url)
    files = list_source_files(url, storage_options) if only is None else list(only)
    if not files:
        raise IngestError(
            f"no data files for table '{table}' at {url}: seed the landing zone "
            "(`churn seed`) or fix 'path' in the data set config"
        )
    wanted = list(dict.fromkeys(raw for raw, *_ in columns.values()))
    frames, problems, raw_bytes, empty = [], [], {}, 0
    counts: Counter[str] = Counter()
    hints: dict[str, str] = {}

    ident = columns["customer_id"][0] if "customer_id" in columns else None
    totals = 0

    def typed_parts(parts: Iterable[pl.DataFrame]) -> tuple[list, Counter, dict, int]:
        nonlocal totals
        out, bad_counts, found_hints, blank = [], Counter(), {}, 0
        offsets: dict[str, bool] | None = None  # by the file's first value, for every batch
        for df in parts:
            df, n, t = _without_empty_rows(df, wanted, ident)
            blank += n
            totals += t
            typed, bad, found, offsets = _typed(
                df, columns, spec.decimal, spec.thousands, offsets=offsets, timezone=spec.timezone
            )
            del df
            bad_counts.update(bad)
            found_hints.update(found)
            out.append(finish(typed).rechunk())
        return out, bad_counts, found_hints, blank

    stamps: dict[str, str | None] = {}
    repeats: dict[str, int] = {}
    absent: dict[str, list[str]] = {}
    for f in files:
        done = None
        stamps[f.rsplit("/", 1)[-1]] = file_stamp(f, storage_options)
        batches = local_csv_batches(f, f.rsplit("/", 1)[-1], spec, wanted, storage_options)
        if batches is not None:
            if count_repeats:  # before its typed lines are held: a large file's hashes
                name = f.rsplit("/", 1)[-1]
                repeats[name] = repeated_lines(f, name, spec, storage_options) or 0
            try:
                done = typed_parts(batches)
            except pl.exceptions.PolarsError:
                done = None  # read whole below: that names the problem
            if done is not None and not done[0]:
                done = None  # no rows: read whole below, which says so
        if done is None:
            df, problem, data = _read_one(
                f,
                spec,
                wanted,
                storage_options,
                repeats if count_repeats else None,
                optional if optional_in is None else optional_in.get(name_of(f), frozenset()),
                absent,
            )
            if problem is not None:
                problems.append(problem)
                raw_bytes[problem.file] = data
                continue
            done = typed_parts([df])
            del df
        parts, bad, found, n = done
        frames += parts
        counts.update(bad)
        hints.update(found)
        empty += n
    if absent and optional_in is None:
        read = [name_of(f) for f in files if name_of(f) not in {p.file for p in problems}]
        allowed = _before_first_with(read, absent, optional)
        if any(set(cols) - allowed.get(n, frozenset()) for n, cols in absent.items()):
            return _ingest(
                table,
                spec,
                columns,
                landing_url,
                storage_options,
                finish,
                only,
                count_repeats,
                optional,
                allowed,
            )
    frame = pl.concat(frames, how="vertical_relaxed") if frames else finish(_empty_frame(columns))
    errors = frame["_parse_errors"]
    if 1 < errors.n_chunks() != frame.to_series(0).n_chunks():
        # polars merges the all-null error columns of adjacent clean files (or batches):
        # cut it like the rest, or the next expression on the table copies every column
        frame = frame.with_columns(chunked_like(errors, frame))
    return IngestResult(
        table,
        frame,
        [f.rsplit("/", 1)[-1] for f in files],
        file_problems=problems,
        parse_errors=dict(counts),
        parse_hints=hints,
        raw_bytes=raw_bytes,
        urls={f.rsplit("/", 1)[-1]: f for f in files},
        stamps=stamps,
        empty_rows=empty,
        total_rows=totals,
        repeated_lines=repeats,
        absent_columns=absent,
    )


def name_of(url: str) -> str:
    """A file's name: the last part of its URL."""
    return url.rsplit("/", 1)[-1]


def _before_first_with(
    read: list[str], absent: dict[str, list[str]], optional: frozenset[str]
) -> dict[str, frozenset[str]]:
    """Per file of ``read`` (in order), the columns of ``optional`` it may lack: those of
    ``absent[file]`` that a later file has and no earlier one did."""
    allowed: dict[str, set[str]] = {}
    for c in optional:
        having = [i for i, n in enumerate(read) if c not in absent.get(n, ())]
        for i, n in enumerate(read):
            if having and i < having[0] and c in absent.get(n, ()):
                allowed.setdefault(n, set()).add(c)
    return {n: frozenset(cols) for n, cols in allowed.items()}


def file_stamp(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Size and modification time of a file (None when it cannot be asked): a file still
    being written has another one after it was read."""
    from churn_assets.lib.storage import info_stamp

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return info_stamp(fs.info(path))
    except (OSError, ValueError):
        return None


def chunked_like(series: pl.Series, frame: pl.DataFrame) -> pl.Series:
    """``series`` cut into the chunks of ``frame``'s first column: on a frame whose columns
    are chunked differently, polars rechunks (copies) every column in the next ``drop`` or
    ``with_columns``."""
    if not frame.width or frame.to_series(0).n_chunks() <= 1:
        return series.rechunk()
    parts, offset = [], 0
    for chunk in frame.to_series(0).get_chunks():
        parts.append(series.slice(offset, chunk.len()).rechunk())
        offset += chunk.len()
    return pl.concat(parts, rechunk=False)


_POLARS_TYPES = {
    "string": pl.String,
    "categorical": pl.String,
    "numeric": pl.Float64,
    "integer": pl.Int64,
    "boolean": pl.Boolean,
    "date": pl.Date,
    "datetime": pl.Datetime("us"),
}


def _empty_frame(columns: dict[str, tuple[str, str, str | None, ColumnSpec | None]]):
    schema = {out: _POLARS_TYPES[typ] for out, (_, typ, _, _) in columns.items()}
    schema |= {"_source_file": pl.String, "_parse_errors": pl.String}
    return pl.DataFrame(schema=schema)


def _attribute_names(cfg: DatasetConfig) -> set[str]:
    return {a.name for a in cfg.customers.attributes} if cfg.customers else set()


def customer_columns(cfg: DatasetConfig) -> dict[str, tuple[str, str, str | None, Any]]:
    """Out column → (raw column, type, format, spec) for the customer table."""
    spec: CustomersSpec = cfg.customers  # type: ignore[assignment]
    cols: dict[str, tuple[str, str, str | None, Any]] = {}
    if not spec.row_ids:
        cols["customer_id"] = (spec.id_column, "string", None, None)
    if spec.signup_date is not None:
        sd = spec.signup_date
        cols["signup_date"] = (sd.raw, sd.type, sd.format, sd)
    for a in spec.attributes:
        cols[a.name] = (a.raw, a.type, a.format, a)
    if isinstance(spec.latest_by, ColumnSpec):  # 'file' orders by the files read instead
        lb = spec.latest_by
        cols[LATEST_BY] = (lb.raw, lb.type, lb.format, lb)
    labels = cfg.labels
    if labels.source == "columns" and labels.file is None:
        cols.update(_label_columns(cfg))
    return cols


def _label_columns(cfg: DatasetConfig) -> dict[str, tuple[str, str, str | None, Any]]:
    labels = cfg.labels
    cols: dict[str, tuple[str, str, str | None, Any]] = {
        "churned": (labels.churned_column, "string", None, None)  # type: ignore[dict-item]
    }
    if labels.total_sales_column:
        cols["total_sales"] = (labels.total_sales_column, "numeric", None, None)
    return cols


def label_file_columns(cfg: DatasetConfig) -> dict[str, tuple[str, str, str | None, Any]]:
    """Out column → (raw column, type, format, spec) for a separate label file."""
    spec = cfg.labels.file
    ident = (spec.id_column if spec else None) or cfg.customers.id_column  # type: ignore[union-attr]
    return {"customer_id": (ident, "string", None, None), **_label_columns(cfg)}


def other_spelling_problem(
    unmatched: pl.Series,
    known: pl.Series,
    *,
    total: int,
    source: str,
    short: str,
    consequence: str,
) -> str | None:
    """Why ids of ``source`` (``short`` in the example) that the customer table lacks are
    refused when most of them (``unmatched``, of ``total``) are in it (``known``) only in
    another spelling: other leading zeros ("123" and "000123": one file went through a
    spreadsheet) or other letter case ("Anna@Example.com" and "anna@example.com"); None
    otherwise."""
    if not unmatched.len():
        return None
    spellings = (
        (pl.col("id").str.strip_chars_start("0"), "other leading zeros"),
        (pl.col("id").str.to_lowercase(), "another letter case"),
    )
    for norm, how in spellings:
        plain = known.cast(pl.String).to_frame("id").select(norm)["id"]
        lost = unmatched.cast(pl.String).to_frame("id").filter(norm.is_in(plain.implode()))
        if not lost.height or lost.height < unmatched.len() / 2:
            continue
        example = lost["id"].sort()[0]
        spelled = pl.DataFrame({"id": [example]}).select(norm).item()
        by_plain = dict(zip(plain, known.cast(pl.String), strict=True))
        return (
            f"{lost.height:,} of the {total:,} customer ids in {source} are in the customer "
            f"table only with {how} ({short}: {example!r}; customers: "
            f"{by_plain[spelled]!r}): the two files write ids differently, and those "
            f"customers would {consequence}; export the ids the same way in both files"
        )
    return None


def file_id_spelling_problem(
    ids: pl.Series,
    known: pl.Series,
    consequence: str = "lose these purchases and look as if they had stopped buying",
) -> str | None:
    """Why one landing file's customer ids are refused: most of those the customer table
    (``known``) lacks are in it only in another spelling (the export changed: ``c0000480``
    for ``C0000480``, ``000123`` for ``123``), so its lines would count for no customer and
    those customers would look as if they had stopped buying; None otherwise (ids of new
    customers are no spelling problem)."""
    distinct = ids.drop_nulls().unique()
    unmatched = distinct.filter(~distinct.is_in(known.implode()))
    return other_spelling_problem(
        unmatched,
        known,
        total=distinct.len(),
        source="this file",
        short="file",
        consequence=consequence,
    )


def respelled_files(frame: pl.DataFrame, known: pl.Series) -> dict[str, str]:
    """Source file → why it is refused, for each file of ``frame`` (``customer_id`` and
    ``_source_file`` columns) whose ids are those of ``known`` in another spelling
    (:func:`file_id_spelling_problem`): a customer table exported anew that way would make
    every such customer a new one without purchases."""
    found = {}
    for (name,), part in frame.group_by("_source_file", maintain_order=True):
        problem = file_id_spelling_problem(
            part["customer_id"],
            known,
            consequence="become new customers without purchases (their lines name the old ids)",
        )
        if name is not None and problem:
            found[str(name)] = problem
    return found


def rows_of_refused_files(
    stored: pl.DataFrame, new: pl.DataFrame, read: list[str], refused: set[str]
) -> pl.DataFrame:
    """The usable rows of the stored customer table (``stored``) that came from a file whose
    new version was refused (``refused``: names moved to quarantine) and that has not landed
    again (not in ``read``), as rows of ``new``, leaving out ids ``new`` has: until a fixed
    version lands, those customers stay, as the stored table kept them. Empty when the
    stored table has other columns (the config changed)."""
    waiting = sorted(refused - set(read))
    if not waiting or not set(new.columns) <= set(stored.columns):
        return new.clear()
    kept = stored.filter(
        pl.col("_source_file").is_in(waiting)
        & ~pl.col("_quarantined").fill_null(False)
        & ~pl.col("customer_id").is_in(new["customer_id"].implode())
    )
    return kept.select(new.columns).cast(new.schema)


def customers_gone_warning(stored: pl.Series, current: pl.Series) -> tuple[int, str | None]:
    """How many customers of the stored customer table (``stored`` ids) a new version of it
    (``current`` ids) no longer has, and what that means (None when none is gone): an export
    that drops customers (those who cancelled, say) takes them out of the scores, the
    sidecar and the training set, and their purchase lines count in no feature."""
    ids = stored.drop_nulls().unique()
    gone = ids.filter(~ids.is_in(current.implode()))
    if not gone.len():
        return 0, None
    examples = ", ".join(map(repr, gone.sort().head(3).to_list()))
    return gone.len(), (
        f"{gone.len():,} of the {ids.len():,} customers stored before are in none of "
        f"the customer files now (e.g. {examples}): they are no longer scored or served, their "
        "purchase lines stay stored but count in no feature, and they leave the training set "
        "(an export that drops customers who left biases the churn label); if the export "
        "changed, land a customer file that still holds them"
    )


def _join_label_file(
    cfg: DatasetConfig, res: IngestResult, frame: pl.DataFrame, landing_url: str, options: dict
) -> pl.DataFrame:
    """``frame`` (the customer table) with the label columns of ``labels.file``, joined by
    customer id; the label file's files and problems are added to ``res``. A customer
    without a label row has a blank label. Raises ValueError when an id repeats in the label
    file or no label row names a customer of the table."""
    spec = cfg.labels.file
    assert spec is not None
    lab = _ingest("raw_customers", spec, label_file_columns(cfg), landing_url, options)
    res.files += lab.files
    res.file_problems += lab.file_problems
    res.raw_bytes |= lab.raw_bytes
    res.urls |= lab.urls
    res.stamps |= lab.stamps
    res.parse_hints |= lab.parse_hints
    res.empty_rows += lab.empty_rows
    res.parse_errors = dict(Counter(res.parse_errors) + Counter(lab.parse_errors))
    labels = lab.frame.with_columns(plain_id(pl.col("customer_id"))).filter(
        pl.col("customer_id").is_not_null()
    )
    repeated = labels.filter(pl.col("customer_id").is_duplicated())["customer_id"].unique()
    if repeated.len():
        shown = ", ".join(repr(v) for v in repeated.sort().head(3).to_list())
        raise ValueError(
            f"label file {', '.join(lab.files)}: {repeated.len():,} customer id(s) have more "
            f"than one label row (e.g. {shown}); a snapshot has one label per customer"
        )
    known = labels["customer_id"].is_in(frame["customer_id"].drop_nulls().implode())
    res.label_rows = (int(known.sum()), labels.height)
    problem = other_spelling_problem(
        labels.filter(~known)["customer_id"],
        frame["customer_id"].drop_nulls(),
        total=labels.height,
        source=f"the label file {', '.join(lab.files)}",
        short="label file",
        consequence="be left without a label (keep them as text in a spreadsheet)",
    )
    if problem:
        raise ValueError(problem)
    if labels.height and frame.height and not known.any():
        raise ValueError(
            f"none of the {labels.height:,} customer ids in the label file is in the customer "
            f"table (label file: {', '.join(repr(v) for v in labels['customer_id'].head(3))}; "
            f"customers: {', '.join(repr(v) for v in frame['customer_id'].drop_nulls().head(3))})"
        )
    keep = ["customer_id", *(c for c in ("churned", "total_sales") if c in labels.columns)]
    joined = frame.join(
        labels.select(
            *keep,
            pl.col("_parse_errors").alias("_label_errors"),
            pl.col("_source_file").alias("_label_file"),
        ),
        on="customer_id",
        how="left",
        maintain_order="left",
    )
    bad_label = pl.col("_label_errors").is_not_null()
    return joined.with_columns(
        pl.concat_str(["_parse_errors", "_label_errors"], separator=",", ignore_nulls=True)
        .replace("", None)
        .alias("_parse_errors"),
        # a value the label file got wrong is that file's bad row
        pl.when(bad_label)
        .then(pl.col("_label_file"))
        .otherwise(pl.col("_source_file"))
        .alias("_source_file"),
    ).select(*frame.columns[:-2], *keep[1:], "_source_file", "_parse_errors")


def transaction_columns(cfg: DatasetConfig) -> dict[str, tuple[str, str, str | None, Any]]:
    """Out column → (raw column, type, format, spec) for the transaction table."""
    t: TransactionsSpec = cfg.transactions  # type: ignore[assignment]
    cols: dict[str, tuple[str, str, str | None, Any]] = {
        "customer_id": (t.customer_id, "string", None, None),
        "timestamp": (t.timestamp, "datetime", t.timestamp_format, None),
    }
    if t.amount:
        cols["amount"] = (t.amount, "numeric", None, None)
    elif not t.activity_only:
        cols["quantity"] = (t.quantity, "numeric", None, None)
        cols["unit_price"] = (t.unit_price, "numeric", None, None)
    for out in ("invoice_id", "category", "country"):
        raw = getattr(t, out)
        if raw:
            cols[out] = (raw, "string", None, None)
    return cols


def plain_id(ids: pl.Expr) -> pl.Expr:
    """Customer ids as one text however a file wrote them: a number exported as a float
    loses its ``.0`` (``17850.0``), or its ``,0`` with a decimal comma (``15240,0``); other
    ids (``C0003.0``) are kept as they are."""
    return ids.str.replace(r"^(\d+)[.,]0$", "${1}")


def label_key(value: pl.Expr) -> pl.Expr:
    """A churn label value as compared with ``churned_positive``: numbers by value ("1.0"
    is "1"), other text without case ("YES" is "yes")."""
    number = value.cast(pl.Float64, strict=False)
    return (
        pl.when(number.is_not_null())
        .then(number.cast(pl.String))
        .otherwise(value.str.to_lowercase())
    )


def _one_class_label(
    raw: pl.Series, labels: pl.Series, column: str | None, positive: list[str]
) -> str | None:
    """Why a churn label column cannot be used (no value or every value in
    ``churned_positive``), naming its most common values; None when it has both classes."""
    churned = int(labels.sum() or 0)
    known = labels.count()
    if known == 0 or 0 < churned < known:
        return None
    counts = raw.drop_nulls().value_counts(sort=True).head(5).rows()
    values = ", ".join(f"'{v}' ({n:,})" for v, n in counts)
    which = "none" if churned == 0 else "every one"
    return (
        f"{which} of the churn label's values is in labels.churned_positive {positive} "
        f"(column '{column}': {values}): set churned_positive to the values that mean churned"
    )


def label_keys(values: list[str]) -> list[str]:
    """``values`` as :func:`label_key` compares them."""
    frame = pl.DataFrame({"v": pl.Series(values, dtype=pl.String)})
    return frame.select(label_key(pl.col("v")))["v"].to_list()


#: Label values (as :func:`label_key` gives them) that plainly mean retained: a mixed export
#: writing both ``no`` and ``False`` needs no ``churned_negative``.
PLAIN_NEGATIVES = ("no", "false", "0.0", "n", "f")


def _several_retained_values(raw: pl.Series, column: str | None, positive: list[str]) -> str | None:
    """Why a label column with two or more values outside ``churned_positive`` (``No`` and
    ``Unknown``) cannot be read without ``churned_negative``: each would count as retained."""
    keyed = raw.drop_nulls().cast(pl.String).to_frame("v").with_columns(k=label_key(pl.col("v")))
    others = keyed.filter(~pl.col("k").is_in(positive))
    if others["k"].n_unique() < 2 or others["k"].is_in(PLAIN_NEGATIVES).all():
        return None
    counts = others.group_by("k").agg(pl.col("v").first(), pl.len()).sort("len", descending=True)
    shown = ", ".join(f"'{v}' ({n:,})" for v, n in counts.select("v", "len").head(5).rows())
    return (
        f"column '{column}' holds {counts.height} values besides churned_positive ({shown}): "
        "each would count as retained. List the values that mean retained in "
        "labels.churned_negative; a row with another value then has no label (scored, not "
        "trained on, with labels.allow_unlabelled: true)"
    )


#: The typed ``customers.latest_by`` column while the latest rows are picked (then dropped).
LATEST_BY = "latest_by"


def _latest_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Each customer's row with the latest ``latest_by`` (a row without a readable one comes
    first), the column dropped; rows without an id are all kept for the checks to report.
    Returns the frame and the count of earlier rows left out."""
    known = frame.filter(pl.col("customer_id").is_not_null())
    latest = known.sort(LATEST_BY, nulls_last=False, maintain_order=True).unique(
        "customer_id", keep="last", maintain_order=True
    )
    out = pl.concat([latest, frame.filter(pl.col("customer_id").is_null())]).drop(LATEST_BY)
    return out, frame.height - out.height


def _latest_file_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Each customer's rows from the last file that holds the customer (files in the order
    they were read: name order), for ``latest_by: file``. Rows repeating an id within that
    file all stay, for ``expectations_met`` to report, as do rows without an id. Returns the
    frame and the count of earlier rows left out."""
    if frame.is_empty():  # every file unreadable: nothing to order
        return frame, 0
    files = frame["_source_file"].unique(maintain_order=True)
    order = pl.col("_source_file").replace_strict(files, pl.int_range(files.len(), eager=True))
    keep = pl.col("customer_id").is_null() | (order == order.max().over("customer_id"))
    out = frame.filter(keep)
    return out, frame.height - out.height


def ingest_customers(cfg: DatasetConfig, landing_url: str, storage_options=None) -> IngestResult:
    """Read the customer table of ``cfg`` into a typed frame (``customer_id`` first)."""
    if cfg.customers is None:
        raise IngestError(f"data set '{cfg.name}' has no customer table")
    columns = customer_columns(cfg)
    required = {raw for name, (raw, *_) in columns.items() if name not in _attribute_names(cfg)}
    res = _ingest(
        "raw_customers",
        cfg.customers,
        columns,
        landing_url,
        storage_options or {},
        # dated snapshot exports: name order is time order, an attribute may start later
        optional=frozenset(a.raw for a in cfg.customers.attributes) - required
        if cfg.customers.latest_by == "file"
        else frozenset(),
    )
    if cfg.customers.row_ids:  # no id column: the row number, over the files in order
        ids = pl.int_range(1, pl.len() + 1).cast(pl.String).alias("customer_id")
        frame = res.frame.select(ids, pl.all())
    else:
        frame = res.frame.with_columns(plain_id(pl.col("customer_id")))
    if LATEST_BY in frame.columns:
        frame, res.earlier_rows = _latest_rows(frame)
    elif cfg.customers.latest_by == "file":
        frame, res.earlier_rows = _latest_file_rows(frame)
    if cfg.labels.file is not None:
        frame = _join_label_file(cfg, res, frame, landing_url, storage_options or {})
    if cfg.labels.source == "columns":
        labels = frame["churned"]
        positive = label_keys(cfg.labels.churned_positive)
        negative = label_keys(cfg.labels.churned_negative or [])
        key = label_key(pl.col("churned"))
        is_label = key.is_in(positive) | key.is_in(negative) if negative else pl.lit(True)
        frame = frame.with_columns(
            pl.when(pl.col("churned").is_null() | ~is_label)
            .then(None)
            .otherwise(key.is_in(positive).cast(pl.Int8))
            .alias("churned")
        )
        problem = _one_class_label(
            labels, frame["churned"], cfg.labels.churned_column, cfg.labels.churned_positive
        )
        if problem is None and cfg.labels.churned_negative is None:
            problem = _several_retained_values(labels, cfg.labels.churned_column, positive)
            res.label_blocks = problem is not None
        res.label_problem = problem
        if "total_sales" in frame.columns:
            # blank totals (brand-new customers) count as no sales so far; counted, as a
            # table whose missing values mean "unknown" then trains on zeros
            res.zero_value_labels = frame.select(
                (pl.col("total_sales").is_null() & pl.col("churned").is_not_null()).sum()
            ).item()
            frame = frame.with_columns(pl.col("total_sales").fill_null(0.0))
    res.frame = frame
    return res


def ingest_transactions(
    cfg: DatasetConfig, landing_url: str, storage_options=None, only: list[str] | None = None
) -> IngestResult:
    """Read the transaction table of ``cfg``: amount, returns flag and a normalised customer id.
    With ``only`` (landing file URLs), just those files."""
    if cfg.transactions is None:
        return IngestResult("raw_transactions", empty_transactions(), [])
    t = cfg.transactions
    return _ingest(
        "raw_transactions",
        t,
        transaction_columns(cfg),
        landing_url,
        storage_options or {},
        finish=lambda frame: _finish_transactions(frame, t),
        only=only,
        count_repeats=True,
    )


def _finish_transactions(frame: pl.DataFrame, t: TransactionsSpec) -> pl.DataFrame:
    """Typed transaction lines in the raw contract: amount, returns flag, normalised id."""
    if t.activity_only:
        frame = frame.with_columns(pl.lit(1.0).alias("amount"))  # each event counts once
    elif "amount" not in frame.columns:
        frame = frame.with_columns((pl.col("quantity") * pl.col("unit_price")).alias("amount"))
    if t.amount_scale != 1.0:  # cents (or another minor unit) to currency units
        frame = frame.with_columns(pl.col("amount") * t.amount_scale)
    for out in ("invoice_id", "category", "country"):
        if out not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(out))
    is_return = pl.col("amount") < 0
    if t.cancellation_prefix:
        is_return = is_return | pl.col("invoice_id").str.starts_with(
            t.cancellation_prefix
        ).fill_null(False)
    frame = frame.with_columns(
        plain_id(pl.col("customer_id")),
        is_return.fill_null(False).alias("is_return"),
    )
    return frame.select(TRANSACTION_COLUMNS + ["_source_file", "_parse_errors"])


#: The raw transaction contract: column names and types, in order.
TRANSACTION_SCHEMA = {
    "customer_id": pl.String,
    "timestamp": pl.Datetime("us"),
    "amount": pl.Float64,
    "invoice_id": pl.String,
    "category": pl.String,
    "country": pl.String,
    "is_return": pl.Boolean,
}
TRANSACTION_COLUMNS = list(TRANSACTION_SCHEMA)


def empty_transactions() -> pl.DataFrame:
    """The typed, empty transaction table used by snapshot data sets."""
    return pl.DataFrame(
        schema={**TRANSACTION_SCHEMA, "_source_file": pl.String, "_parse_errors": pl.String}
    )
