"""Point-in-time customer features and labels, in polars (lazy).

Every feature uses only events strictly before the cut-off; labels use only events in
``[cut-off, cut-off + horizon)``. Transactions are first rolled up to orders (one row per
customer and invoice), then to customers, so the heavy work is two group-bys.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

WINDOWS = (30, 90, 180, 365)
MAX_CATEGORY_SHARES = 8
ID = "customer_id"
LABELS = ("churned", "total_sales")
ROUND_DECIMALS = 6


@dataclass(frozen=True)
class FeatureParams:
    """Cut-off, label horizon and naive-forecast window of one feature build."""

    cutoff: dt.date
    horizon_days: int = 90
    naive_lookback_days: int = 270
    windows: tuple[int, ...] = WINDOWS
    with_labels: bool = True
    categories: tuple[str, ...] | None = field(default=None)
    #: Category values that mean the customer left (``transactions.exit_events``).
    exit_events: tuple[str, ...] = ()

    @property
    def cutoff_ts(self) -> dt.datetime:
        return dt.datetime.combine(self.cutoff, dt.time())

    @property
    def horizon_end_ts(self) -> dt.datetime:
        return self.cutoff_ts + dt.timedelta(days=self.horizon_days)


def default_cutoff(transactions: pl.LazyFrame | pl.DataFrame, horizon_days: int) -> dt.date:
    """The latest cut-off whose whole label horizon is inside the data."""
    last = transactions.lazy().select(pl.col("timestamp").max()).collect().item()
    if last is None:
        raise ValueError("cannot pick a cut-off: there are no transactions")
    return cutoff_before(last, horizon_days)


def cutoff_before(last: dt.datetime, horizon_days: int) -> dt.date:
    """The latest cut-off whose whole horizon ends by the day of ``last`` (the last line)."""
    return (last + dt.timedelta(days=1)).date() - dt.timedelta(days=horizon_days)


def slug(value: str) -> str:
    """A column-name-safe version of a category value."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "blank"


def share_columns(categories: Sequence[str]) -> dict[str, list[str]]:
    """Category-share column → the category values it sums, in the order of ``categories``.
    Values spelled alike (``Home & Garden``, ``home-garden``) share one column: the same
    name twice failed the whole feature table."""
    columns: dict[str, list[str]] = {}
    for value in categories:
        columns.setdefault(f"cat_share_{slug(value)}", []).append(value)
    return columns


#: Optimizations of the feature query: every branch (orders, category shares, countries,
#: labels) reads the transactions on its own. With common-subplan elimination polars reads
#: them once and keeps that frame until every branch is done: at 1M customers (49.7M lines)
#: the step peaked at 11.4 GB, against 8.6 GB without it, for the same table.
SEPARATE_SCANS = pl.QueryOptFlags(comm_subplan_elim=False)


#: Groups (orders, customer-days) per customer bucket when a large table is reduced per
#: customer: a whole history (1M customers, 49.7M lines, 44M orders) is reduced a bucket
#: of customers at a time, so a group-by holds one bucket's groups, not every customer's.
BUCKET_ROWS = 10_000_000


