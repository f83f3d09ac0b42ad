"""Point-in-time customer features with their labels."""

import datetime as dt

import dagster as dg
import polars as pl

from churn_assets.lib.features import FeatureParams, build_customer_features, default_cutoff
from churn_assets.metadata import table_metadata
from churn_assets.raw.assets import INTERNAL
from churn_assets.resources import ChurnPlatform


def _usable(df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    if "_quarantined" not in df.columns:
        return df, 0
    bad = int(df["_quarantined"].sum())
    return df.filter(~pl.col("_quarantined")).drop([c for c in INTERNAL if c in df.columns]), bad


@dg.asset(group_name="features", kinds={"polars", "parquet"})
def customer_features(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    raw_customers: pl.DataFrame,
    raw_transactions: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    """One row per customer known before the cut-off: static attributes plus recency,
    frequency, monetary value, average order value, tenure, 90-day trends, returns,
    category and country mix, and the naive value forecast; with the labels ``churned``
    (no purchase in the horizon) and ``total_sales`` (net spend in the horizon). Only
    events before the cut-off feed the features; quarantined rows are excluded."""
    cfg = platform.dataset_config()
    customers, bad_c = _usable(raw_customers)
    transactions, bad_t = _usable(raw_transactions)
    transactions = transactions.filter(pl.col("customer_id").is_not_null())
    has_tx = cfg.transactions is not None
    horizon = cfg.labels.horizon_days
    if has_tx:
        cutoff = cfg.labels.cutoff or default_cutoff(transactions, horizon)
    else:
        cutoff = dt.date.today()
    params = FeatureParams(
        cutoff=cutoff, horizon_days=horizon, naive_lookback_days=cfg.naive_lookback_days
    )
    features = build_customer_features(
        customers if cfg.customers is not None else None,
        transactions if has_tx else None,
        params,
    )
    metadata = {
        **table_metadata(features),
        "cutoff": dg.MetadataValue.text(cutoff.isoformat() if has_tx else "n/a (snapshot)"),
        "horizon_days": dg.MetadataValue.int(horizon),
        "label_source": dg.MetadataValue.text(cfg.labels.source),
        "churn_rate": dg.MetadataValue.float(float(features["churned"].mean() or 0.0)),
        "excluded_quarantined_rows": dg.MetadataValue.int(bad_c + bad_t),
        "feature_count": dg.MetadataValue.int(features.width - 3),
    }
    if "total_sales" in features.columns:
        metadata["mean_total_sales"] = dg.MetadataValue.float(float(features["total_sales"].mean()))
    context.log.info(f"{features.height} customers, cut-off {cutoff}, horizon {horizon} days")
    return dg.Output(features, metadata=metadata)
