"""Names of synthetic drift batches in a landing zone: each one new, claimed once.

``churn seed --drift`` writes ``customers/drift-NNNN.*`` and
``transactions/drift-NNNN-part-*.*``, and a drift batch's data is seeded by its name, so a
name used twice writes the same batch over itself: two commands started together, or a
count of the batches present after one was removed, gave a name already taken, and a batch
asked for was never written. A name is claimed with a hidden file (``.drift-NNNN.claim``,
which the landing zone ignores) created exclusively on a local disk, then checked against
the files present, and given back once the batch is written.
"""

from __future__ import annotations

import os
import re
from typing import Any

_NUMBER = re.compile(r"^\.?drift-(\d+)(?:[.-]|$)")


def _claim_path(path: str, number: int) -> str:
    return f"{path}/.drift-{number:04d}.claim"


def _numbers(fs: Any, path: str) -> set[int]:
    """Numbers of the drift batches present: their files, and names claimed by writers."""
    names = [p.rsplit("/", 1)[-1] for p in fs.glob(f"{path}/*/drift-*")]
    names += [p.rsplit("/", 1)[-1] for p in fs.glob(f"{path}/.drift-*.claim")]
    return {int(m.group(1)) for n in names if (m := _NUMBER.match(n))}


def _taken(fs: Any, path: str, number: int) -> bool:
    """Whether batch ``number`` has files in the landing zone."""
    return bool(fs.glob(f"{path}/*/drift-{number:04d}[.-]*"))


def _create_exclusively(fs: Any, claim: str) -> bool:
    """Create ``claim``; False when it exists. Exclusive on a local disk; on an object
    store (no exclusive create) the check after it (:func:`claim_drift_batch`) narrows
    the race to the moment of the write."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        return True
    if fs.exists(claim):
        return False
    fs.pipe_file(claim, b"")
    return True


def claim_drift_batch(fs: Any, path: str) -> tuple[str, str]:
    """Claim the next drift batch name of the landing zone at ``path`` (after the highest
    number present or claimed): ``(name, claim file)``. Give the claim back with
    :func:`release_claim` once the batch's files are written."""
    fs.makedirs(path, exist_ok=True)
    number = max(_numbers(fs, path), default=0) + 1
    while True:
        claim = _claim_path(path, number)
        if _create_exclusively(fs, claim):
            if not _taken(fs, path, number):  # a writer that finished and gave it back
                return f"drift-{number:04d}", claim
            fs.rm(claim)
        number += 1


def release_claim(fs: Any, claim: str) -> None:
    """Remove a claim (its batch is written, or will not be)."""
    if fs.exists(claim):
        fs.rm(claim)
