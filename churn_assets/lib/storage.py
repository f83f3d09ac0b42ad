"""One storage root for every table and file: a local directory or S3-compatible storage.

Everything goes through fsspec, so the local default and S3 (MinIO, moto, AWS) share one
code path. Writes are atomic: local files are written to a temporary name and renamed
(:func:`write_local_atomically`); an S3 PUT is atomic per object.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec


def info_stamp(info: dict[str, Any]) -> str:
    """``size:modified`` of an fsspec ``info`` (modification time on local disks,
    last-modified or ETag on object stores): it changes when a file is written again."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
    return f"{info.get('size')}:{stamp}"


#: The errors of a file system with no room left (a full disk, a user's quota).
_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_local_atomically(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Write the local file ``path`` with ``write(file)`` through a temporary sibling renamed
    into place: a reader sees the old file or the new one, never a part of it, and a failed
    or interrupted write leaves the old file as it was and no temporary file behind.

    Raises:
        OSError: as the write raised it; with a full disk or quota (``ENOSPC``, ``EDQUOT``)
            its message names ``path``, the room left there and what to do.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # beside the file, hidden, and short: a name near the file system's 255-byte limit
    # (a long landing file name's partition) must still have room for its temporary twin
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex[:16]}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        code = _no_room(e)
        if code is not None:  # the same error, saying more
            raise OSError(code, _full_message(path, code)) from None
        raise


def _no_room(error: BaseException) -> int | None:
    """``ENOSPC`` / ``EDQUOT`` when ``error`` says the file system has no room left: an
    ``OSError``, or a writer's own error carrying it (polars: "... (os error 28)")."""
    if isinstance(error, OSError) and error.errno in _FULL:
        return error.errno
    text = str(error)
    for code in _FULL:
        if f"(os error {code})" in text or os.strerror(code) in text:
            return code
    return None


def _full_message(path: str, code: int) -> str:
    try:
        left = f"{shutil.disk_usage(os.path.dirname(path) or '.').free / 2**20:,.1f} MB free"
    except OSError:
        left = "free space unknown"
    return (
        f"{os.strerror(code)} writing {path} ({left} there): the storage is full. What it "
        "held before is unchanged; free space (or point CHURN_STORAGE_URL at a larger "
        "volume), then re-execute the failed run"
    )


#: S3 error codes that mean "these credentials may not do this" (a wrong key or secret, an
#: expired token, a key without permission on the bucket). A HEAD request's refusal has no
#: body, so it says only ``403`` / ``Forbidden``.
_REFUSAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "InvalidClientTokenId",
        "403",
        "Forbidden",
    }
)


