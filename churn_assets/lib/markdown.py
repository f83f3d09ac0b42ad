"""Small markdown tables for metadata and reports (no extra dependency)."""

from __future__ import annotations

from typing import Any


def to_markdown(df: Any, float_digits: int = 4) -> str:
    """A small markdown table (no extra dependency)."""
    if df.width == 0:
        return "_(no columns)_"
    head = "| " + " | ".join(df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = []
    for row in df.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f"{v:.{float_digits}g}")
            else:
                cells.append("" if v is None else str(v).replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows]) if rows else "\n".join([head, sep, "| _(no rows)_ |"])
