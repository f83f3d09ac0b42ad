"""Current features kept up to date batch by batch: a new batch costs O(batch), not O(history).

Each batch of validated transaction lines is reduced once to compact parts, written once:

- ``activity/<batch>.parquet``: :func:`~churn_assets.lib.features.daily_activity` (one row
  per customer and day);
- ``categories/<batch>.parquet``, ``countries/<batch>.parquet``: per-customer sums.

Beside them the state holds, for every customer, the mergeable aggregates of all batches at
the current cut-off (:func:`~churn_assets.lib.features.customer_aggregates`), the category
and country totals, and the feature table.

- **Within a day** (the scoring cut-off, the day after the last transaction, stays put) a
  batch's own aggregates are merged into those of the customers it touches (sums added,
  first and last times, a day active in both counted once), and only their feature rows are
  recomputed and spliced in: O(batch) plus rewriting the per-customer tables.
- **On a new day** (or new category columns, or a batch with lines from before the last
  day) the windows move for everybody: every row is recomputed from the activity parts,
  which are far smaller than the lines.

Both give the table :func:`~churn_assets.lib.feature_sets.features_at` builds from every line
(tested), as long as an order's lines arrive in one batch.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from churn_assets.lib.features import (
    AGGREGATE_MAX,
    AGGREGATE_MIN,
    ID,
    ROUND_DECIMALS,
    FeatureParams,
    aggregate_sums,
    behaviour_from_aggregates,
    build_customer_features,
    category_sums,
    country_sums,
    customer_aggregates,
    daily_activity,
    round_amounts,
)

PARTS = ("activity", "categories", "countries")
AGGREGATES = "aggregates.parquet"
CATEGORY_TOTALS = "category_totals.parquet"
COUNTRY_TOTALS = "country_totals.parquet"
FEATURES = "features.parquet"
STATE = "state.json"
#: Batch names become file names.
_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")


@dataclass(frozen=True)
class BatchUpdate:
    """What :func:`add_batch` did."""

    batch: str
    lines: int
    mode: str  # "touched": only the batch's customers recomputed; "full": every customer
    customers_updated: int
    customers_total: int
    cutoff: dt.date

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cutoff": self.cutoff.isoformat()}


def batch_parts(lines: pl.DataFrame | pl.LazyFrame) -> dict[str, pl.DataFrame]:
    """The compact parts of a batch of usable transaction lines (see the module doc)."""
    lazy = lines.lazy().filter(pl.col(ID).is_not_null())
    frames = pl.collect_all([daily_activity(lazy), category_sums(lazy), country_sums(lazy)])
    return dict(zip(PARTS, frames, strict=True))


def _combine_categories(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.group_by(ID, "category").agg(pl.col("amount").sum().round(ROUND_DECIMALS))


def _combine_countries(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.group_by(ID, "country").agg(pl.col("_v").sum())


def _merge_aggregates(
    old: pl.DataFrame, new: pl.DataFrame, new_days: pl.DataFrame, windows: tuple[int, ...]
) -> pl.DataFrame:
    """``new`` (a batch's :func:`customer_aggregates`) merged into the rows of ``old`` for
    the same customers (both at one cut-off); customers only in ``new`` as they are.
    ``new_days`` holds the batch's (customer, day) pairs: a day already active counts once."""
    sums = aggregate_sums(windows)
    prev = old.join(new.select(ID), on=ID, how="semi")
    both = new.join(prev, on=ID, how="left", suffix="_old")
    overlap = (
        new_days.join(prev.select(ID, "_last_day"), on=ID, how="inner")
        .filter(pl.col("day") == pl.col("_last_day"))
        .select(ID, pl.lit(1.0).alias("_overlap"))
        .unique()
    )
    both = both.join(overlap, on=ID, how="left")
    merged = both.select(
        ID,
        *[
            (
                pl.col(c)
                + pl.col(f"{c}_old").fill_null(0.0)
                - (pl.col("_overlap").fill_null(0.0) if c == "active_days" else 0.0)
            ).alias(c)
            for c in sums
        ],
        *[pl.min_horizontal(c, f"{c}_old").alias(c) for c in AGGREGATE_MIN],
        *[pl.max_horizontal(c, f"{c}_old").alias(c) for c in AGGREGATE_MAX],
    )
    return round_amounts(merged.lazy(), windows).collect().select(new.columns)


def _splice(old: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """``old`` with the customers of ``rows`` replaced (or added), sorted by id."""
    kept = old.join(rows.select(ID), on=ID, how="anti")
    return pl.concat([kept, rows.select(old.columns)]).sort(ID)


def _features(
    aggregates: pl.DataFrame,
    cats: pl.DataFrame,
    countries: pl.DataFrame,
    customers: pl.DataFrame | None,
    params: FeatureParams,
) -> pl.DataFrame:
    behaviour = behaviour_from_aggregates(aggregates.lazy(), cats.lazy(), countries.lazy(), params)
    return build_customer_features(customers, None, params, behaviour=behaviour)


def add_batch(
    storage: Any,
    batch: str,
    lines: pl.DataFrame,
    customers: pl.DataFrame | None,
    categories: tuple[str, ...],
    *,
    horizon_days: int = 90,
    naive_lookback_days: int = 270,
) -> BatchUpdate:
    """Add ``lines`` (usable, typed transaction lines) as batch ``batch`` and bring the
    stored feature table up to date. A batch is written once: adding a name again raises.

    ``customers`` is the data set's customer table (or ``None``), the same for every batch;
    ``categories`` the category-share columns of the table."""
    if not _BATCH_NAME.match(batch):
        raise ValueError(f"batch name {batch!r}: letters, digits, '.', '_', '=', '-' only")
    if storage.exists(f"activity/{batch}.parquet"):
        raise ValueError(f"batch {batch!r} was added already")
    if lines.height == 0:
        raise ValueError(f"batch {batch!r} holds no usable transaction lines")
    state = storage.read_json(STATE) if storage.exists(STATE) else None
    first, last = lines.select(
        pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last")
    ).row(0)
    if state is not None:
        last = max(last, dt.datetime.fromisoformat(state["last_timestamp"]))
    cutoff = last.date() + dt.timedelta(days=1)
    params = FeatureParams(
        cutoff=cutoff,
        horizon_days=horizon_days,
        naive_lookback_days=naive_lookback_days,
        with_labels=False,
        categories=tuple(categories),
    )
    parts = batch_parts(lines)
    for name, frame in parts.items():
        storage.write_parquet(f"{name}/{batch}.parquet", frame)
    batches = [*(state or {}).get("batches", []), batch]
    same_day = (
        state is not None
        and state["cutoff"] == cutoff.isoformat()
        and tuple(state["categories"]) == params.categories
        and first.date() >= dt.date.fromisoformat(state["last_timestamp"][:10])
        and all(storage.exists(f) for f in (AGGREGATES, CATEGORY_TOTALS, COUNTRY_TOTALS, FEATURES))
    )
    if same_day:
        new = customer_aggregates(parts["activity"].lazy(), params).collect()
        old = storage.read_parquet(AGGREGATES)
        merged = _merge_aggregates(
            old, new, parts["activity"].select(ID, "day").unique(), params.windows
        )
        ids = merged.select(ID)
        cat_totals = storage.read_parquet(CATEGORY_TOTALS)
        cats = _combine_categories(
            pl.concat([cat_totals.join(ids, on=ID, how="semi"), parts["categories"]]).lazy()
        ).collect()
        country_totals = storage.read_parquet(COUNTRY_TOTALS)
        countries = _combine_countries(
            pl.concat([country_totals.join(ids, on=ID, how="semi"), parts["countries"]]).lazy()
        ).collect()
        mine = customers.join(ids, on=ID, how="semi") if customers is not None else None
        rows = _features(merged, cats, countries, mine, params)
        aggregates = _splice(old, merged)
        cat_totals = _splice(cat_totals, cats)
        country_totals = _splice(country_totals, countries)
        table = _splice(storage.read_parquet(FEATURES), rows)
        mode, updated = "touched", rows.height
    else:

        def read(part: str) -> pl.LazyFrame:
            return pl.concat([storage.read_parquet(f"{part}/{b}.parquet").lazy() for b in batches])

        aggregates, cat_totals, country_totals = pl.collect_all(
            [
                customer_aggregates(read("activity"), params),
                _combine_categories(read("categories")),
                _combine_countries(read("countries")),
            ]
        )
        table = _features(aggregates, cat_totals, country_totals, customers, params)
        mode, updated = "full", table.height
    for name, frame in (
        (AGGREGATES, aggregates),
        (CATEGORY_TOTALS, cat_totals),
        (COUNTRY_TOTALS, country_totals),
        (FEATURES, table),
    ):
        storage.write_parquet(name, frame)
    storage.write_json(
        STATE,
        {
            "cutoff": cutoff.isoformat(),
            "last_timestamp": last.isoformat(),
            "categories": list(params.categories),
            "batches": batches,
        },
    )
    return BatchUpdate(batch, lines.height, mode, updated, table.height, cutoff)
