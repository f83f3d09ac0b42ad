"""Current features kept up to date batch by batch: a new batch costs O(batch), not O(history).

Each batch of validated transaction lines is reduced once to compact parts, written once:

- ``activity/<batch>.parquet``: :func:`~churn_assets.lib.features.daily_activity` (one row
  per customer and day);
- ``categories/<batch>.parquet``, ``countries/<batch>.parquet``: per-customer sums.

Beside them the state holds, per customer, the mergeable aggregates of all batches at the
current cut-off (:func:`~churn_assets.lib.features.customer_aggregates`), the category and
country totals, and the feature row (:func:`read_table`).

- **Within a day** (the scoring cut-off, the day after the last transaction, stays put) a
  batch's own aggregates are merged into those of the customers it touches (sums added,
  first and last times, a day active in both counted once); only their rows are recomputed
  and written, beside the last full recompute: O(batch), plus reading the per-customer
  aggregates of the batch's customers.
- **On a new day** (or new category columns, or a batch with lines from before the last
  day) the windows move for everybody: every row is recomputed from the activity parts,
  which are far smaller than the lines, and written as the new base. The parts of every
  batch so far are compacted into the new batch's (one row per customer and day), so the
  next full recompute reads one part set, not one per landing file.

Both give the table :func:`~churn_assets.lib.feature_sets.features_at` builds from every line
(tested), as long as an order's lines arrive in one batch.
"""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from churn_assets.lib.features import (
    AGGREGATE_MAX,
    AGGREGATE_MIN,
    ID,
    LAST_TIME,
    ROUND_DECIMALS,
    SEPARATE_SCANS,
    FeatureParams,
    aggregate_sums,
    amount_units,
    behaviour_from_aggregates,
    build_customer_features,
    category_sums,
    combine_activity,
    country_sums,
    customer_aggregates,
    daily_activity,
    exited_customers,
    order_rows,
    per_customer_bucket,
    round_amounts,
    top_of_totals,
)

PARTS = ("activity", "categories", "countries")
#: The per-customer tables of the state (see :func:`read_table`).
TABLES = ("aggregates", "category_totals", "country_totals", "features")
STATE = "state.json"
#: The per-customer tables are written by every batch: lz4 writes them 2-3x faster than
#: zstd (210k customers: 0.45 s instead of 0.9 s for the four), at 1.3-1.4x the size.
REWRITTEN_COMPRESSION = "lz4"
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
    #: Lines of customer ids the customer table lacks (their purchases are in no feature).
    unknown_customer_lines: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cutoff": self.cutoff.isoformat()}


def batch_parts(
    lines: pl.DataFrame | pl.LazyFrame, rows: int | None = None, with_times: bool = False
) -> dict[str, pl.DataFrame]:
    """The compact parts of a batch of usable transaction lines (see the module doc),
    reduced a bucket of customers at a time when they hold many orders (``rows``: the
    batch's line count, when known); ``with_times``: each category's latest time too
    (for exit events)."""
    lazy = lines.lazy().filter(pl.col(ID).is_not_null())

    def reduce(part: pl.LazyFrame) -> list[pl.DataFrame]:
        # one after the other: on a whole history (1M customers, 49.7M lines) three queries
        # at once held three scans of the lines
        return [
            q.collect(optimizations=SEPARATE_SCANS)
            for q in (
                daily_activity(part),
                category_sums(part, with_times),
                country_sums(part),
            )
        ]

    frames = per_customer_bucket(order_rows(lazy, rows), lambda only: reduce(only(lazy)))
    return dict(zip(PARTS, frames, strict=True))


def _combine_categories(frame: pl.LazyFrame) -> pl.LazyFrame:
    times = [pl.col(LAST_TIME).max()] if LAST_TIME in frame.collect_schema().names() else []
    return frame.group_by(ID, "category").agg(pl.col("amount").sum().round(ROUND_DECIMALS), *times)


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


