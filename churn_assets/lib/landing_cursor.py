"""The landing sensor's cursor: what it saw of each landing file, kept small.

Dagster stores the cursor with every tick. Naming each file with its signature (size and
modification time) made it about 0.5 MB at a year of hourly files (8,760). Only files
modified in the last :data:`RECENT_SECONDS` (those that may still be being written or
rewritten) keep their path and signature; every other file is one
:data:`DIGEST_BYTES`-byte digest of its path and signature in a packed set. A file is
unchanged when its signature is the one kept for its path or its digest is in the set, so
what a signature per file detected is still detected: a new file (even one copied with an
old modification time), a file rewritten under the same name, a file restored as it first
landed (its digest left the set when its other version replaced it).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

#: The cursor's entry counting the ticks that asked for runs (not a file).
GENERATION = "_generation"
#: The cursor's entry holding the packed digests of the files modified before the window.
SETTLED = "_settled"
#: Files modified within this many seconds keep their path and signature in the cursor.
RECENT_SECONDS = 86_400.0
#: Bytes of a settled file's digest: a changed file taken for unchanged one time in 2**48
#: per settled file.
DIGEST_BYTES = 6


def file_digest(rel: str, signature: str) -> bytes:
    """The digest of a file's path (relative to the landing root) and signature."""
    return hashlib.sha1(f"{rel}={signature}".encode()).digest()[:DIGEST_BYTES]


def _relative(url: str, root: str) -> str:
    return url[len(root) :] if url.startswith(root) else url


@dataclass(frozen=True)
class LandingCursor:
    """What the last tick saw: recent files' signatures by URL, the digests of the others,
    and the count of ticks that asked for runs."""

    root: str
    recent: dict[str, str] = field(default_factory=dict)
    settled: frozenset[bytes] = frozenset()
    generation: int = 0

    def unchanged(self, url: str, signature: str) -> bool:
        """Whether the file at ``url`` was seen with this ``signature``."""
        if url in self.recent:
            return self.recent[url] == signature
        return file_digest(_relative(url, self.root), signature) in self.settled

    @classmethod
    def read(cls, cursor: str | None, root: str) -> LandingCursor:
        """The cursor :meth:`encode` wrote (or one naming every file by path, relative or
        full URL, as written before)."""
        data = json.loads(cursor) if cursor else {}
        generation = int(data.pop(GENERATION, 0))
        packed = base64.b85decode(data.pop(SETTLED, ""))
        settled = frozenset(
            packed[i : i + DIGEST_BYTES] for i in range(0, len(packed), DIGEST_BYTES)
        )
        recent = {
            (k if k.startswith(root) or "://" in k or k.startswith("/") else root + k): v
            for k, v in data.items()
        }
        return cls(root, recent, settled, generation)

    @staticmethod
    def encode(
        listing: dict[str, str],
        ages: dict[str, float | None],
        generation: int,
        root: str,
    ) -> str:
        """The cursor of ``listing`` (URL → signature): files whose age (seconds since their
        modification, in ``ages``) is under :data:`RECENT_SECONDS` by path relative to
        ``root``, every other file (an older one, or one whose age is unknown) as a digest."""
        recent: dict[str, str] = {}
        settled: list[bytes] = []
        for url, signature in listing.items():
            age = ages.get(url)
            rel = _relative(url, root)
            if age is not None and age < RECENT_SECONDS:
                recent[rel] = signature
            else:
                settled.append(file_digest(rel, signature))
        out: dict[str, str | int] = {**recent, GENERATION: generation}
        if settled:
            out[SETTLED] = base64.b85encode(b"".join(sorted(settled))).decode()
        return json.dumps(out, separators=(",", ":"))
