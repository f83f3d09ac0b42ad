"""Current features kept up to date batch by batch: a new batch costs O(batch), not O(history).

The features of a customer change only with the customer's own transactions, as long as the
scoring cut-off (the day after the last transaction) stays the same. So each batch of
validated transaction lines is reduced once to compact parts, written once:

- ``activity/<batch>.parquet``: :func:`~churn_assets.lib.features.daily_activity` (one row
  per customer and day);
- ``categories/<batch>.parquet`` and ``countries/<batch>.parquet``: per-customer sums.

Within a day, :func:`add_batch` recomputes the rows of the customers the batch touches from
their parts and splices them into the stored table; when the cut-off moves to a new day (or
the category columns change) every row is recomputed from the parts, which are far smaller
than the lines. Both give the table :func:`~churn_assets.lib.feature_sets.features_at`
builds from all lines (tested), as long as an order's lines arrive in one batch.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from churn_assets.lib.features import (
    ID,
    ROUND_DECIMALS,
    FeatureParams,
    behaviour_features,
    build_customer_features,
    category_sums,
    country_sums,
    daily_activity,
)

PARTS = ("activity", "categories", "countries")
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


def _read_parts(storage: Any, part: str, batches: list[str], ids: pl.Series | None) -> pl.LazyFrame:
    frames = [storage.read_parquet(f"{part}/{b}.parquet").lazy() for b in batches]
    if not frames:
        raise ValueError(f"no {part} parts: add a batch first")
    out = pl.concat(frames, how="vertical")
    return out.filter(pl.col(ID).is_in(ids.implode())) if ids is not None else out


def features_from_parts(
    storage: Any,
    batches: list[str],
    customers: pl.DataFrame | None,
    params: FeatureParams,
    ids: pl.Series | None = None,
) -> pl.DataFrame:
    """Current features (no labels) from the parts of ``batches``, of ``ids`` only when
    given."""
    activity = _read_parts(storage, "activity", batches, ids)
    cats = (
        _read_parts(storage, "categories", batches, ids)
        .group_by(ID, "category")
        .agg(pl.col("amount").sum().round(ROUND_DECIMALS))
    )
    countries = (
        _read_parts(storage, "countries", batches, ids)
        .group_by(ID, "country")
        .agg(pl.col("_v").sum())
    )
    behaviour = behaviour_features(activity, cats, countries, params)
    if customers is not None and ids is not None:
        customers = customers.filter(pl.col(ID).is_in(ids.implode()))
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
    last = lines.select(pl.col("timestamp").max()).item()
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
        and storage.exists(FEATURES)
    )
    if same_day:
        touched = parts["activity"][ID].unique()
        rows = features_from_parts(storage, batches, customers, params, touched)
        old = storage.read_parquet(FEATURES)
        table = pl.concat(
            [old.filter(~pl.col(ID).is_in(touched.implode())), rows.select(old.columns)]
        ).sort(ID)
        mode, updated = "touched", rows.height
    else:
        table = features_from_parts(storage, batches, customers, params)
        mode, updated = "full", table.height
    storage.write_parquet(FEATURES, table)
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
