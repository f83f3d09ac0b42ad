"""Materialization metadata shown in the Dagster UI: row count, schema and a preview."""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_assets.lib.markdown import to_markdown

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