def access_refusal(error: BaseException) -> str | None:
    """What to check when ``error`` is S3 storage refusing the request (wrong credentials, or
    credentials without permission on the bucket), else None.

    s3fs turns every refusal into a bare ``PermissionError`` ("Forbidden", for a HEAD
    request), which reads like a local folder's permissions; the S3 error code is on the
    ``ClientError`` behind it."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        response = getattr(e, "response", None)
        code = (response.get("Error") or {}).get("Code") if isinstance(response, dict) else None
        if code is not None and str(code) in _REFUSAL_CODES:
            endpoint = os.environ.get("CHURN_S3_ENDPOINT_URL") or "AWS S3"
            key = os.environ.get("AWS_ACCESS_KEY_ID")
            return (
                f"the S3 storage at {endpoint} refused the request ({code}: "
                f"{(response.get('Error') or {}).get('Message') or 'no detail'}): the "
                f"credentials are wrong or may not use this bucket; check AWS_ACCESS_KEY_ID "
                f"({'set to ' + repr(key[:4] + '...') if key else 'unset'}) and "
                "AWS_SECRET_ACCESS_KEY, and the key's permissions on the bucket"
            )
        e = e.__cause__ or e.__context__
    return None


def with_refusal(text: str, error: BaseException) -> str:
    """``text`` (what failed), followed by :func:`access_refusal`'s advice when ``error`` is
    the storage refusing the credentials."""
    refusal = access_refusal(error)
    return f"{text}: {refusal}" if refusal else text


@dataclass
class Storage:
    """A storage root (``/abs/dir`` or ``s3://bucket/prefix``) with fsspec storage options."""

    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.root.rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **self.storage_options)

    @classmethod
    def from_settings(cls, settings: Any = None, url: str | None = None) -> Storage:
        """The storage root (or ``url``) configured by :class:`ChurnSettings`."""
        from churn_assets.lib.settings import get_settings

        settings = settings or get_settings()
        url = url or settings.resolved_storage_url
        return cls(url, settings.storage_options(url))

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")

    def child(self, *parts: str) -> Storage:
        """A storage rooted at a sub-path of this one."""
        return Storage(self.url(*parts), self.storage_options)

    def url(self, *parts: str) -> str:
        """The full URL (or local path) of a relative path."""
        out = self.root
        for p in parts:
            if p:
                out = f"{out}/{p.strip('/')}"
        return out

    def _path(self, rel: str) -> str:
        return f"{self._root_path}/{rel.strip('/')}" if rel else self._root_path

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def list_files(self, rel: str = "", pattern: str = "*") -> list[str]:
        """Relative paths of files under ``rel`` matching a glob ``pattern``, sorted."""
        base = self._path(rel)
        if not self.fs.exists(base):
            return []
        found = self.fs.glob(f"{base.rstrip('/')}/{pattern}")
        prefix = self._root_path.rstrip("/") + "/"
        return sorted(
            p[len(prefix) :] if p.startswith(prefix) else p for p in found if not self.fs.isdir(p)
        )

    def asset_parts(self, asset: str) -> list[str]:
        """The Parquet file(s) of a materialized asset under ``assets/``: the file of an
        unpartitioned asset, or one per partition (``assets/<asset>/<key>.parquet``)."""
        whole = f"assets/{asset}.parquet"
        if self.exists(whole):
            return [whole]
        return self.list_files(f"assets/{asset}", "*.parquet")

    def read_asset(self, asset: str, columns: list[str] | None = None) -> Any:
        """A materialized asset's table (every partition of a partitioned one), or None."""
        import polars as pl

        frames = []
        for rel in self.asset_parts(asset):
            with self.fs.open(self._path(rel), "rb") as f:
                schema = pl.read_parquet_schema(f)
                f.seek(0)
                wanted = None if columns is None else [c for c in columns if c in schema]
                frames.append(pl.read_parquet(f, columns=wanted))
        return pl.concat(frames, how="diagonal_relaxed") if frames else None

    def fingerprint(self, rel: str) -> tuple[tuple[str, Any, Any], ...]:
        """What the files under ``rel`` are now: (path, size, modification stamp) for each,
        from one fresh listing. Changes when any file is added, removed or rewritten."""
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        if not self.fs.exists(path):
            return ()
        found = self.fs.find(path, detail=True)
        return tuple(
            sorted(
                (
                    name,
                    info.get("size"),
                    info.get("mtime") or info.get("LastModified") or info.get("ETag"),
                )
                for name, info in found.items()
            )
        )

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` atomically; returns the full URL."""
        path = self._path(rel)
        if self.is_local:
            write_local_atomically(path, lambda f: f.write(data))
        else:
            self.fs.pipe_file(path, data)
        return self.url(rel)

    def read_json(self, rel: str) -> Any:
        """The JSON document at ``rel``.

        Raises:
            ValueError: it is not valid JSON (a damaged or half-written file), naming it.
        """
        try:
            return json.loads(self.read_bytes(rel))
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.url(rel)} is not valid JSON (damaged?): {e}") from e

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_bytes(rel, json.dumps(obj, indent=2, default=str).encode())

    def write_parquet(self, rel: str, df: Any, compression: str = "zstd") -> str:
        """Write a polars DataFrame as Parquet (zstd; ``lz4`` writes 2-3x faster, for tables
        rewritten often)."""
        buf = io.BytesIO()
        df.write_parquet(buf, compression=compression, statistics=True)
        return self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> Any:
        """Read a Parquet file (only ``columns``, when given) into a polars DataFrame."""
        import polars as pl

        with self.fs.open(self._path(rel), "rb") as f:
            return pl.read_parquet(f, columns=columns)

    def delete(self, rel: str, recursive: bool = False) -> None:
        path = self._path(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)