def bucket_count(rows: int) -> int:
    """How many customer buckets a table of ``rows`` groups is reduced in (1 up to
    :data:`BUCKET_ROWS`)."""
    return max(1, -(-rows // BUCKET_ROWS))


def order_rows(lines: pl.LazyFrame, rows: int | None = None) -> int:
    """The number of transaction lines (``rows``, when known), or, when they are more than
    :data:`BUCKET_ROWS`, about how many orders they hold (a HyperLogLog estimate, ~1% off,
    in one pass over three columns): what the feature query's group-bys hold. 100x Online
    Retail has 54M lines in 2.5M orders: one bucket, not six scans."""
    if rows is None:
        rows = lines.select(pl.len()).collect().item()
    if bucket_count(rows) == 1:
        return rows
    own = pl.when(pl.col("invoice_id").is_null()).then(pl.col("timestamp")).alias("_order_ts")
    key = pl.struct(ID, "invoice_id", own).hash()
    return int(lines.select(key.approx_n_unique()).collect().item())


def per_customer_bucket(rows: int, reduce: Callable[[Callable[[Any], Any]], Any]) -> Any:
    """``reduce(only)`` run on one bucket of customers (by a hash of the id) after the
    other, and the results (a DataFrame, or a list of them) concatenated: ``only`` keeps a
    frame's rows of the bucket's customers. Any reduction grouped by customer gives the
    same rows as ``reduce`` of everything, in another order. ``rows`` (the size of the
    largest input) sets the number of buckets (:func:`bucket_count`)."""
    buckets = bucket_count(rows)
    if buckets == 1:
        return reduce(lambda frame: frame)
    key = pl.col(ID).hash(seed=0) % buckets
    outs = [reduce(lambda frame, k=k: frame.filter(key == k)) for k in range(buckets)]
    if isinstance(outs[0], pl.DataFrame):
        return pl.concat(outs)
    return [pl.concat(list(group)) for group in zip(*outs, strict=True)]


def _stable(*columns) -> pl.Expr:
    """Round sums to ``ROUND_DECIMALS``: polars adds floats in a thread-dependent order, and
    amounts carry fewer decimals than that, so rounding restores the exact, repeatable sum."""
    return pl.col(*columns).round(ROUND_DECIMALS)


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds().cast(pl.Float64) / 86_400e6


def _orders(pre: pl.LazyFrame) -> pl.LazyFrame:
    """Roll transaction lines up to orders (customer x invoice)."""
    # Lines without an invoice form one order per timestamp: group by the invoice id and, for
    # those lines only, the timestamp (no timestamp -> string formatting of every row).
    ts_key = pl.when(pl.col("invoice_id").is_null()).then(pl.col("timestamp"))
    return (
        pre.with_columns(ts_key.alias("_order_ts"))
        .group_by(ID, "invoice_id", "_order_ts")
        .agg(
            pl.col("timestamp").min().alias("ts"),
            pl.col("amount").sum().alias("net"),
            pl.when(~pl.col("is_return")).then(pl.col("amount")).sum().alias("gross"),
            pl.when(pl.col("is_return")).then(pl.col("amount")).sum().alias("returned"),
            (~pl.col("is_return")).any().alias("buy"),
            pl.col("is_return").any().alias("ret"),
        )
        .drop("invoice_id", "_order_ts")
        .with_columns(_stable("net", "gross", "returned"))
    )


#: Columns of :func:`order_activity` / :func:`daily_activity` besides the id and the day:
#: what every behavioural feature is computed from.
ACTIVITY_SUMS = ("buy_orders", "ret_orders", "net", "gross", "returned")
ACTIVITY_MAX = ("max_buy_gross", "last_buy_ts")
ACTIVITY_MIN = ("first_ts", "first_buy_ts")


def order_activity(pre: pl.LazyFrame) -> pl.LazyFrame:
    """Transaction lines rolled up to orders, one activity row per order: its day (of its
    first line), order counts (1 or 0), net / gross / returned amounts, and its time as the
    first and last (purchase) time. Rows of one customer and day can be merged with
    :func:`combine_activity` without changing any feature: the windows of the features are
    whole days before a midnight cut-off."""
    buy = pl.col("buy")
    return _orders(pre).select(
        ID,
        pl.col("ts").dt.date().alias("day"),
        buy.cast(pl.Int64).alias("buy_orders"),
        pl.col("ret").cast(pl.Int64).alias("ret_orders"),
        "net",
        "gross",
        "returned",
        pl.when(buy).then(pl.col("gross")).alias("max_buy_gross"),
        pl.when(buy).then(pl.col("ts")).alias("last_buy_ts"),
        pl.col("ts").alias("first_ts"),
        pl.when(buy).then(pl.col("ts")).alias("first_buy_ts"),
    )


def daily_activity(pre: pl.LazyFrame) -> pl.LazyFrame:
    """:func:`order_activity` merged to one row per customer and day: the compact form
    kept between batches (a new batch of lines only adds rows)."""
    return combine_activity(order_activity(pre))


def combine_activity(activity: pl.LazyFrame) -> pl.LazyFrame:
    """Rows of :func:`daily_activity` from several batches merged to one per customer and
    day (sums added, first times the earliest, last times and largest orders the latest)."""
    return (
        activity.group_by(ID, "day")
        .agg(
            *[pl.col(c).sum() for c in ACTIVITY_SUMS],
            *[pl.col(c).max() for c in ACTIVITY_MAX],
            *[pl.col(c).min() for c in ACTIVITY_MIN],
        )
        .with_columns(_stable("net", "gross", "returned"))
    )


#: A customer's latest line of a category (:func:`category_sums` ``with_times``).
LAST_TIME = "_last_ts"
#: Activity more than this after a customer's last exit event means the customer came back.
RETURN_GAP = dt.timedelta(days=1)


def category_sums(pre: pl.LazyFrame, with_times: bool = False) -> pl.LazyFrame:
    """Gross purchase amount per customer and category (one row each); with ``with_times``
    also the time of the customer's latest line of the category (:data:`LAST_TIME`)."""
    return (
        pre.filter(~pl.col("is_return") & pl.col("category").is_not_null())
        .group_by(ID, "category")
        .agg(
            pl.col("amount").sum(),
            *([pl.col("timestamp").max().alias(LAST_TIME)] if with_times else []),
        )
        .with_columns(_stable("amount"))
    )


def left_for_good(last_exit: pl.Expr, last_active: pl.Expr) -> pl.Expr:
    """True for a customer with an exit event (``last_exit``: the latest one's time) and no
    activity more than :data:`RETURN_GAP` after it (``last_active``: the latest line's time;
    events logged just after a cancellation are not a return)."""
    came_back = (last_active > last_exit + RETURN_GAP).fill_null(False)
    return last_exit.is_not_null() & ~came_back


def exited_customers(
    categories: pl.LazyFrame, last_active: pl.LazyFrame, exit_events: tuple[str, ...]
) -> pl.LazyFrame:
    """The customers (``customer_id``, ``_exited`` True) who left for good
    (:func:`left_for_good`), from :func:`category_sums` ``with_times`` rows and each
    customer's latest active time (``customer_id``, ``_last``)."""
    return (
        categories.filter(pl.col("category").is_in(list(exit_events)))
        .group_by(ID)
        .agg(pl.col(LAST_TIME).max().alias("_last_exit"))
        .join(last_active.select(ID, "_last"), on=ID, how="left")
        .filter(left_for_good(pl.col("_last_exit"), pl.col("_last")))
        .select(ID, pl.lit(True).alias("_exited"))
    )


def country_sums(pre: pl.LazyFrame) -> pl.LazyFrame:
    """Absolute amount per customer and country (one row each)."""
    return (
        pre.filter(pl.col("country").is_not_null())
        .group_by(ID, "country")
        .agg(pl.col("amount").abs().sum().alias("_v"))
    )


def top_categories(pre: pl.LazyFrame, limit: int = MAX_CATEGORY_SHARES) -> tuple[str, ...]:
    """The categories with the most gross sales before the cut-off (at most ``limit``)."""
    totals = (
        pre.filter(pl.col("category").is_not_null() & ~pl.col("is_return"))
        .group_by("category")
        .agg(amount_units().sum().alias("amount"))
        .collect()
    )
    return top_of_totals(totals, limit)


def amount_units() -> pl.Expr:
    """``amount`` in integer 1/10,000: sums of it are the same in any order and grouping
    (float sums are not), so totals kept per day or per file add up exactly."""
    return (pl.col("amount") * 10_000).round().cast(pl.Int64)


def top_of_totals(totals: pl.DataFrame, limit: int = MAX_CATEGORY_SHARES) -> tuple[str, ...]:
    """The ``limit`` categories with the largest ``amount`` total (ties: by name), sorted."""
    top = totals.sort(["amount", "category"], descending=[True, False]).head(limit)
    return tuple(sorted(top["category"].to_list()))


def transaction_features(tx: pl.LazyFrame, params: FeatureParams) -> pl.LazyFrame:
    """Behavioural features per customer from transactions strictly before the cut-off."""
    pre = tx.filter(pl.col("timestamp") < params.cutoff_ts)
    return behaviour_features(
        order_activity(pre),
        category_sums(pre, with_times=bool(params.exit_events))
        if params.categories or params.exit_events
        else None,
        country_sums(pre),
        params,
    )


#: Per-customer aggregates of :func:`customer_aggregates` and how two of them (the same
#: customers, the same cut-off, disjoint orders) merge: added, smallest, largest.
AGGREGATE_MIN = ("_first", "_first_buy")
AGGREGATE_MAX = ("_last", "max_order_value", "_last_day")


def aggregate_sums(windows: tuple[int, ...] = WINDOWS) -> tuple[str, ...]:
    """The added columns of :func:`customer_aggregates` (see :data:`AGGREGATE_MIN`)."""
    return (
        "frequency",
        "return_count",
        "monetary_total",
        "_gross",
        "_returned",
        "active_days",
        "_naive_window_sales",
        *[c for w in windows for c in (f"orders_{w}d", f"sales_{w}d")],
        "_orders_p90",
        "_sales_p90",
    )


#: Sums of amounts: rounded after every addition (see :func:`_stable`).
_AMOUNT_SUMS = ("monetary_total", "_gross", "_returned", "_naive_window_sales", "_sales_p90")


def round_amounts(frame: pl.LazyFrame, windows: tuple[int, ...] = WINDOWS) -> pl.LazyFrame:
    """:func:`_stable` on the amount sums of :func:`customer_aggregates`."""
    return frame.with_columns(_stable([*_AMOUNT_SUMS, *[f"sales_{w}d" for w in windows]]))


def customer_aggregates(activity: pl.LazyFrame, params: FeatureParams) -> pl.LazyFrame:
    """Per-customer aggregates of activity rows (:func:`order_activity` or
    :func:`daily_activity`) at the cut-off: sums over the feature windows, first and last
    times, active days. Two of them over disjoint orders merge column by column
    (:func:`aggregate_sums`, :data:`AGGREGATE_MIN`, :data:`AGGREGATE_MAX`), except that a
    day active in both counts once."""
    cutoff = params.cutoff_ts
    days = activity.with_columns(
        _days(pl.lit(cutoff) - pl.col("day").cast(pl.Datetime("us"))).alias("age")
    )
    # an order of day d has an age in (age(d) - 1, age(d)]: with whole-day windows and a
    # midnight cut-off, "age <= w" of an order is "age(d) <= w" of its day
    age = pl.col("age")
    buys = pl.col("buy_orders")
    aggs: list[pl.Expr] = [
        buys.sum().cast(pl.Float64).alias("frequency"),
        pl.col("ret_orders").sum().cast(pl.Float64).alias("return_count"),
        pl.col("last_buy_ts").max().alias("_last"),
        pl.col("first_ts").min().alias("_first"),
        pl.col("first_buy_ts").min().alias("_first_buy"),
        pl.col("net").sum().alias("monetary_total"),
        pl.col("gross").sum().alias("_gross"),
        pl.col("max_buy_gross").max().alias("max_order_value"),
        pl.col("returned").sum().alias("_returned"),
        pl.col("day").n_unique().cast(pl.Float64).alias("active_days"),
        pl.col("day").max().alias("_last_day"),
        pl.when(age <= params.naive_lookback_days)
        .then(pl.col("net"))
        .sum()
        .alias("_naive_window_sales"),
    ]
    for w in params.windows:
        aggs.append(pl.when(age <= w).then(buys).sum().cast(pl.Float64).alias(f"orders_{w}d"))
        aggs.append(pl.when(age <= w).then(pl.col("net")).sum().alias(f"sales_{w}d"))
    prior = (age > 90) & (age <= 180)
    aggs.append(pl.when(prior).then(buys).sum().cast(pl.Float64).alias("_orders_p90"))
    aggs.append(pl.when(prior).then(pl.col("net")).sum().alias("_sales_p90"))
    return round_amounts(days.group_by(ID).agg(aggs), params.windows)


def behaviour_features(
    activity: pl.LazyFrame,
    categories: pl.LazyFrame | None,
    countries: pl.LazyFrame,
    params: FeatureParams,
) -> pl.LazyFrame:
    """Behavioural features per customer from activity rows (:func:`order_activity` or
    :func:`daily_activity`), :func:`category_sums` and :func:`country_sums` (one row per
    key each, all before the cut-off): recency, frequency, monetary value, windows, trends,
    returns, category shares and countries."""
    return behaviour_from_aggregates(
        customer_aggregates(activity, params), categories, countries, params
    )


def behaviour_from_aggregates(
    aggregates: pl.LazyFrame,
    categories: pl.LazyFrame | None,
    countries: pl.LazyFrame,
    params: FeatureParams,
) -> pl.LazyFrame:
    """:func:`behaviour_features` from :func:`customer_aggregates` rows."""
    cutoff = params.cutoff_ts
    windows = [c for w in params.windows for c in (f"orders_{w}d", f"sales_{w}d")]
    per_customer = aggregates.with_columns(
        _days(pl.lit(cutoff) - pl.col("_last")).alias("recency_days"),
        _days(pl.lit(cutoff) - pl.col("_first")).alias("_first_age"),
        pl.col("_returned").abs().alias("return_amount"),
    ).select(
        ID,
        "frequency",
        "return_count",
        "_last",
        "_first",
        "_first_buy",
        "recency_days",
        "_first_age",
        "monetary_total",
        "_gross",
        "max_order_value",
        "return_amount",
        "active_days",
        "_naive_window_sales",
        *windows,
        "_orders_p90",
        "_sales_p90",
    )

    def trend(recent: str, prior: str) -> pl.Expr:
        a, b = pl.col(recent), pl.col(prior)
        return ((a - b) / (a.abs() + b.abs() + 1.0)).alias(recent.replace("_90d", "_trend_90d"))

    out = per_customer.with_columns(
        pl.when(pl.col("frequency") > 0)
        .then(pl.col("_gross") / pl.col("frequency"))
        .otherwise(0.0)
        .alias("avg_order_value"),
        (pl.col("return_count") / (pl.col("frequency") + pl.col("return_count")))
        .fill_nan(0.0)
        .alias("return_rate"),
        pl.when(pl.col("frequency") > 1)
        .then(_days(pl.col("_last") - pl.col("_first_buy")) / (pl.col("frequency") - 1))
        .otherwise(pl.col("_first_age"))
        .alias("days_between_orders"),
        trend("sales_90d", "_sales_p90"),
        trend("orders_90d", "_orders_p90"),
        (pl.col("_naive_window_sales") * params.horizon_days / params.naive_lookback_days)
        .clip(lower_bound=0.0)
        .alias("naive_total_sales"),
        pl.col("recency_days").fill_null(pl.col("_first_age")),
        pl.col("max_order_value").fill_null(0.0),
    )
    if params.categories and categories is not None:
        columns = share_columns(params.categories)
        shares = (
            categories.group_by(ID)
            .agg(
                pl.len().cast(pl.Float64).alias("n_categories"),
                *[
                    pl.when(pl.col("category").is_in(values))
                    .then(pl.col("amount"))
                    .sum()
                    .alias(col)
                    for col, values in columns.items()
                ],
                pl.col("amount").sum().alias("_cat_total"),
            )
            .with_columns(_stable(pl.Float64))
        )
        share_cols = list(columns)
        shares = shares.with_columns(
            [(pl.col(c) / pl.col("_cat_total")).fill_nan(0.0).alias(c) for c in share_cols]
        ).drop("_cat_total")
        out = out.join(shares, on=ID, how="left").with_columns(
            pl.col(["n_categories", *share_cols]).fill_null(0.0)
        )
    if params.exit_events and categories is not None:
        exited = exited_customers(categories, out, params.exit_events)
        out = out.join(exited, on=ID, how="left")
    main = (
        countries.sort([ID, "_v", "country"], descending=[False, True, False])
        .group_by(ID, maintain_order=True)
        .agg(
            pl.col("country").first().alias("main_country"),
            pl.len().cast(pl.Float64).alias("n_countries"),
        )
    )
    out = out.join(main, on=ID, how="left").with_columns(pl.col("n_countries").fill_null(0.0))
    return out.drop(["_gross", "_naive_window_sales", "_orders_p90", "_sales_p90", "_first_age"])


def transaction_labels(tx: pl.LazyFrame, params: FeatureParams) -> pl.LazyFrame:
    """``churned`` (no purchase in the horizon, or an exit event in it not followed by a
    return: :func:`left_for_good`) and ``total_sales`` (net spend, floored at 0)."""
    window = tx.filter(
        (pl.col("timestamp") >= params.cutoff_ts) & (pl.col("timestamp") < params.horizon_end_ts)
    )
    return window.group_by(ID).agg(
        (~pl.col("is_return")).any().alias("_bought"),
        pl.col("amount").sum().round(ROUND_DECIMALS).clip(lower_bound=0.0).alias("total_sales"),
        left_for_good(
            pl.col("timestamp").filter(pl.col("category").is_in(list(params.exit_events))).max(),
            pl.col("timestamp").filter(~pl.col("is_return")).max(),
        ).alias("_exit")
        if params.exit_events
        else pl.lit(False).alias("_exit"),
    )


#: Prefix of the feature a date attribute becomes: days from the date to the cut-off.
DAYS_SINCE = "days_since_"


def _dates_as_days(
    base: pl.LazyFrame, static_columns: list[str], cutoff: dt.datetime
) -> tuple[pl.LazyFrame, list[str]]:
    """Date and datetime attributes (a last login, a contract's end) as the days from
    them to the cut-off, ``days_since_<name>`` (negative for a date after it): a model
    takes numbers, and a date's meaning is how long before "now" it lies."""
    schema = base.collect_schema()
    dated = [
        c
        for c in static_columns
        if c in schema and (schema[c] == pl.Date or isinstance(schema[c], pl.Datetime))
    ]
    if not dated:
        return base, static_columns
    base = base.with_columns(
        _days(pl.lit(cutoff) - pl.col(c).cast(pl.Datetime("us"))).alias(f"{DAYS_SINCE}{c}")
        for c in dated
    ).drop(dated)
    return base, [f"{DAYS_SINCE}{c}" if c in dated else c for c in static_columns]


def build_customer_features(
    customers: pl.LazyFrame | pl.DataFrame | None,
    transactions: pl.LazyFrame | pl.DataFrame | None,
    params: FeatureParams,
    static_columns: list[str] | None = None,
    *,
    behaviour: pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """One row per customer known before the cut-off: static attributes, behaviour, labels.

    ``customers`` carries ``customer_id``, optional ``signup_date``, static attributes and,
    for snapshot data, the label columns. ``transactions`` carries the standard raw
    transaction columns. Customers that signed up (or first bought) at or after the cut-off
    are not in the result. ``behaviour`` (from :func:`behaviour_features`) replaces the
    transactions as the source of the behavioural columns (features without labels only).
    Lines holding more than :data:`BUCKET_ROWS` orders are read a bucket of customers at
    a time (the same table).
    """
    if transactions is None or behaviour is not None:
        return _customer_features(
            customers, transactions, params, static_columns, behaviour=behaviour
        )
    tx = transactions.lazy()
    if params.categories is None:  # the same share columns in every bucket
        cats = top_categories(tx.filter(pl.col("timestamp") < params.cutoff_ts))
        params = FeatureParams(**{**params.__dict__, "categories": cats})
    rows = order_rows(tx)
    if bucket_count(rows) == 1:
        return _customer_features(customers, tx, params, static_columns)

    def reduce(only: Callable[[pl.LazyFrame], pl.LazyFrame]) -> pl.DataFrame:
        mine = only(customers.lazy()) if customers is not None else None
        return _customer_features(mine, only(tx), params, static_columns)

    return per_customer_bucket(rows, reduce).sort(ID)


def _customer_features(
    customers: pl.LazyFrame | pl.DataFrame | None,
    transactions: pl.LazyFrame | pl.DataFrame | None,
    params: FeatureParams,
    static_columns: list[str] | None = None,
    *,
    behaviour: pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """:func:`build_customer_features` of one set of customers, in one query."""
    has_tx = transactions is not None or behaviour is not None
    if behaviour is not None:
        if params.with_labels or params.categories is None:
            raise ValueError("precomputed behaviour needs with_labels=False and categories")
    elif transactions is not None:
        tx = transactions.lazy()
        if params.categories is None:
            cats = top_categories(tx.filter(pl.col("timestamp") < params.cutoff_ts))
            params = FeatureParams(**{**params.__dict__, "categories": cats})
        behaviour = transaction_features(tx, params)
    cutoff = params.cutoff_ts
    if customers is not None:
        base = customers.lazy()
        static_columns = static_columns or [
            c for c in base.collect_schema().names() if c not in (ID, "signup_date", *LABELS)
        ]
        base, static_columns = _dates_as_days(base, static_columns, cutoff)
        keep = [ID, *static_columns]
        snapshot_labels = [c for c in LABELS if c in base.collect_schema().names()]
        if "signup_date" in base.collect_schema().names():
            base = base.filter(
                pl.col("signup_date").is_null() | (pl.col("signup_date") < params.cutoff)
            )
            base = base.with_columns(
                _days(pl.lit(cutoff) - pl.col("signup_date").cast(pl.Datetime("us"))).alias(
                    "_signup_age"
                )
            )
            keep.append("_signup_age")
        frame = base.select([*keep, *snapshot_labels])
        if has_tx:
            frame = frame.join(behaviour, on=ID, how="left")
    elif has_tx:
        frame = behaviour
        snapshot_labels = []
    else:
        raise ValueError("need customers, transactions or both")

    if has_tx:
        names = frame.collect_schema().names()
        behaviour_cols = [
            c
            for c, t in frame.collect_schema().items()
            if c not in (ID, "_signup_age", "_last", "_first", "_first_buy", *LABELS)
            and c not in (static_columns or [])
            and t.is_numeric()
            and c not in ("recency_days", "days_between_orders", "tenure_days", "has_purchases")
        ]
        tenure = _days(pl.lit(cutoff) - pl.col("_first"))
        if "_signup_age" in names:
            tenure = pl.coalesce(pl.col("_signup_age"), tenure)
        frame = frame.with_columns(
            tenure.fill_null(0.0).alias("tenure_days"),
            pl.col("_first_buy").is_not_null().cast(pl.Float64).alias("has_purchases"),
        ).with_columns(
            pl.col(behaviour_cols).fill_null(0.0),
            pl.col("recency_days").fill_null(pl.col("tenure_days")),
            pl.col("days_between_orders").fill_null(pl.col("tenure_days")),
        )
        if "_exited" in names:  # left before the cut-off: nothing to predict
            frame = frame.filter(~pl.col("_exited").fill_null(False))
        temp = ("_signup_age", "_last", "_first", "_first_buy", "_exited")
        frame = frame.drop([c for c in temp if c in names])
        if params.with_labels and not snapshot_labels:
            labels = transaction_labels(tx, params)
            frame = (
                frame.join(labels, on=ID, how="left")
                .with_columns(
                    (~pl.col("_bought").fill_null(False) | pl.col("_exit").fill_null(False))
                    .cast(pl.Int8)
                    .alias("churned"),
                    pl.col("total_sales").fill_null(0.0),
                )
                .drop("_bought", "_exit")
            )
    elif "_signup_age" in frame.collect_schema().names():
        frame = frame.rename({"_signup_age": "tenure_days"})
    result = frame.sort(ID).collect(optimizations=SEPARATE_SCANS)
    ordered = [ID] + [c for c in result.columns if c not in (ID, *LABELS)]
    return result.select(ordered + [c for c in LABELS if c in result.columns])


def feature_columns(df: pl.DataFrame) -> list[str]:
    """The model input columns of a feature table (everything but the id and the labels)."""
    return [c for c in df.columns if c not in (ID, *LABELS)]
