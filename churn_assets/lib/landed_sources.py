"""What each ``raw_transactions`` partition was ingested from: its landing file's name,
size and sha256, kept in storage beside the partitions.

A copy of an ingested file that lands beside it is found among the landing files; one that
lands after the original has left the landing zone (a rename, a re-sent file under another
name, a file restored from a backup as a new name) is found here, by its bytes, so its lines
are not counted twice.
"""

from __future__ import annotations

from typing import Any

import fsspec

from churn_assets.lib.ingest import file_sha256

SOURCES = "state/raw_transactions/sources.json"


def read_sources(storage: Any) -> dict[str, dict[str, Any]]:
    """Partition key → ``{"file", "bytes", "sha256"}`` of the partitions recorded so far."""
    return storage.read_json(SOURCES) if storage.exists(SOURCES) else {}


def record_source(storage: Any, key: str, url: str, storage_options: dict | None = None) -> None:
    """Record that partition ``key`` holds the lines of the landing file at ``url``."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    sources = read_sources(storage)
    sources[key] = {
        "file": url.rsplit("/", 1)[-1],
        "bytes": fs.size(path),
        "sha256": file_sha256(fs, path),
    }
    storage.write_json(SOURCES, sources)


def forget_source(storage: Any, key: str) -> None:
    """Partition ``key`` no longer holds the lines of a recorded file (none usable)."""
    sources = read_sources(storage)
    if sources.pop(key, None) is not None:
        storage.write_json(SOURCES, sources)


def ingested_copy(
    storage: Any, key: str, url: str, storage_options: dict | None = None
) -> tuple[str, str] | None:
    """``(partition key, file name)`` of another partition ingested from the same bytes as
    the landing file at ``url`` (sizes first, then contents), or None."""
    others = {k: e for k, e in read_sources(storage).items() if k != key}
    if not others:
        return None
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    size = fs.size(path)
    same_size = {k: e for k, e in others.items() if e.get("bytes") == size}
    if not same_size:
        return None
    digest = file_sha256(fs, path)
    return next(
        ((k, e["file"]) for k, e in sorted(same_size.items()) if e.get("sha256") == digest),
        None,
    )
