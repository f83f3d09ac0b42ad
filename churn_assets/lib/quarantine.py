"""Quarantine: bad rows and unreadable files are kept in storage with their reasons."""

from __future__ import annotations

import datetime as dt

import polars as pl

from churn_assets.lib.ingest import IngestResult, chunked_like
from churn_assets.lib.storage import Storage


def quarantine(
    storage: Storage, result: IngestResult, bad_rows: pl.DataFrame, run_id: str
) -> dict[str, object]:
    """Write bad rows (Parquet, with ``_reason``) and unreadable files under ``quarantine/``.

    Returns a summary: where things went and how many rows and files.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"quarantine/{result.table}/{stamp}-{run_id[:8]}"
    out: dict[str, object] = {
        "rows": bad_rows.height,
        "files": len(result.file_problems),
        "path": base,
    }
    if bad_rows.height:
        out["rows_url"] = storage.write_parquet(f"{base}/rows.parquet", bad_rows)
    if result.file_problems:
        for p in result.file_problems:
            storage.write_bytes(f"{base}/files/{p.file}", result.raw_bytes.get(p.file, b""))
        storage.write_json(
            f"{base}/files/_reasons.json",
            [
                {
                    "file": p.file,
                    "problem": p.problem,
                    "column": p.column,
                    "rows": p.rows,
                    "hint": p.hint,
                }
                for p in result.file_problems
            ],
        )
        out["files_url"] = storage.url(f"{base}/files")
    if bad_rows.height or result.file_problems:
        out["location"] = storage.url(base)
    return out


def screen(frame: pl.DataFrame, rules: list) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Mark rows that fail parsing or a row-level rule.

    Returns the frame with a boolean ``_quarantined`` column, and the bad rows with a
    ``_reason`` column (one row per bad input row, reasons joined by '; '). The frame's
    buffers are shared, not copied: only the bad rows are joined and sorted.
    """
    import numpy as np

    from churn_assets.lib.quality import bad_row_reasons

    indexed = frame.with_row_index("_row")
    present = [r for r in rules if r.column is None or r.column in frame.columns]
    # the bad rows whole, in row order: a quarter of 54M Online Retail lines lack a customer,
    # so nothing here groups, joins or sorts them unless a row also failed to parse
    by_rule = bad_row_reasons(indexed, present).drop("_rule", "_column")
    parse = indexed.filter(pl.col("_parse_errors").is_not_null()).with_columns(
        ("unparseable value in " + pl.col("_parse_errors")).alias("_reason")
    )
    if parse.height == 0 or by_rule.height == 0:
        bad = by_rule if parse.height == 0 else parse
    else:
        reasons = (
            parse.select("_row", pl.col("_reason").alias("_parse"))
            .join(by_rule.select("_row", "_reason"), on="_row", how="full", coalesce=True)
            .select(
                "_row",
                pl.concat_str(["_parse", "_reason"], separator="; ", ignore_nulls=True).alias(
                    "_reason"
                ),
            )
        )
        rows = indexed.filter(pl.col("_row").is_in(reasons["_row"].implode()))
        bad = rows.join(reasons, on="_row", how="left").sort("_row")
    mask = np.zeros(frame.height, dtype=bool)
    mask[bad["_row"].to_numpy()] = True
    flags = pl.Series("_quarantined", mask)
    out = frame.with_columns(chunked_like(flags, frame).alias("_quarantined"))
    return out, bad.drop("_row")


def changed_since_read(result: IngestResult, storage_options: dict) -> list[str]:
    """Names of the files of ``result`` whose size or modification time is no longer what it
    was when they were read (rewritten in place, still being written, or removed meanwhile):
    what was read of them is not what is there, so nothing read from them is to be judged
    or written."""
    from churn_assets.lib.ingest import file_stamp

    return [
        name
        for name, read in sorted(result.stamps.items())
        if (url := result.urls.get(name)) is not None
        and read is not None
        and file_stamp(url, storage_options) != read
    ]


def release_landing_files(
    result: IngestResult,
    bad_rows: pl.DataFrame,
    blocked: bool,
    landing_url: str,
    storage_options: dict,
    quarantine_url: str | None,
) -> list[str]:
    """Move landing files that stop ingestion out of the landing zone, so a bad file is
    reported once and never retried forever: unreadable files, and (when a blocking check
    failed) files holding bad rows. Files outside the landing zone are never touched.

    Each moved file is copied to ``<quarantine_url>/files/`` first. A file that changed
    since it was read (a slow writer: what was judged is not what is there now) stays, named
    in ``result.changed_since_read``, for the landing sensor to read again. Returns the moved
    names.
    """
    import fsspec

    from churn_assets.lib.ingest import file_stamp

    names = {p.file for p in result.file_problems}
    if blocked and bad_rows.height and "_source_file" in bad_rows.columns:
        names |= set(bad_rows["_source_file"].drop_nulls().unique().to_list())
    prefix = landing_url.rstrip("/") + "/"
    moved = []
    for name in sorted(names):
        url = result.urls.get(name)
        if url is None or not url.startswith(prefix):
            continue
        read = result.stamps.get(name)
        if read is not None and file_stamp(url, storage_options) != read:
            result.changed_since_read.append(name)
            continue
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        if quarantine_url and name not in result.raw_bytes:
            with fsspec.open(f"{quarantine_url}/files/{name}", "wb", **storage_options) as f:
                f.write(fs.cat_file(path))
        fs.rm(path)
        moved.append(name)
    return moved
