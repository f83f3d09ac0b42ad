"""Open a landing file's bytes as a table: CSV, Parquet or a spreadsheet, compressed or not.

Compression (gzip, bzip2, xz, a zip archive holding one file) is recognised by its first
bytes, whatever the file is called; the table inside by the declared ``format``, its own first
bytes or its name. Spreadsheets (``.xlsx``, ``.xlsm``, ``.xlsb``, ``.xls``, ``.ods``) are read
with `fastexcel` (the Rust `calamine` reader) with every cell as text, as CSV files are: a
date cell reads as ISO 8601 (``2011-12-09 12:50:00``), a number as its shortest decimal.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import polars as pl

#: Compression suffixes recognised in a source folder (the content decides, not the name).
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: The files a source folder's listing picks up.
DATA_SUFFIXES = (
    *TEXT_SUFFIXES,
    *PARQUET_SUFFIXES,
    *SPREADSHEET_SUFFIXES,
    *JSON_SUFFIXES,
    *(t + c for t in (*TEXT_SUFFIXES, *JSON_SUFFIXES) for c in COMPRESSED_SUFFIXES),
    ".zip",
)

Kind = Literal["csv", "parquet", "excel", "json"]

_ARTICLE = {"parquet": "a Parquet", "excel": "a spreadsheet", "csv": "a CSV", "json": "a JSON"}
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the legacy .xls container


class UnreadableFile(ValueError):
    """A landing file that cannot be read as a table; the message says why and what to do."""


def _zip_members(data: bytes) -> tuple[zipfile.ZipFile, list[str]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise UnreadableFile(f"corrupt zip archive ({e})") from e
    members = [
        m.filename
        for m in archive.infolist()
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and not m.filename.rsplit("/", 1)[-1].startswith(".")
    ]
    return archive, members


def _is_spreadsheet_zip(members: list[str]) -> bool:
    return "[Content_Types].xml" in members or "mimetype" in members


#: Compressed formats by their first bytes: (one-shot decompress, file opener, suffix).
_COMPRESSED = {
    b"\x1f\x8b": (gzip.decompress, gzip.open, ".gz"),
    b"BZh": (bz2.decompress, bz2.open, ".bz2"),
    b"\xfd7zXZ\x00": (lzma.decompress, lzma.open, ".xz"),
}
_ZIP = b"PK\x03\x04"
#: What unpacking a damaged archive raises (zlib.error: a gzip file with bad bytes inside).
_CORRUPT = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


def _compression(head: bytes) -> tuple[Any, Any, str] | None:
    return next((c for magic, c in _COMPRESSED.items() if head.startswith(magic)), None)


def is_packed(head: bytes) -> bool:
    """Whether a file starting with ``head`` is compressed or a zip (a workbook too)."""
    return _compression(head) is not None or head.startswith(_ZIP)


#: A compressed landing file may unpack to at most this many times its size (tables
#: compress 5-20 times; a decompression bomb a thousand times) and at most MAX_UNPACKED.
MAX_UNPACK_RATIO = 100
MAX_UNPACKED = 4 << 30


def unpack(data: bytes, name: str) -> tuple[bytes, str]:
    """The bytes inside a gzip, bzip2, xz or single-file zip ``data`` and the inner file's
    name; anything else (spreadsheets included, which are zip files too) unchanged. What
    unpacks to more than :data:`MAX_UNPACK_RATIO` times its size (or :data:`MAX_UNPACKED`)
    is refused as it is read, not held in memory whole."""
    packed = _compression(data[:8])
    if packed is not None:
        _, opener, suffix = packed
        try:
            with opener(io.BytesIO(data)) as stream:
                return _bounded(stream, len(data), name), _strip(name, suffix)
        except _CORRUPT as e:
            raise UnreadableFile(f"corrupt compressed file ({e})") from e
    if data.startswith(_ZIP):
        archive, member = _zip_table(data)
        if member is None:
            return data, name
        try:
            with archive.open(member) as stream:
                return _bounded(stream, len(data), name), member.rsplit("/", 1)[-1]
        except _CORRUPT as e:
            raise UnreadableFile(f"corrupt zip archive ({e})") from e
    return data, name


def _bounded(stream: Any, packed: int, name: str) -> bytes:
    """All of ``stream`` (a file being unpacked), refused past the unpacking bounds."""
    limit = min(MAX_UNPACKED, max(packed * MAX_UNPACK_RATIO, 64 << 20))
    out = io.BytesIO()
    while block := stream.read(16 << 20):
        out.write(block)
        if out.tell() > limit:
            raise UnreadableFile(
                f"{name} unpacks to more than {limit / 2**20:,.0f} MB from "
                f"{packed / 2**20:,.1f} MB (over {MAX_UNPACK_RATIO} times its size, or "
                f"{MAX_UNPACKED >> 30} GB): refused as a decompression bomb; land it "
                "unpacked if it is a real table"
            )
    return out.getvalue()


def _zip_table(data: bytes) -> tuple[zipfile.ZipFile, str | None]:
    """A zip archive and its one table file (None: the zip is a workbook itself); an
    archive with several files is refused, naming them."""
    archive, members = _zip_members(data)
    if _is_spreadsheet_zip(members):
        return archive, None
    if len(members) != 1:
        listed = ", ".join(repr(m) for m in members[:5]) or "nothing"
        raise UnreadableFile(
            f"zip archive holds {len(members)} files ({listed}): put one table in each "
            "archive, or unzip them into the source folder"
        )
    return archive, members[0]


def read_sample(path: str, limit: int) -> tuple[bytes, str]:
    """The first ``limit`` bytes of a local file's table and the table file's name: a
    compressed file's content unpacked as far as needed (``-1``: all of it), a spreadsheet
    whole."""
    name = Path(path).name
    with open(path, "rb") as f:
        head = f.read(8)
    packed = _compression(head)
    try:
        if packed is not None:
            _, opener, suffix = packed
            with opener(path, "rb") as f:
                return f.read(limit), _strip(name, suffix)
        if head.startswith(_ZIP):
            with open(path, "rb") as f:
                data = f.read()
            archive, member = _zip_table(data)
            if member is None:
                return data, name
            with archive.open(member) as f:
                return f.read(limit), member.rsplit("/", 1)[-1]
    except UnreadableFile:
        raise
    except _CORRUPT as e:
        raise UnreadableFile(f"corrupt compressed file ({e})") from e
    with open(path, "rb") as f:
        if head.startswith(_OLE2) or name.lower().endswith(SPREADSHEET_SUFFIXES):
            return f.read(), name
        return f.read(limit), name


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.lower().endswith(suffix) else name


def _content_kind(data: bytes) -> Kind | None:
    """Parquet or a spreadsheet by its first bytes; None for anything else (text)."""
    if data[:4] == b"PAR1":
        return "parquet"
    if data[:8] == _OLE2:
        return "excel"
    if data.startswith(_ZIP) and _is_spreadsheet_zip(_zip_members(data)[1]):
        return "excel"
    return None


def is_blank(data: bytes) -> bool:
    """Whether ``data`` holds nothing but whitespace (without copying a large file)."""
    return not data[:4096].strip() and not data.strip()


def first_byte(data: bytes) -> bytes:
    """The first byte of ``data`` that is not whitespace (b"" for none)."""
    for start in range(0, len(data), 4096):
        chunk = data[start : start + 4096].lstrip()
        if chunk:
            return chunk[:1]
    return b""


def kind_of(data: bytes, name: str, declared: str = "auto") -> Kind:
    """What ``data`` (already unpacked) holds: the declared format, else its first bytes,
    else its name's suffix; CSV (text) otherwise."""
    if declared != "auto":
        return declared  # type: ignore[return-value]
    found = _content_kind(data)
    if found is not None:
        return found
    low = name.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(SPREADSHEET_SUFFIXES):
        return "excel"
    if low.endswith(JSON_SUFFIXES) or first_byte(data) in (b"{", b"["):
        return "json"
    return "csv"