def _features(
    aggregates: pl.DataFrame,
    cats: pl.DataFrame,
    countries: pl.DataFrame,
    customers: pl.DataFrame | None,
    params: FeatureParams,
) -> pl.DataFrame:
    behaviour = behaviour_from_aggregates(aggregates.lazy(), cats.lazy(), countries.lazy(), params)
    return build_customer_features(customers, None, params, behaviour=behaviour)


def _read_all(storage: Any, paths: list[str]) -> list[pl.DataFrame]:
    with ThreadPoolExecutor(4) as pool:  # parquet decoding runs outside the GIL
        return list(pool.map(storage.read_parquet, paths))


#: Marks a feature row of a customer who left (an exit event) within a day: it hides the
#: customer's row of the last full recompute.
EXITED = "_exited"


def _latest(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The rows of each customer from the last frame that holds the customer."""
    if len(frames) == 1:
        return frames[0]
    tagged = pl.concat(
        [f.with_columns(pl.lit(i).alias("_rank")) for i, f in enumerate(frames)], how="diagonal"
    )
    return tagged.filter(pl.col("_rank") == pl.col("_rank").max().over(ID)).drop("_rank")


def _table_paths(state: dict[str, Any], table: str) -> list[str]:
    return [
        f"base/{state['base']}/{table}.parquet",
        *[f"delta/{d}/{table}.parquet" for d in state["deltas"]],
    ]


def read_table(storage: Any, table: str = "features", ids: pl.Series | None = None) -> pl.DataFrame:
    """The current ``table`` (``features``, ``aggregates``, ``category_totals`` or
    ``country_totals``): the last full recompute with every later batch's rows applied,
    sorted by customer id; of ``ids`` only when given."""
    state = storage.read_json(STATE)
    frames = _read_all(storage, _table_paths(state, table))
    if ids is not None:
        frames = [f.filter(pl.col(ID).is_in(ids.implode())) for f in frames]
    latest = _latest(frames)
    if EXITED in latest.columns:  # customers who left since the last full recompute
        latest = latest.filter(pl.col(EXITED).is_null()).drop(EXITED)
    return latest.sort(ID)


def add_batch(
    storage: Any,
    batch: str,
    lines: pl.DataFrame | pl.LazyFrame,
    customers: pl.DataFrame | None,
    categories: tuple[str, ...],
    *,
    horizon_days: int = 90,
    naive_lookback_days: int = 270,
    exit_events: tuple[str, ...] = (),
) -> BatchUpdate:
    """Add ``lines`` (usable, typed transaction lines) as batch ``batch`` and bring the
    stored feature table (:func:`read_table`) up to date. A batch is added once: adding a
    name again raises.

    ``customers`` is the data set's customer table (or ``None``), the same for every batch;
    ``categories`` the category-share columns of the table.

    Within a day the batch's rows of the per-customer tables are written beside the last
    full recompute (``delta/<batch>/``); a full recompute writes them all anew
    (``base/<batch>/``). ``state.json``, written last, names what is current, so an
    interrupted batch leaves the table as it was and can be added again."""
    if not _BATCH_NAME.match(batch):
        raise ValueError(f"batch name {batch!r}: letters, digits, '.', '_', '=', '-' only")
    state = storage.read_json(STATE) if storage.exists(STATE) else None
    if state is not None and batch in state.get("added", state["batches"]):
        raise ValueError(f"batch {batch!r} was added already")
    lines = lines.lazy()
    known = customers[ID].implode() if customers is not None else None
    n, first, last, unknown = (
        lines.select(
            pl.len().alias("n"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
            (~pl.col(ID).is_in(known)).sum().alias("unknown")
            if known is not None
            else pl.lit(0).alias("unknown"),
        )
        .collect()
        .row(0)
    )
    if n == 0:
        raise ValueError(f"batch {batch!r} holds no usable transaction lines")
    if state is not None:
        last = max(last, dt.datetime.fromisoformat(state["last_timestamp"]))
    cutoff = last.date() + dt.timedelta(days=1)
    params = FeatureParams(
        cutoff=cutoff,
        horizon_days=horizon_days,
        naive_lookback_days=naive_lookback_days,
        with_labels=False,
        categories=tuple(categories),
        exit_events=tuple(exit_events),
    )
    parts = batch_parts(lines, n, with_times=bool(params.exit_events))
    for name, frame in parts.items():
        storage.write_parquet(f"{name}/{batch}.parquet", frame)
    batches = [*(state or {}).get("batches", []), batch]
    same_day = (
        state is not None
        and state["cutoff"] == cutoff.isoformat()
        and tuple(state["categories"]) == params.categories
        and first.date() >= dt.date.fromisoformat(state["last_timestamp"][:10])
    )
    if same_day:
        assert state is not None
        ids = parts["activity"][ID].unique()
        tables = TABLES[:3]  # the per-customer tables the batch's customers are read from
        paths = [p for t in tables for p in _table_paths(state, t)]
        frames = [f.filter(pl.col(ID).is_in(ids.implode())) for f in _read_all(storage, paths)]
        per = len(state["deltas"]) + 1
        old, cat_totals, country_totals = (
            _latest(frames[i * per : (i + 1) * per]) for i in range(len(tables))
        )
        new = customer_aggregates(parts["activity"].lazy(), params).collect()
        merged = _merge_aggregates(
            old, new, parts["activity"].select(ID, "day").unique(), params.windows
        )
        cats = _combine_categories(pl.concat([cat_totals, parts["categories"]]).lazy()).collect()
        countries = _combine_countries(
            pl.concat([country_totals, parts["countries"]]).lazy()
        ).collect()
        mine = (
            customers.join(merged.select(ID), on=ID, how="semi") if customers is not None else None
        )
        rows = _features(merged, cats, countries, mine, params)
        if params.exit_events:  # who left in this batch: a row saying so hides the base's
            gone = exited_customers(cats.lazy(), merged.lazy(), params.exit_events).collect()
            rows = pl.concat([rows, gone], how="diagonal") if gone.height else rows
        tables_out = dict(zip(TABLES, (merged, cats, countries, rows), strict=True))
        newcomers = 0 if customers is not None else merged.height - old.height
        total = state["customers"] + newcomers
        where, base, deltas = f"delta/{batch}", state["base"], [*state["deltas"], batch]
        mode, updated = "touched", rows.height
    else:

        def read(part: str) -> pl.LazyFrame:
            earlier = [storage.read_parquet(f"{part}/{b}.parquet") for b in batches[:-1]]
            return pl.concat([*earlier, parts[part]]).lazy()  # this batch's from memory

        activity = read("activity")
        rows = activity.select(pl.len()).collect().item()
        if len(batches) > 1:  # compacted: the next full recompute reads one part, not many
            activity = per_customer_bucket(
                rows, lambda only: combine_activity(only(activity)).collect()
            ).lazy()
        aggregates = per_customer_bucket(
            rows, lambda only: customer_aggregates(only(activity), params).collect()
        )
        cat_totals = _combine_categories(read("categories")).collect()
        country_totals = _combine_countries(read("countries")).collect()
        if len(batches) > 1:
            compacted = {"activity": activity.collect(), "categories": cat_totals}
            compacted["countries"] = country_totals
            for name, frame in compacted.items():
                storage.write_parquet(f"{name}/{batch}.parquet", frame)
        table = _features(aggregates, cat_totals, country_totals, customers, params)
        tables_out = dict(zip(TABLES, (aggregates, cat_totals, country_totals, table), strict=True))
        where, base, deltas = f"base/{batch}", batch, []
        mode, updated, total = "full", table.height, table.height
    with ThreadPoolExecutor(4) as pool:  # parquet encoding runs outside the GIL
        list(
            pool.map(
                lambda item: storage.write_parquet(
                    f"{where}/{item[0]}.parquet", item[1], compression=REWRITTEN_COMPRESSION
                ),
                tables_out.items(),
            )
        )
    storage.write_json(
        STATE,
        {
            "cutoff": cutoff.isoformat(),
            "last_timestamp": last.isoformat(),
            "categories": list(params.categories),
            # the batches whose parts are current (one after a full recompute: compacted)
            "batches": batches if mode == "touched" else [batch],
            "added": [*(state or {}).get("added", (state or {}).get("batches", [])), batch],
            "base": base,
            "deltas": deltas,
            "customers": total,
        },
    )
    if mode == "full" and state is not None:  # what the previous state named
        for stale in [f"base/{state['base']}", *[f"delta/{d}" for d in state["deltas"]]]:
            storage.delete(stale, recursive=True)
        for b in batches[:-1]:  # compacted into this batch's parts
            for name in PARTS:
                storage.delete(f"{name}/{b}.parquet")
    return BatchUpdate(batch, n, mode, updated, total, cutoff, int(unknown or 0))


SOURCES = "sources.json"
SOURCE_COLUMN = "_source_file"


def _batch_name(source: str) -> str:
    """A batch name for a landing file: its name, made file-safe, and a short hash of it."""
    import hashlib

    stem = re.sub(r"[^A-Za-z0-9._=-]+", "_", source.rsplit("/", 1)[-1])[:80].lstrip("._-")
    return f"{stem or 'file'}-{hashlib.sha1(source.encode()).hexdigest()[:10]}"


def _file_summaries(lines: pl.LazyFrame) -> dict[str, list[Any]]:
    """Per landing file: lines, amount total, first and last time (a rewritten file differs)."""
    frame = (
        lines.group_by(SOURCE_COLUMN)
        .agg(
            pl.len().alias("n"),
            # in 1/10,000: an integer sum is the same in any order (a float sum is not)
            amount_units().sum().alias("amount"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
        )
        .sort("first", SOURCE_COLUMN)
        .collect()
    )
    return {
        row[SOURCE_COLUMN]: [row["n"], row["amount"], str(row["first"]), str(row["last"])]
        for row in frame.iter_rows(named=True)
    }


PARTITIONS = "partitions.json"


def partition_summary(lines: pl.LazyFrame) -> dict[str, Any]:
    """What the state needs to know of one partition (one landing file's usable lines),
    read once: its :func:`_file_summaries` entry, and its gross sales per day and category
    (in 1/10,000, so the top categories before any cut-off add up exactly)."""
    frame = lines.select(SOURCE_COLUMN, "timestamp", "amount", "category", "is_return").collect()
    days = (
        frame.filter(pl.col("category").is_not_null() & ~pl.col("is_return"))
        .group_by(pl.col("timestamp").dt.date().alias("day"), "category")
        .agg(amount_units().sum().alias("amount"))
        .sort("day", "category")
    )
    return {
        "files": _file_summaries(frame.lazy()),
        "category_days": [[str(d), c, int(a)] for d, c, a in days.iter_rows()],
    }


def partition_summaries(
    storage: Any, parts: dict[str, tuple[str, pl.LazyFrame]]
) -> dict[str, dict[str, Any]]:
    """:func:`partition_summary` of every partition (key → (fingerprint, usable lines)),
    kept in ``storage`` by fingerprint: only a partition that is new or was written again
    is read. Partitions no longer present are forgotten."""
    known = storage.read_json(PARTITIONS) if storage.exists(PARTITIONS) else {}
    out, changed = {}, False
    for key, (fingerprint, lines) in parts.items():
        entry = known.get(key)
        if entry is None or entry["fingerprint"] != fingerprint:
            entry = {"fingerprint": fingerprint, **partition_summary(lines)}
            changed = True
        out[key] = entry
    if changed or set(known) != set(out):
        storage.write_json(PARTITIONS, out)
    return out


def last_timestamp(summaries: dict[str, dict[str, Any]]) -> dt.datetime | None:
    """The latest usable line over every partition (None: no usable line)."""
    lasts = [f[3] for s in summaries.values() for f in s["files"].values()]
    return max((dt.datetime.fromisoformat(t) for t in lasts), default=None)


def top_categories_before(summaries: dict[str, dict[str, Any]], cutoff: dt.date) -> tuple[str, ...]:
    """:func:`~churn_assets.lib.features.top_categories` of every line before ``cutoff``,
    from the partitions' daily totals (the same categories, without reading a line)."""
    day = cutoff.isoformat()
    totals: dict[str, int] = {}
    for s in summaries.values():
        for d, category, amount in s["category_days"]:
            if d < day:
                totals[category] = totals.get(category, 0) + amount
    frame = pl.DataFrame(
        {"category": list(totals), "amount": list(totals.values())},
        schema={"category": pl.String, "amount": pl.Int64},
    )
    return top_of_totals(frame)


def _customers_fingerprint(customers: pl.DataFrame | None) -> str | None:
    if customers is None:
        return None
    return f"{customers.height}:{customers.hash_rows(seed=7).sum()}"


def sync(
    storage: Any,
    lines: pl.LazyFrame,
    customers: pl.DataFrame | None,
    categories: tuple[str, ...],
    *,
    horizon_days: int = 90,
    naive_lookback_days: int = 270,
    exit_events: tuple[str, ...] = (),
    files: dict[str, list[Any]] | None = None,
    batches: dict[str, pl.LazyFrame] | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The current feature table of ``lines`` (usable transaction lines with their
    ``_source_file``), kept in ``storage`` between calls. ``files`` (each file's
    :func:`_file_summaries` entry, e.g. from :func:`partition_summaries`) and ``batches``
    (each file's lines) spare reading ``lines`` unless the state starts anew.

    Landing files seen before (same lines, amount total and time span), with the same
    customer table and category columns, are not read again: only new files are added
    (:func:`add_batch`, in the order of their first line). Anything else (a file removed or
    rewritten, other customers or categories, a state that does not match) starts the state
    anew from every line. Returns the table and what was done."""
    lines = lines.lazy()
    files = files if files is not None else _file_summaries(lines)
    if not files:
        raise ValueError("no usable transaction lines")
    wanted: dict[str, Any] = {
        "customers": _customers_fingerprint(customers),
        "categories": list(categories),
    }
    if exit_events:  # a state written before exit events existed had none
        wanted["exit_events"] = list(exit_events)
        wanted["exit_times"] = True  # one written before returns after an exit counted
    known = storage.read_json(SOURCES) if storage.exists(SOURCES) else None
    state = storage.read_json(STATE) if storage.exists(STATE) else None
    consistent = (
        known is not None
        and state is not None
        and all(known.get(k) == v for k, v in wanted.items())
        and known.get("exit_events", []) == list(exit_events)
        and all(files.get(f) == s for f, s in known["files"].items())
        and state["batches"] == known["batches"]
    )
    kwargs = {
        "horizon_days": horizon_days,
        "naive_lookback_days": naive_lookback_days,
        "exit_events": tuple(exit_events),
    }
    updates: list[BatchUpdate] = []
    if consistent:
        assert known is not None
        for source in [f for f in files if f not in known["files"]]:
            batch = (
                batches[source]
                if batches and source in batches
                else lines.filter(pl.col(SOURCE_COLUMN) == source)
            ).drop(SOURCE_COLUMN)
            updates.append(
                add_batch(
                    storage, _batch_name(source), batch.collect(), customers, categories, **kwargs
                )
            )
            known["files"][source] = files[source]
            name = _batch_name(source)  # a full recompute compacts the parts into its batch
            known["batches"] = [name] if updates[-1].mode == "full" else [*known["batches"], name]
            storage.write_json(SOURCES, known)
    else:
        for rel in ("base", "delta", *PARTS, STATE, SOURCES):
            if storage.exists(rel):
                storage.delete(rel, recursive=True)
        everything = lines.drop(SOURCE_COLUMN)
        updates.append(add_batch(storage, "all", everything, customers, categories, **kwargs))
        storage.write_json(SOURCES, {**wanted, "files": files, "batches": ["all"]})
    info = {
        "rebuilt": not consistent,
        "files_added": len(updates) if consistent else len(files),
        "modes": [u.mode for u in updates],
        "customers_updated": sum(u.customers_updated for u in updates),
        "unknown_customer_lines": sum(u.unknown_customer_lines for u in updates),
    }
    return read_table(storage), info
