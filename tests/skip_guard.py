"""Skip guard: under ``CI=true`` a skipped or xfailed test fails the run unless it is on
the allow-list (``ci_allowed_skips`` in ``[tool.pytest.ini_options]``).

Each allow-list entry is ``"<node id or fnmatch pattern> | <reason>"``; an entry without a
reason is a configuration error, so every tolerated skip says why it is tolerated.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

INI_NAME = "ci_allowed_skips"


@dataclass(frozen=True)
class Allowed:
    pattern: str
    reason: str


def parse_allow_list(lines: list[str]) -> list[Allowed]:
    """``"pattern | reason"`` lines → entries; raises ValueError on a missing reason."""
    entries = []
    for line in lines:
        pattern, sep, reason = line.partition("|")
        if not sep or not pattern.strip() or not reason.strip():
            raise ValueError(f"{INI_NAME} entry needs 'node id | reason': {line!r}")
        entries.append(Allowed(pattern.strip(), reason.strip()))
    return entries


def plain_nodeid(nodeid: str) -> str:
    """The node id without the ``@<group>`` suffix pytest-xdist's ``--dist loadgroup`` adds."""
    base, sep, group = nodeid.rpartition("@")
    return base if sep and "::" in base and "::" not in group and "]" not in group else nodeid


def is_allowed(nodeid: str, allowed: list[Allowed]) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, a.pattern) for a in allowed)


def guard_active(environ: dict[str, str] | None = None) -> bool:
    """True on CI (``CI=true``, as GitHub Actions, GitLab and ``.ci/run`` set it)."""
    value = (environ if environ is not None else os.environ).get("CI", "")
    return value.strip().lower() in ("true", "1", "yes")


def unexpected(skipped: dict[str, str], allowed: list[Allowed]) -> dict[str, str]:
    """The skipped/xfailed node ids (→ their reason) that the allow-list does not cover."""
    return {n: why for n, why in sorted(skipped.items()) if not is_allowed(n, allowed)}
