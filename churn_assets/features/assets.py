from typing import Any

import dagster as dg

from churn_assets.freshness import DATA_FRESHNESS
from churn_assets.io_managers import lazy_input, parts_input
from churn_assets.metadata import table_metadata
from churn_assets.partitions import INGEST_POOL
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import (
    STORAGE_RETRY,
    fail_fast_unless_transient,
    retry_on_connection_errors,
)

#: What the features say of transaction lines whose customer ids the customer table lacks.
UNKNOWN_IDS = (
    "are not in the customer table: those purchases are not used (land their customer "
    "rows, or they are not customers of this data set)"
)


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="features",
    kinds={"polars", "parquet"},
    ins={"raw_transactions": lazy_input()},
)
def customer_features(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    raw_customers,
    raw_transactions,
) -> dg.Output:
    """One row per customer known before the cut-off: static attributes plus recency,
    frequency, monetary value, average order value, tenure, 90-day trends, returns,
    category and country mix, and the naive value forecast; with the labels ``churned``
    (no purchase in the horizon) and ``total_sales`` (net spend in the horizon). Only
    events before the cut-off feed the features; quarantined rows are excluded. The
    transactions come as a lazy scan: only the columns the features use are read."""
    from churn_assets.lib.feature_sets import (
        customer_id_match,
        features_at,
        label_cutoff,
        stray_latest_lines,
        usable,
    )
    from churn_assets.lib.features import feature_columns

    with fail_fast_unless_transient():
        cfg = platform.dataset_config()
        customers, bad_c = usable(raw_customers)
        transactions, bad_t = usable(raw_transactions)
        match = None
        if cfg.customers is not None and cfg.transactions is not None:
            match = customer_id_match(customers, transactions)
        cutoff = label_cutoff(cfg, transactions)
        stray = (
            stray_latest_lines(raw_transactions, cfg.labels.horizon_days)
            if cfg.transactions is not None
            else None
        )
        if stray:
            context.log.warning(stray)
        features = features_at(cfg, customers, transactions, cutoff)
        if features.height == 0:
            blank = (
                customers.height
                if cfg.labels.allow_unlabelled
                and "churned" in customers.columns
                and customers.height
                and customers["churned"].null_count() == customers.height
                else 0
            )
            if blank:  # allow_unlabelled keeps them, for scoring only
                raise ValueError(
                    f"the labelled feature table is empty: every one of the {blank:,} "
                    f"customers has a blank churn label (column '{cfg.labels.churned_column}'"
                    "; labels.allow_unlabelled keeps such customers for scoring, not for "
                    "training): land a table with labels"
                )
            raise ValueError(
                "the labelled feature table is empty: no customer "
                + (f"was active before the cut-off {cutoff}" if cutoff else "row is usable")
                + " (see the raw tables' checks, labels.active_within_days and labels.cutoff)"
            )
        metadata = {
            **table_metadata(features),
            "cutoff": dg.MetadataValue.text(
                cutoff.isoformat() if cutoff else _snapshot_note(cfg, customers, features)
            ),
            "horizon_days": dg.MetadataValue.int(cfg.labels.horizon_days),
            "label_source": dg.MetadataValue.text(cfg.labels.source),
            "churn_rate": dg.MetadataValue.float(float(features["churned"].mean() or 0.0)),
            "excluded_quarantined_rows": dg.MetadataValue.int(bad_c + bad_t),
            "feature_count": dg.MetadataValue.int(len(feature_columns(features))),
            **({"stray_latest_lines": dg.MetadataValue.text(stray)} if stray else {}),
        }
        if "total_sales" in features.columns:
            metadata["mean_total_sales"] = dg.MetadataValue.float(
                float(features["total_sales"].mean() or 0.0)
            )
        if match is not None:
            matched, total = match
            metadata["transaction_customers_in_customer_table"] = dg.MetadataValue.text(
                f"{matched:,} of {total:,}"
            )
            if matched < total:  # their lines are in no feature: counted and said
                import polars as pl

                lines = (
                    transactions.lazy()
                    .filter(~pl.col("customer_id").is_in(customers["customer_id"].implode()))
                    .select(pl.len())
                    .collect()
                    .item()
                )
                metadata["transaction_lines_of_unknown_customers"] = dg.MetadataValue.int(lines)
                context.log.warning(
                    f"{total - matched:,} of the {total:,} customer ids in the transactions "
                    f"({lines:,} line(s)) {UNKNOWN_IDS}"
                )
    _warn_of_another_config(context, platform, metadata)
    context.log.info(f"{features.height} customers, cut-off {cutoff}")
    return dg.Output(features, metadata=metadata)


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="features",
    kinds={"polars", "parquet"},
    ins={"raw_transactions": parts_input()},
    freshness_policy=DATA_FRESHNESS,
    # it keeps the incremental state: one writer at a time
    pool=INGEST_POOL,
)
def current_features(
    context: dg.AssetExecutionContext, platform: ChurnPlatform, raw_customers, raw_transactions
) -> dg.Output:
    """Features of every customer as of now (the day after the last transaction), without
    labels: what batch scoring, drift reports and the serving sidecar's customer lookups
    use. Snapshot data sets: the customer table as it is. The category-share columns are
    those of the training cut-off plus those of the deployed version's feature definition,
    so the deployed model finds its columns even after the top categories change.

    Kept up to date incrementally (``churn_assets/lib/incremental.py``, state under
    ``state/current_features/``): each raw_transactions partition (landing file) is
    summarised once (lines, time span, daily sales per category), and a partition seen
    before is not read again; within a day only the customers of new files are recomputed;
    a new day, a rewritten file, other customers or categories recompute every row. Same
    table as a build from every line."""
    import datetime as dt

    import polars as pl

    from churn_assets.lib import incremental
    from churn_assets.lib.feature_sets import (
        active_population,
        deployed_categories,
        features_at,
        usable,
    )
    from churn_assets.lib.features import LABELS, cutoff_before

    with fail_fast_unless_transient():
        cfg = platform.dataset_config()
        customers, _ = usable(raw_customers)
        categories: tuple = ()
        kept: dict = {}
        if cfg.transactions is None:
            cutoff = None
            features = features_at(cfg, customers, usable(None)[0], None, with_labels=False)
        else:
            parts = {
                k: (stamp, incremental_lines(lf)) for k, (stamp, lf) in _parts(raw_transactions)
            }
            state = platform.storage().child(*STATE_DIR)
            summaries = incremental.partition_summaries(state, parts)
            last = incremental.last_timestamp(summaries)
            if last is None:
                raise ValueError("no usable transaction lines: every line is in quarantine")
            cutoff = last.date() + dt.timedelta(days=1)
            label_cut = cfg.labels.cutoff or cutoff_before(last, cfg.labels.horizon_days)
            categories = tuple(
                sorted(
                    set(incremental.top_categories_before(summaries, label_cut))
                    | set(deployed_categories(platform.storage()))
                )
            )
            files = dict(  # in the order of their first line, as read from every line
                sorted(
                    ((src, f) for s in summaries.values() for src, f in s["files"].items()),
                    key=lambda item: (item[1][2], item[0]),
                )
            )
            batches = {
                src: parts[key][1].filter(pl.col(incremental.SOURCE_COLUMN) == src)
                for key, s in summaries.items()
                for src in s["files"]
            }
            features, kept = incremental.sync(
                state,
                pl.concat([lines for _, lines in parts.values()], how="diagonal_relaxed"),
                customers if cfg.customers is not None else None,
                categories,
                horizon_days=cfg.labels.horizon_days,
                naive_lookback_days=cfg.naive_lookback_days,
                exit_events=tuple(cfg.transactions.exit_events),
                files=files,
                batches=batches,
            )
            features = active_population(
                cfg, features.drop([c for c in LABELS if c in features.columns])
            )
    metadata = {
        **table_metadata(features),
        "as_of": dg.MetadataValue.text(cutoff.isoformat() if cutoff else "snapshot"),
        "categories": dg.MetadataValue.json(list(categories)),
    }
    if kept:
        metadata["incremental"] = dg.MetadataValue.json(kept)
    if kept.get("unknown_customer_lines"):  # of the files this run read (all, on a rebuild)
        lines = kept["unknown_customer_lines"]
        metadata["transaction_lines_of_unknown_customers"] = dg.MetadataValue.int(lines)
        context.log.warning(
            f"{lines:,} transaction line(s) of the files read now name ids that {UNKNOWN_IDS}"
        )
    _warn_of_another_config(context, platform, metadata)
    return dg.Output(features, metadata=metadata)