#: A field that is a value, not a column's name: a number, a date, a time.
VALUE_FIELD = re.compile(r"^[\s\d.,:/+\-$€£%]*$")


def holds_values(fields: list[str]) -> bool:
    """Whether a header line's fields are all values (numbers, dates): a file without a
    header line, whose first row was read as the column names."""
    return any(f.strip() for f in fields) and all(VALUE_FIELD.match(f) for f in fields)


def read_csv_text(
    data: bytes,
    *,
    encoding: str = "utf-8",
    separator: str = ",",
    skip_rows: int = 0,
    n_rows: int | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """A CSV file's bytes as a frame of strings (header names stripped; only ``columns``
    when the file has them all, else every column). UTF-8 is parsed
    from the bytes as they are (no decoded copy: a 700 MB file peaks at 3 GB, not 7 GB);
    other encodings are converted to UTF-8 first. Invalid bytes are named with their
    offset."""
    if encoding in ("utf-8", "utf-8-sig"):
        try:
            return parse_csv_text(
                data, separator=separator, skip_rows=skip_rows, n_rows=n_rows, columns=columns
            )
        except UnreadableFile:
            pass  # invalid UTF-8, or malformed: decoding below says which
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        head = data[:4096]
        control = sum(b < 9 for b in head)  # NUL and the like: no text encoding writes them
        if head.count(0) > len(head) // 20 or control > len(head) // 10:
            raise UnreadableFile(
                f"not a text file: its first {len(head):,} bytes hold "
                f"{control:,} control bytes (binary data named like a CSV: "
                "a wrong file, or a spreadsheet or archive renamed); land the data as CSV, "
                "Parquet, JSON lines or a workbook"
            ) from e
        raise UnreadableFile(
            f"unknown encoding: byte 0x{data[e.start]:02x} at offset {e.start} is not valid "
            f"{encoding}; set 'encoding' in the data set config"
        ) from e
    data = text.encode("utf-8")
    del text
    return parse_csv_text(
        data, separator=separator, skip_rows=skip_rows, n_rows=n_rows, columns=columns
    )


def parse_csv_text(
    text: str | bytes | Path,
    *,
    separator: str = ",",
    skip_rows: int = 0,
    n_rows: int | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """CSV text (or UTF-8 bytes, or a UTF-8 file's path) as a frame of strings (header names
    stripped); only ``columns`` when the header has them all (a wide export's other columns
    are never held in memory), else every column, so the caller can say which one is
    missing."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    elif isinstance(text, Path):
        text = str(text)  # type: ignore[assignment]  # polars reads the file itself
    try:
        selected = None
        if columns is not None:
            selected = _header_names(text, separator, skip_rows, columns)
        frame = pl.read_csv(
            text,
            infer_schema=False,
            separator=separator,
            skip_rows=skip_rows,
            n_rows=n_rows,
            columns=selected,
        )
    except Exception as e:  # polars raises several error types for malformed files
        first = str(e).splitlines()[0]
        if "more fields than defined" in first:
            first += (
                f" (a line splits into more fields than the header at separator {separator!r}: "
                "a file written with another separator, or an unquoted value holding it? "
                "'separator' is one per table, so such a file is re-exported like the others)"
            )
        raise UnreadableFile(f"unreadable file: {first}") from e
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def _header_names(
    source: Any, separator: str, skip_rows: int, columns: list[str]
) -> list[str] | None:
    """The header names (as written, spaces and all) of ``columns`` in CSV ``source``, when
    its header has them all (compared stripped); else None."""
    header = pl.read_csv(
        source, separator=separator, skip_rows=skip_rows, n_rows=0, infer_schema=False
    ).columns
    raw = {c.strip(): c for c in header}
    if not all(c in raw for c in columns):
        return None
    return [raw[c] for c in dict.fromkeys(columns)]


def read_json_records(data: bytes, n_rows: int | None = None) -> pl.DataFrame:
    """JSON records (one object per line, or an array of objects) as a frame of strings, as
    a CSV export would hold them: nested objects flattened to ``parent.child`` columns,
    numbers and booleans as their text; lists are left out."""
    try:
        if first_byte(data) == b"[":
            frame = pl.read_json(io.BytesIO(data), infer_schema_length=None)
            frame = frame.head(n_rows) if n_rows is not None else frame
        else:
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None, n_rows=n_rows)
    except Exception as e:  # polars raises several error types for malformed JSON
        raise UnreadableFile(f"unreadable JSON: {str(e).splitlines()[0]}") from e
    while structs := [c for c, t in frame.schema.items() if isinstance(t, pl.Struct)]:
        frame = frame.with_columns(
            pl.col(c).struct.rename_fields([f"{c}.{f.name}" for f in frame.schema[c].fields])
            for c in structs
        ).unnest(structs)
    scalar = [c for c, t in frame.schema.items() if not isinstance(t, pl.List | pl.Array)]
    return frame.select(pl.col(c).cast(pl.String) for c in scalar)


def sheet_names(data: bytes) -> list[str]:
    """The sheets of a spreadsheet file, in workbook order."""
    return list(_workbook(data).sheet_names)


#: A workbook declaring more cells than this (its sheets' dimensions) or more distinct
#: strings is refused before it is opened: the reader allocates what the file declares,
#: and a 1.6 KB workbook declaring a cell at XFD1048576 aborted the whole process.
MAX_WORKBOOK_CELLS = 50_000_000


def _declared_size_problem(data: bytes) -> str | None:
    """Why an .xlsx ``data`` asks the reader to allocate more than it should (its cells
    span more than :data:`MAX_WORKBOOK_CELLS`, or it declares more distinct strings), or
    None; other formats are left to the reader. The reader allocates the rectangle from the
    first to the last cell a sheet names, however few cells it holds."""
    if not data.startswith(_ZIP):
        return None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except zipfile.BadZipFile:
        return None
    cells = 0
    for name in names:
        if name.startswith("xl/worksheets/") and name.endswith(".xml"):
            with archive.open(name) as f:
                cells = max(cells, _sheet_span(f))
    strings = 0
    if "xl/sharedStrings.xml" in names:
        with archive.open("xl/sharedStrings.xml") as f:
            head = f.read(4096).decode("utf-8", "replace")
        found = re.search(r'uniqueCount="(\d+)"', head)
        strings = int(found.group(1)) if found else 0
    if cells > MAX_WORKBOOK_CELLS or strings > MAX_WORKBOOK_CELLS:
        return (
            f"the workbook spans {cells:,} cells and declares {strings:,} distinct strings "
            f"(at most {MAX_WORKBOOK_CELLS:,} are read): refused before it is opened; save the "
            "table as CSV or Parquet if it is that large"
        )
    return None


_CELL_REF = re.compile(rb'<c r="([A-Z]{1,3})(\d{1,7})"')


def _sheet_span(stream: Any) -> int:
    """Cells of the rectangle from the first to the last cell a worksheet's XML names."""
    rows = [math.inf, 0]
    cols = [math.inf, 0]
    tail = b""
    while block := stream.read(4 << 20):
        text = tail + block
        for col, row in _CELL_REF.findall(text):
            c, r = _column_number(col.decode()), int(row)
            rows[0], rows[1] = min(rows[0], r), max(rows[1], r)
            cols[0], cols[1] = min(cols[0], c), max(cols[1], c)
        tail = text[-32:]
    if not rows[1]:
        return 0
    return int((rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1))


def _column_number(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def _workbook(data: bytes) -> Any:
    import fastexcel

    problem = _declared_size_problem(data)
    if problem:
        raise UnreadableFile(problem)
    try:
        return fastexcel.read_excel(data)
    except Exception as e:  # fastexcel raises its own error types for corrupt workbooks
        raise UnreadableFile(f"unreadable spreadsheet: {str(e).splitlines()[0]}") from e


def read_spreadsheet(
    data: bytes,
    sheet: str | int | list[str | int] | None = None,
    *,
    skip_rows: int = 0,
    n_rows: int | None = None,
    header_row: int | None | Literal["skip_rows"] = "skip_rows",
) -> pl.DataFrame:
    """Sheets of a spreadsheet as one frame of strings: ``sheet`` is a name, a 0-based
    index, a list of them, ``"*"`` for every sheet, or None for the first. Stacked sheets
    must have the same columns; ``skip_rows`` rows above each header are skipped
    (``header_row=None`` reads every row as data, columns unnamed)."""
    book = _workbook(data)
    names = list(book.sheet_names)
    if sheet is None:
        wanted: list[str | int] = [0]
    elif sheet == "*":
        wanted = list(names)
    else:
        wanted = list(sheet) if isinstance(sheet, list) else [sheet]
    frames: list[tuple[str, pl.DataFrame]] = []
    for s in wanted:
        if (isinstance(s, int) and not 0 <= s < len(names)) or (
            isinstance(s, str) and s not in names
        ):
            listed = ", ".join(repr(n) for n in names)
            raise UnreadableFile(f"no sheet {s!r} in the workbook (its sheets: {listed})")
        label = names[s] if isinstance(s, int) else s
        try:
            header = skip_rows if header_row == "skip_rows" else header_row
            frame = book.load_sheet(
                s, header_row=header, n_rows=n_rows, dtypes="string"
            ).to_polars()
        except Exception as e:  # fastexcel raises its own error types
            raise UnreadableFile(f"sheet {label!r}: {str(e).splitlines()[0]}") from e
        frame.columns = [str(c).strip() for c in frame.columns]
        frames.append((label, frame))
    first_label, first = frames[0]
    for label, frame in frames[1:]:
        if set(frame.columns) != set(first.columns):
            extra = sorted(set(frame.columns) ^ set(first.columns))[:5]
            raise UnreadableFile(
                f"sheets {first_label!r} and {label!r} have different columns "
                f"({', '.join(repr(c) for c in extra)}): list only the sheets of one table "
                "in 'sheet'"
            )
    return pl.concat([f.select(first.columns) for _, f in frames], how="vertical")


def _plain_local(
    url: str, name: str, spec: Any, storage_options: dict[str, Any]
) -> tuple[str, Literal["csv", "parquet"]] | None:
    """The path and kind of a local file polars can read itself: uncompressed Parquet, or
    CSV in UTF-8 whose content is not another format; None for anything else."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols:
        return None
    with open(path, "rb") as f:
        head = f.read(8192)
    if not head.strip() or is_packed(head):
        return None
    kind = kind_of(head, name, spec.format) if head[:4] != b"PAR1" else "parquet"
    if kind == "parquet" and spec.format in ("auto", "parquet"):
        return path, "parquet"
    if kind == "csv" and spec.encoding in ("utf-8", "utf-8-sig") and not _content_kind(head):
        return path, "csv"
    return None


def read_local_table(
    url: str, name: str, spec: Any, columns: list[str], storage_options: dict[str, Any]
) -> pl.DataFrame | None:
    """A plain (uncompressed) local CSV in UTF-8 or Parquet file read by polars from its
    path, ``columns`` only when it has them all; None for anything else, or when polars
    cannot read it (the caller then reads its bytes, which name the problem)."""
    plain = _plain_local(url, name, spec, storage_options)
    if plain is None:
        return None
    path, kind = plain
    try:
        if kind == "parquet":
            return _read_parquet(path, columns)
        return parse_csv_text(
            Path(path), separator=spec.separator, skip_rows=spec.skip_rows, columns=columns
        )
    except (UnreadableFile, OSError, pl.exceptions.PolarsError):
        return None


#: A plain local CSV file larger than this is read and typed in batches of
#: :data:`BATCH_ROWS` rows, so that its text is never held whole beside its typed columns:
#: 100x Online Retail (a 5.1 GB CSV, 54M lines) peaks 5.4 GB instead of 12.1 GB, in 23 s
#: instead of 35 s.
BATCH_BYTES = 256 * 2**20
BATCH_ROWS = 2_000_000


def local_csv_batches(
    url: str, name: str, spec: Any, columns: list[str], storage_options: dict[str, Any]
) -> Iterator[pl.DataFrame] | None:
    """Batches of rows (as strings, ``columns`` only, with ``_source_file``) of a plain
    local UTF-8 CSV file larger than :data:`BATCH_BYTES` whose header has every one of
    ``columns``; None for any other file (read whole). A file polars cannot parse raises
    while it is iterated: the caller then reads it whole, which names the problem."""
    plain = _plain_local(url, name, spec, storage_options)
    if plain is None or plain[1] != "csv" or Path(plain[0]).stat().st_size <= BATCH_BYTES:
        return None
    query = scan_csv_columns(plain[0], spec.separator, spec.skip_rows, columns)
    if query is None:
        return None
    query = query.with_columns(pl.lit(name).alias("_source_file"))
    return iter(query.collect_batches(chunk_size=BATCH_ROWS, lazy=True))


def scan_csv_columns(
    path: str, separator: str, skip_rows: int, columns: list[str]
) -> pl.LazyFrame | None:
    """A lazy scan of ``columns`` (as strings, names stripped) of the CSV file at ``path``;
    None when its header lacks one of them or polars cannot read the header."""
    try:
        selected = _header_names(path, separator, skip_rows, columns)
    except pl.exceptions.PolarsError:
        return None
    if selected is None:
        return None
    scan = pl.scan_csv(path, separator=separator, skip_rows=skip_rows, infer_schema=False)
    return scan.select(pl.col(r).alias(r.strip()) for r in selected)


def _read_parquet(
    source: bytes | str, columns: list[str] | None, n_rows: int | None = None
) -> pl.DataFrame:
    """A Parquet file (bytes or a path): ``columns`` only when it has them all."""

    def src() -> Any:
        return io.BytesIO(source) if isinstance(source, bytes) else source

    selected = list(dict.fromkeys(columns)) if columns else None
    if selected and not all(c in pl.read_parquet_schema(src()) for c in selected):
        selected = None
    frame = pl.read_parquet(src(), n_rows=n_rows, columns=selected)
    _refuse_dictionary_bombs(frame, len(source) if isinstance(source, bytes) else None, source)
    return frame


def _refuse_dictionary_bombs(frame: pl.DataFrame, size: int | None, source: Any) -> None:
    """Refuse a Parquet file whose dictionary-encoded text columns spell out, one value per
    row, to more than the unpacking bounds: 500,000 rows pointing at one 200 KB string (a
    7 MB file) need 100 GB once read as text."""
    import os

    if size is None:
        size = os.path.getsize(source)
    limit = min(MAX_UNPACKED, max(size * MAX_UNPACK_RATIO, 64 << 20))
    for name, dtype in frame.schema.items():
        if not isinstance(dtype, pl.Categorical | pl.Enum):
            continue
        counts = frame[name].drop_nulls().value_counts()  # by code: no value spelled out
        total = int(
            (counts[name].cast(pl.String).str.len_bytes().cast(pl.Int64) * counts["count"]).sum()
        )
        if total > limit:
            raise UnreadableFile(
                f"column {name!r} spells out to {total / 2**20:,.0f} MB of text from a "
                f"{size / 2**20:,.1f} MB file (over {MAX_UNPACK_RATIO} times its size, or "
                f"{MAX_UNPACKED >> 30} GB): refused as a dictionary bomb"
            )


def read_table(
    data: bytes,
    name: str,
    spec: Any,
    n_rows: int | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """A landing file's bytes as a frame: CSV and spreadsheets as strings, Parquet in its own
    types; compressed files unpacked first. ``spec`` is the table's source settings
    (``format``, ``encoding``, ``separator``, ``sheet``, ``skip_rows``). With ``columns``,
    CSV and Parquet files that have them all are read for those columns only.

    Raises :class:`UnreadableFile` naming what is wrong."""
    return open_table(data, name, spec, n_rows, columns)[0]


def open_table(
    data: bytes,
    name: str,
    spec: Any,
    n_rows: int | None = None,
    columns: list[str] | None = None,
) -> tuple[pl.DataFrame, Kind]:
    """:func:`read_table` and what the file held: ``csv``, ``parquet`` or ``excel``."""
    data, inner = unpack(data, name)
    kind = kind_of(data, inner, spec.format)
    found = _content_kind(data) if spec.format == "csv" else None
    if found is not None:
        raise UnreadableFile(
            f"{_ARTICLE[found]} file, but the data set config says format: csv: set format: auto "
            f"(or {found})"
        )
    if kind == "parquet":
        try:
            frame = _read_parquet(data, columns, n_rows)
        except Exception as e:  # polars/arrow raise several error types
            raise UnreadableFile(f"unreadable Parquet file: {str(e).splitlines()[0]}") from e
        return frame, kind
    if kind == "excel":
        frame = read_spreadsheet(data, spec.sheet, skip_rows=spec.skip_rows, n_rows=n_rows)
        return frame, kind
    if kind == "json":
        return read_json_records(data, n_rows), kind
    frame = read_csv_text(
        data,
        encoding=spec.encoding,
        separator=spec.separator,
        skip_rows=spec.skip_rows,
        n_rows=n_rows,
        columns=columns,
    )
    return frame, kind


def repeated_lines(
    url: str, name: str, spec: Any, storage_options: dict[str, Any], data: bytes = b""
) -> int | None:
    """How many non-blank lines of a CSV landing file repeat an earlier line of it byte for
    byte (an export that wrote some lines twice; every column counts, read or not). ``data``
    is the file's bytes when they were read already; else a plain local CSV is scanned from
    its path. None for spreadsheets, Parquet, other remote files and text polars cannot
    split into lines."""
    if data:
        try:
            data, inner = unpack(data, name)
        except UnreadableFile:
            return None
        if kind_of(data, inner, spec.format) != "csv":
            return None
        if spec.encoding not in ("utf-8", "utf-8-sig"):
            data = data.decode(spec.encoding, errors="replace").encode()
        source: Any = io.BytesIO(data)
    else:
        plain = _plain_local(url, name, spec, storage_options)
        if plain is None or plain[1] != "csv":
            return None
        source = plain[0]
    try:
        lines = pl.scan_csv(
            source,
            has_header=False,
            separator="\x00",  # never in a text line: each line is one field
            quote_char=None,
            infer_schema=False,
            encoding="utf8-lossy",
            new_columns=["line"],
        )
        counts = (
            lines.filter(pl.col("line").str.strip_chars() != "")
            .select(n=pl.len(), distinct=pl.col("line").hash().n_unique())
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError:
        return None
    return int(counts["n"][0] - counts["distinct"][0])
