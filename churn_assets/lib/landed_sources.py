"""What each ``raw_transactions`` partition was ingested from: its landing file's name,
size and sha256, and the sha256 of its typed lines, kept in storage beside the partitions.

A copy of an ingested file that lands beside it is found among the landing files; one that
lands after the original has left the landing zone (a rename, a re-sent file under another
name, a file restored from a backup as a new name) is found here, by its bytes, so its lines
are not counted twice. A re-export of the same lines (other line ends or quoting, gzipped,
or as Parquet) is found by its lines.
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
    """A landing file whose size and sha256 are read once, when first asked for; ``lines``
    is the sha256 of its typed lines (``lines_sha256``), None for a file without any."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    lines: str | None = None
    config: str | None = None  # config_digest of the config it was read with

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
    """Partition key → ``{"file", "bytes", "sha256", "lines_sha256", "config"}`` of the
    partitions recorded so far."""
    return storage.read_json(SOURCES) if storage.exists(SOURCES) else {}


def record_source(storage: Any, key: str, landed: LandedFile) -> None:
    """Record that partition ``key`` holds the lines of the ``landed`` file."""
    sources = read_sources(storage)
    sources[key] = {
        "file": landed.name,
        "bytes": landed.size,
        "sha256": landed.sha256,
        "lines_sha256": landed.lines,
        "config": landed.config,
    }
    storage.write_json(SOURCES, sources)


def forget_source(storage: Any, key: str) -> None:
    """Partition ``key`` no longer holds the lines of a recorded file (none usable)."""
    sources = read_sources(storage)
    if sources.pop(key, None) is not None:
        storage.write_json(SOURCES, sources)


def ingested_copy(storage: Any, key: str, landed: LandedFile) -> tuple[str, str, str] | None:
    """``(partition key, file name, "bytes" or "lines")`` of another partition ingested from
    the same bytes as the ``landed`` file (sizes first, then contents), or else from the same
    typed lines; None if there is none."""
    others = sorted((k, e) for k, e in read_sources(storage).items() if k != key)
    same_size = [(k, e) for k, e in others if e.get("bytes") == landed.size]
    for k, e in same_size:
        if e["sha256"] == landed.sha256:
            return k, e["file"], "bytes"
    if landed.lines is not None:
        for k, e in others:
            if e.get("lines_sha256") == landed.lines:
                return k, e["file"], "lines"
    return None


def config_digest(cfg: Any) -> str:
    """A short digest of what shapes a transaction file's stored lines: the data set's
    ``transactions`` section (columns, formats, ``amount_scale``, rules)."""
    import hashlib
    import json

    spec = cfg.transactions.model_dump(mode="json") if cfg.transactions is not None else None
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def read_with_another_config(storage: Any, cfg: Any) -> list[str]:
    """Partition keys whose lines were read with another ``transactions`` config than
    ``cfg``'s (a partition is written once: an edit applies to files landed after it)."""
    now = config_digest(cfg)
    return sorted(k for k, e in read_sources(storage).items() if e.get("config") not in (None, now))


def another_config_warning(keys: list[str]) -> str:
    """What to say of :func:`read_with_another_config`'s partitions, and what to do."""
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return (
        f"{len(keys)} transaction partition(s) were read with an earlier transactions "
        f"config than the current one ({shown}): their lines follow that config (its "
        "amount_scale, formats, columns), so the history mixes two readings. Re-ingest them "
        "with `churn backfill --since <first day> --until <last day>`, or put the config "
        "back"
    )