def _warn_of_another_config(
    context: dg.AssetExecutionContext, platform: ChurnPlatform, metadata: dict
) -> None:
    """Warn (and say in ``metadata``) when transaction partitions were read with another
    transactions config than the current one: an edit such as ``amount_scale`` applies only
    to files landed after it, and the history silently mixed two units."""
    from churn_assets.lib.landed_sources import another_config_warning, read_with_another_config

    cfg = platform.dataset_config()
    if cfg.transactions is None:
        return
    with retry_on_connection_errors(context):
        keys = read_with_another_config(platform.storage(), cfg)
    if keys:
        metadata["partitions_of_an_earlier_config"] = dg.MetadataValue.json(keys[:50])
        context.log.warning(another_config_warning(keys))


def _parts(raw_transactions):
    """The partitions of raw_transactions, or a clear error when there is none."""
    if not raw_transactions:
        raise ValueError(
            "raw_transactions has no partition yet: no transaction file has landed "
            "(`churn seed`, or put files in the landing zone; the landing sensor ingests them)"
        )
    return raw_transactions.items()


#: Where current_features keeps its incremental state (under the data set's storage).
STATE_DIR = ("state", "current_features")


def incremental_lines(raw_transactions):
    """The usable lines of the raw table with the landing file each came from."""
    import polars as pl

    from churn_assets.lib.incremental import SOURCE_COLUMN
    from churn_assets.lib.ingest import TRANSACTION_COLUMNS

    names = raw_transactions.collect_schema().names()
    if "_quarantined" in names:
        raw_transactions = raw_transactions.filter(~pl.col("_quarantined"))
    return raw_transactions.select([*TRANSACTION_COLUMNS, SOURCE_COLUMN])


def _snapshot_note(cfg: Any, customers: Any, features: Any) -> str:
    """The cut-off text of a snapshot: the date its date features count to, if it has any."""
    from churn_assets.lib.feature_sets import snapshot_as_of

    if "tenure_days" in features.columns or any(
        c.startswith("days_since_") for c in features.columns
    ):
        return f"n/a (snapshot; its dates count to {snapshot_as_of(cfg, customers)})"
    return "n/a (snapshot)"
