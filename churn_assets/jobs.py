"""Jobs: named selections of the asset graph."""

from __future__ import annotations

import dagster as dg

ingest_and_features_job = dg.define_asset_job(
    "ingest_and_features",
    selection=dg.AssetSelection.groups("raw", "features"),
    description="Ingest the landing zone and rebuild the point-in-time customer features.",
)
