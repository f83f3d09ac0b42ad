"""Small markdown tables for metadata and reports (no extra dependency)."""

from __future__ import annotations

import re
from typing import Any

#: Longest cell shown; a longer value (a 1 MB category) is cut with an ellipsis.
MAX_CELL_CHARS = 200

_SPECIAL = re.compile(r"([\\`*\[\]()!|<>])")


def cell(value: Any) -> str:
    """``value`` as text for one table cell: markdown and HTML characters escaped (a value
    from the data must not become a link, an image, markup or another column), line
    breaks as spaces, cut at :data:`MAX_CELL_CHARS`."""
    text = " ".join(str(value).split())
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return _SPECIAL.sub(r"\\\1", text).replace("&", "&amp;")


def to_markdown(df: Any, float_digits: int = 4) -> str:
    """A small markdown table (no extra dependency); column names and values from the data
    are escaped (:func:`cell`)."""
    if df.width == 0:
        return "_(no columns)_"
    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = []
    for row in df.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f"{v:.{float_digits}g}")
            else:
                cells.append("" if v is None else cell(v))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows]) if rows else "\n".join([head, sep, "| _(no rows)_ |"])
