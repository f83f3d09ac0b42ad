"""Materialization metadata shown in the Dagster UI: row count, schema and a preview."""

from __future__ import annotations

from typing import Any

import dagster as dg

_TYPES = {
    "String": "string",
    "Float64": "float",
    "Int64": "int",
    "Int8": "int",
    "Boolean": "bool",
    "Date": "date",
}


def table_metadata(df: Any, preview_rows: int = 10) -> dict[str, dg.MetadataValue]:
    """``dagster/row_count``, ``dagster/column_schema`` and a markdown preview of ``df``."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name, _TYPES.get(str(dtype), str(dtype)))
            for name, dtype in df.schema.items()
        ]
    )
    preview = df.head(preview_rows)
    if preview.width > 14:
        preview = preview.select(preview.columns[:14])
    return {
        "dagster/row_count": dg.MetadataValue.int(df.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        "preview": dg.MetadataValue.md(to_markdown(preview)),
    }


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
