"""What each ``raw_transactions`` partition was ingested from: its landing file's name,
size and sha256, kept in storage beside the partitions.

A copy of an ingested file that lands beside it is found among the landing files; one that
lands after the original has left the landing zone (a rename, a re-sent file under another
name, a file restored from a backup as a new name) is found here, by its bytes, so its lines
are not counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fsspec

from churn_assets.lib.ingest import file_sha256

SOURCES = "state/raw_transactions/sources.json"


@dataclass
class LandedFile:
    """A landing file whose size and sha256 are read once, when first asked for."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def _fs_path(self) -> tuple[Any, str]:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @cached_property
    def size(self) -> int:
        fs, path = self._fs_path
        return fs.size(path)

    @cached_property
    def sha256(self) -> str:
        return file_sha256(*self._fs_path)


def read_sources(storage: Any) -> dict[str, dict[str, Any]]:
    """Partition key → ``{"file", "bytes", "sha256"}`` of the partitions recorded so far."""
    return storage.read_json(SOURCES) if storage.exists(SOURCES) else {}


def record_source(storage: Any, key: str, landed: LandedFile) -> None:
    """Record that partition ``key`` holds the lines of the ``landed`` file."""
    sources = read_sources(storage)
    sources[key] = {"file": landed.name, "bytes": landed.size, "sha256": landed.sha256}
    storage.write_json(SOURCES, sources)


def forget_source(storage: Any, key: str) -> None:
    """Partition ``key`` no longer holds the lines of a recorded file (none usable)."""
    sources = read_sources(storage)
    if sources.pop(key, None) is not None:
        storage.write_json(SOURCES, sources)


def ingested_copy(storage: Any, key: str, landed: LandedFile) -> tuple[str, str] | None:
    """``(partition key, file name)`` of another partition ingested from the same bytes as
    the ``landed`` file (sizes first, then contents), or None."""
    same_size = {
        k: e for k, e in read_sources(storage).items() if k != key and e.get("bytes") == landed.size
    }
    return next(
        ((k, e["file"]) for k, e in sorted(same_size.items()) if e["sha256"] == landed.sha256),
        None,
    )
