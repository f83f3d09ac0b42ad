"""Which landing files hold a date range: the partitions a date-range backfill re-ingests.

``raw_transactions`` is partitioned by landing file, not by day (a file is what arrives and
is checked, and its lines may span days). A backfill of a date range is therefore a backfill
of every file with a line in it, found from the written partitions' own timestamps.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

RAW_TRANSACTIONS = "raw_transactions"


@dataclass(frozen=True)
class FileSpan:
    """One written partition: its key (the landing file's name) and its lines' time span."""

    key: str
    first: dt.datetime | None
    last: dt.datetime | None
    lines: int

    def overlaps(self, since: dt.date, until: dt.date) -> bool:
        """Whether a line of the file falls on a day from ``since`` to ``until`` (inclusive)."""
        if self.first is None or self.last is None:
            return False
        return self.first.date() <= until and self.last.date() >= since


def file_spans(storage: Any) -> list[FileSpan]:
    """Every written ``raw_transactions`` partition with its time span, in key order (only the
    timestamp column is read)."""
    spans = []
    for rel in sorted(storage.asset_parts(RAW_TRANSACTIONS)):
        if "/" not in rel.removeprefix(f"assets/{RAW_TRANSACTIONS}"):
            continue  # an unpartitioned table of an older layout: no files to name
        ts = storage.read_parquet(rel, columns=["timestamp"])["timestamp"]
        key = rel.rsplit("/", 1)[-1].removesuffix(".parquet")
        spans.append(FileSpan(key, ts.min(), ts.max(), ts.len()))
    return spans


def files_between(storage: Any, since: dt.date, until: dt.date) -> list[FileSpan]:
    """The written partitions with a line from ``since`` to ``until`` (inclusive)."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    return [s for s in file_spans(storage) if s.overlaps(since, until)]
