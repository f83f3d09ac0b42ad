"""Feature tables of a data set at a given cut-off, and the train/validation/holdout split.

This is where a data set config meets the feature code: which cut-off labels use, which
cut-off "now" is for scoring, and how the training set is split (by a stable hash of
``customer_id`` for snapshot data and labels read from the customer table; temporal — train
on an earlier cut-off, validate on the later one — for labels derived from transactions
whenever the history allows).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import numpy as np
import polars as pl

from churn_assets.lib.datasets import DatasetConfig
from churn_assets.lib.features import (
    DAYS_SINCE,
    FeatureParams,
    build_customer_features,
    cutoff_before,
    top_categories,
)
from churn_assets.lib.ingest import other_spelling_problem

INTERNAL = ("_source_file", "_parse_errors", "_quarantined")
SPLITS = ("train", "validation", "holdout")
MIN_HISTORY_DAYS = 60
MIN_TRAIN_ROWS = 200
MIN_PER_CLASS = 10


def usable(df: pl.DataFrame | pl.LazyFrame | None) -> tuple[pl.DataFrame | pl.LazyFrame, int]:
    """Rows not flagged ``_quarantined``, without bookkeeping columns; and the excluded count.

    A ``LazyFrame`` stays lazy (only the count is computed), so a scan reads neither the
    bookkeeping columns nor, later, any column the consumer does not use. ``None`` (a
    partitioned raw table with no partition yet, e.g. a snapshot data set's transactions)
    is the empty transaction table.
    """
    if df is None:
        from churn_assets.lib.ingest import empty_transactions

        df = empty_transactions()
    names = df.collect_schema().names()
    if "_quarantined" not in names:
        bad = 0
    elif isinstance(df, pl.LazyFrame):
        bad = int(df.select(pl.col("_quarantined").sum()).collect().item() or 0)
    else:
        bad = int(df["_quarantined"].sum())
    if bad:
        df = df.filter(~pl.col("_quarantined"))
    return df.drop([c for c in INTERNAL if c in names]), bad


def label_cutoff(cfg: DatasetConfig, transactions: pl.DataFrame | pl.LazyFrame) -> dt.date | None:
    """The cut-off of the labelled feature table (None for snapshot data)."""
    if cfg.transactions is None:
        return None
    first, last = (
        transactions.lazy()
        .select(pl.col("timestamp").min().alias("first"), pl.col("timestamp").max())
        .collect()
        .row(0)
    )
    if last is None:
        raise ValueError("cannot pick a label cut-off: there are no transactions")
    cutoff = cfg.labels.cutoff or cutoff_before(last, cfg.labels.horizon_days)
    if cutoff <= first.date():
        span = (last.date() - first.date()).days + 1
        if cfg.labels.cutoff:
            why, fix = f"labels.cutoff is {cutoff}", f"set labels.cutoff after {first.date()}"
        else:
            why = f"labels.horizon_days ({cfg.labels.horizon_days}) needs as many after the cut-off"
            fix = (
                f"set labels.horizon_days to at most {max(1, span // 2)} (half the span keeps "
                "as much history before the cut-off as the horizon after it)"
            )
        raise ValueError(
            f"no purchase history before the label cut-off {cutoff}: the transactions span "
            f"{span} day(s) ({first.date()} to {last.date()}) and {why}; {fix}, or land a "
            "longer history"
        )
    return cutoff


#: Latest lines looked at for a stray tail: at most this many, 1 per 1,000 lines, at least 5.
STRAY_TAIL_MAX = 1000


def stray_latest_lines(transactions: pl.DataFrame | pl.LazyFrame, horizon_days: int) -> str | None:
    """Why the latest lines look like strays (a typo'd year, a clock set wrong), or None.

    Every cut-off follows the last line, so one line months past the rest moves them all:
    the labels' horizon then ends where almost nobody bought, and recency grows for every
    customer. Strays: among the latest lines (1 in 1,000, 5 to 1,000 of them), those after
    a gap longer than the label horizon (30 days at least) with no line in it."""
    lf = transactions.lazy()
    names = lf.collect_schema().names()
    if "_quarantined" in names:
        lf = lf.filter(~pl.col("_quarantined"))
    n = lf.select(pl.len()).collect().item()
    k = min(STRAY_TAIL_MAX, max(5, n // 1000))
    if n <= k:
        return None
    latest = (lf.select(pl.col("timestamp").drop_nulls().top_k(k + 1)).collect()["timestamp"]).sort(
        descending=True
    )
    gaps = (latest.head(-1) - latest.tail(-1)).to_list()  # gaps[i]: line i after line i + 1
    widest = max(range(len(gaps)), key=lambda i: gaps[i])
    gap = gaps[widest]
    if gap is None or gap <= dt.timedelta(days=max(30, horizon_days)):
        return None
    strays = widest + 1
    bulk_end = latest[widest + 1]
    where = ""
    if "_source_file" in names:
        files = (
            lf.filter(pl.col("timestamp") > bulk_end)
            .select(pl.col("_source_file").unique().sort().head(5))
            .collect()["_source_file"]
            .to_list()
        )
        where = f" (in {', '.join(str(f).rsplit('/', 1)[-1] for f in files)})"
    return (
        f"the latest {strays} line(s){where}, from {latest[widest]:%Y-%m-%d} to "
        f"{latest[0]:%Y-%m-%d}, lie {gap.days} days after the rest of the history, which ends "
        f"{bulk_end:%Y-%m-%d}; every cut-off follows the last line, so they move them all (a "
        "typo in the year, a clock set wrong?): fix or remove those lines and land the file "
        "again"
    )


def scoring_cutoff(transactions: pl.DataFrame | pl.LazyFrame) -> dt.date:
    """ "Now" for scoring: the day after the last transaction."""
    last = transactions.lazy().select(pl.col("timestamp").max()).collect().item()
    if last is None:
        raise ValueError("no transactions: cannot place the scoring cut-off")
    return last.date() + dt.timedelta(days=1)


def reference_categories(
    cfg: DatasetConfig, transactions: pl.DataFrame | pl.LazyFrame | None
) -> tuple:
    """The categories whose spend shares are features: the top ones before the label
    cut-off. Every feature table of a data set (training, evaluation, scoring) uses the
    same list, so the deployed model always sees the columns it was trained on."""
    cutoff = label_cutoff(cfg, transactions) if transactions is not None else None
    if cutoff is None:
        return ()
    cut = dt.datetime.combine(cutoff, dt.time())
    return top_categories(transactions.lazy().filter(pl.col("timestamp") < cut))


def deployed_categories(storage: Any) -> tuple[str, ...]:
    """The category-share categories of the deployed version's feature definition (empty
    when nothing is deployed or the version predates feature definitions)."""
    from churn_assets.lib import deployment as dep

    current = dep.read_current(storage)
    if current is None:
        return ()
    try:
        manifest = dep.read_manifest(storage, current["version"])
    except dep.DeploymentError:
        return ()
    return tuple((manifest.get("feature_definition") or {}).get("categories") or ())


def feature_definition(
    cfg: DatasetConfig,
    transactions: pl.DataFrame | pl.LazyFrame | None,
    columns: list[str],
    customers: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """What shapes a model's feature table, stored in the version's manifest: the
    category-share categories, horizon, naive look-back, who counts (``active_within_days``,
    ``exit_events``), the cut-off, the columns and, when a date attribute is a feature
    (:func:`date_features`), which and the day its dates count to for scoring."""
    cutoff = label_cutoff(cfg, transactions) if transactions is not None else None
    dates = date_features(cfg, columns)
    as_of = dates_as_of(cfg, customers, transactions) if dates else None
    return {
        "categories": list(reference_categories(cfg, transactions)) if cutoff else [],
        "horizon_days": cfg.labels.horizon_days,
        "naive_lookback_days": cfg.naive_lookback_days,
        "active_within_days": cfg.labels.active_within_days,
        "exit_events": list(cfg.transactions.exit_events) if cfg.transactions else [],
        "label_cutoff": cutoff.isoformat() if cutoff else None,
        "dates": dates,
        "dates_as_of": as_of.isoformat() if as_of else None,
        "columns": list(columns),
    }


def date_features(cfg: DatasetConfig, columns: list[str]) -> dict[str, str]:
    """Customer date attributes that are features, each with its feature: a date as
    ``days_since_<name>``, and a snapshot's sign-up as ``tenure_days`` (with transactions
    the tenure also counts from the first purchase, so it is not the sign-up's alone)."""
    dates = {c[len(DAYS_SINCE) :]: c for c in columns if c.startswith(DAYS_SINCE)}
    signup = cfg.customers is not None and cfg.customers.signup_date is not None
    if signup and cfg.transactions is None and "tenure_days" in columns:
        dates["signup_date"] = "tenure_days"
    return dates


def dates_as_of(
    cfg: DatasetConfig,
    customers: pl.DataFrame | None,
    transactions: pl.DataFrame | pl.LazyFrame | None,
) -> dt.date | None:
    """The day scored customers' ``days_since_<date>`` features count to: the scoring
    cut-off of transaction data (the day after the last usable line, as
    ``current_features`` places it), else the snapshot's "now" (:func:`snapshot_as_of`)."""
    if transactions is not None and cfg.transactions is not None:
        last = transactions.lazy().select(pl.col("timestamp").max()).collect().item()
        return None if last is None else last.date() + dt.timedelta(days=1)
    return snapshot_as_of(cfg, customers)


def align_to(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """``frame`` with exactly ``customer_id`` and ``columns``: a category-share column the
    frame lacks is 0.0 (nobody spent in it), any other missing column is null (the
    pipelines impute it); extra columns are dropped."""
    present = set(frame.columns)
    exprs = []
    for col in ["customer_id", *columns]:
        if col in present:
            exprs.append(pl.col(col))
        elif col.startswith("cat_share_"):
            exprs.append(pl.lit(0.0, dtype=pl.Float64).alias(col))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(col))
    return frame.select(exprs)


def features_at(
    cfg: DatasetConfig,
    customers: pl.DataFrame | None,
    transactions: pl.DataFrame | pl.LazyFrame | None,
    cutoff: dt.date | None,
    *,
    with_labels: bool = True,
    categories: tuple | None = None,
) -> pl.DataFrame:
    """Customer features of ``cfg`` as of ``cutoff`` (snapshot data: the table as it is).

    ``categories`` fixes the category-share columns (default: :func:`reference_categories`).
    """
    has_tx = cfg.transactions is not None
    if categories is None and has_tx:
        categories = reference_categories(cfg, transactions)
    params = FeatureParams(
        cutoff=cutoff or snapshot_as_of(cfg, customers),
        horizon_days=cfg.labels.horizon_days,
        naive_lookback_days=cfg.naive_lookback_days,
        exit_events=tuple(cfg.transactions.exit_events) if cfg.transactions else (),
        with_labels=with_labels,
        categories=tuple(categories or ()),
    )
    frame = build_customer_features(
        customers if cfg.customers is not None else None,
        transactions.lazy().filter(pl.col("customer_id").is_not_null()) if has_tx else None,
        params,
    )
    if not with_labels:
        frame = frame.drop([c for c in ("churned", "total_sales") if c in frame.columns])
    elif not cfg.has_value_label and "total_sales" in frame.columns:
        frame = frame.drop("total_sales")  # activity events: a count, not a customer value
    elif cfg.labels.allow_unlabelled and "churned" in frame.columns:
        frame = frame.filter(pl.col("churned").is_not_null())  # scored, not trained on
    return active_population(cfg, frame)


def snapshot_as_of(cfg: DatasetConfig, customers: pl.DataFrame | None) -> dt.date:
    """ "Now" of a snapshot table, the date its sign-up ages and ``days_since_<date>``
    features count to: ``labels.cutoff`` when set (the export's date); else the day after
    its latest sign-up (someone signs up shortly before any export); else the day after
    its latest date that is not after today. The same export then gives the same features
    on any day it is read. Today only when the table holds no date."""
    if cfg.labels.cutoff is not None:
        return cfg.labels.cutoff
    today = dt.date.today()
    if customers is None:
        return today
    dated = [c for c, t in customers.schema.items() if t == pl.Date or isinstance(t, pl.Datetime)]
    if "signup_date" in dated and customers["signup_date"].null_count() < customers.height:
        dated = ["signup_date"]
    if not dated:
        return today
    latest = (
        customers.select(
            pl.concat_list(pl.col(c).cast(pl.Date) for c in dated).explode().alias("d")
        )
        .filter(pl.col("d") <= today)
        .select(pl.col("d").max())
        .item()
    )
    return today if latest is None else latest + dt.timedelta(days=1)


def customer_id_match(
    customers: pl.DataFrame, transactions: pl.DataFrame | pl.LazyFrame
) -> tuple[int, int]:
    """How many of the distinct customer ids of ``transactions`` the customer table has:
    ``(matched, total)``.

    Raises:
        ValueError: when none does (ids written differently in the two files, e.g. ``C001``
            and ``1``), naming examples of both.
    """
    tx_ids = (
        transactions.lazy()
        .select(pl.col("customer_id").drop_nulls().unique())
        .collect()["customer_id"]
    )
    known = customers["customer_id"]
    found = tx_ids.is_in(known.implode())
    matched = int(found.sum())
    problem = other_spelling_problem(
        tx_ids.filter(~found),
        known,
        total=tx_ids.len(),
        source="the transactions",
        short="transactions",
        consequence="count as never having bought",
    )
    if problem:
        raise ValueError(problem)
    if tx_ids.len() and known.len() and matched == 0:
        raise ValueError(
            f"none of the {tx_ids.len():,} customer ids in the transactions is in the customer "
            f"table (transactions: {', '.join(map(repr, tx_ids.sort().head(3)))}; customers: "
            f"{', '.join(map(repr, known.sort().head(3)))}): check customers.id_column and "
            "transactions.customer_id, and that both files name customers the same way"
        )
    return matched, tx_ids.len()


def active_population(cfg: DatasetConfig, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` without the customers who lapsed before its cut-off, when the config sets
    ``labels.active_within_days``: kept are those whose last purchase (never having bought:
    their sign-up) is at most that many days before the cut-off (``recency_days``)."""
    days = cfg.labels.active_within_days
    if days is None or "recency_days" not in frame.columns:
        return frame
    return frame.filter(pl.col("recency_days") <= days)


def population(cfg: DatasetConfig, frame: pl.DataFrame) -> str:
    """Which customers a training set holds, for the asset's metadata."""
    days = cfg.labels.active_within_days
    if days is not None:
        return (
            f"customers with a purchase (or, never having bought, a sign-up) in the {days} "
            "days before each cut-off (labels.active_within_days); lapsed ones are left out"
        )
    if "recency_days" not in frame.columns:
        if cfg.labels.allow_unlabelled:
            return (
                "the snapshot's customers with a churn label; those without one are scored, "
                "not trained on (labels.allow_unlabelled)"
            )
        return "every customer of the snapshot"
    horizon = cfg.labels.horizon_days
    lapsed = int(frame.filter(pl.col("recency_days") > horizon).height)
    return (
        f"every customer known before the cut-off; {lapsed:,} of {frame.height:,} had no "
        f"purchase in the {horizon} days before it (set labels.active_within_days to leave "
        "customers who lapsed already out of training, scoring and serving)"
    )


def stable_unit(ids: pl.Series, seed: int) -> np.ndarray:
    """A number in [0, 1) per id from a salted BLAKE2b hash of the id's text: the same id
    always gets the same number for a seed, whatever the other rows, their order or the
    library versions (polars' own hash is not stable across releases)."""
    salt = f"{seed}:".encode()
    out = np.empty(len(ids), dtype=np.float64)
    for i, value in enumerate(ids.cast(pl.String).to_list()):
        digest = hashlib.blake2b(salt + str(value).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def _hashed(frame: pl.DataFrame, fractions: dict[str, float], seed: int) -> pl.Series:
    """A split name per row from :func:`stable_unit` of its ``customer_id``: a customer's
    split never changes as the table grows, so the holdout of a later training run never
    holds rows an earlier model was trained on."""
    unit = stable_unit(frame["customer_id"], seed)
    names = list(fractions)
    edges = np.cumsum([fractions[n] for n in names])
    edges[-1] = 1.0
    idx = np.searchsorted(edges, unit, side="right")
    return pl.Series("split", np.asarray(names, dtype=object)[np.minimum(idx, len(names) - 1)])


def _transaction_label_hint(cfg: DatasetConfig, features: pl.DataFrame) -> str:
    """Why labels from transactions came out all one class, and what to set."""
    churn_rate = float(features["churned"].mean() or 0.0) if features.height else 0.0
    horizon = cfg.labels.horizon_days
    if churn_rate < 0.5:
        return (
            f" (nearly every customer bought again within labels.horizon_days ({horizon}) "
            "after the cut-off: a shorter horizon gives churned customers to learn from)"
        )
    once = ""
    if "frequency" in features.columns and features.height:
        none = float((features["frequency"] == 0).mean())
        if none >= 0.5:  # returns only: every line negative
            return (
                f" ({none:.0%} of the customers have no purchase before the cut-off, only "
                "returns (lines with a negative amount): check the sign of transactions."
                "amount, or whether the file holds refunds alone)"
            )
        single = float((features["frequency"] <= 1).mean())
        once = f"; {single:.0%} of them placed a single order before the cut-off"
    return (
        f" (almost no customer bought again within labels.horizon_days ({horizon}) after the "
        f"cut-off{once}. If transactions.customer_id names an order or a visit rather than a "
        "person (Olist's customer_id; its customer_unique_id names the person), land the lines "
        "with the person's id; otherwise a longer horizon_days)"
    )


def build_training_set(
    cfg: DatasetConfig,
    features: pl.DataFrame,
    customers: pl.DataFrame | None,
    transactions: pl.DataFrame | pl.LazyFrame | None,
    *,
    split_seed: int | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``features`` (or an earlier cut-off's) with a ``split`` column; and the protocol used.

    ``split_seed`` draws the random part of the split (default: the data set's seed); the
    repeated-holdout evaluation varies it to show how much a holdout score depends on it.
    """
    m = cfg.models
    seed = cfg.seed if split_seed is None else split_seed
    counts = features["churned"].value_counts()
    smallest = int(counts["count"].min()) if counts.height == 2 else 0
    if smallest < MIN_PER_CLASS:
        hint = (
            f" (labels.churned_positive {cfg.labels.churned_positive} names the values of "
            f"column '{cfg.labels.churned_column}' that mean churned; the values_parse check "
            "of raw_customers lists the column's values)"
            if cfg.labels.source == "columns"
            else _transaction_label_hint(cfg, features)
        )
        if transactions is not None and cfg.transactions is not None:
            stray = stray_latest_lines(transactions, cfg.labels.horizon_days)
            hint = f" ({stray})" if stray else hint  # the likelier cause
        if features.height < 2 * MIN_PER_CLASS:
            hint = (
                f" (only {features.height} customers: no setting makes enough of both; land more)"
            )
        raise ValueError(
            f"training_set needs at least {MIN_PER_CLASS} churned and {MIN_PER_CLASS} retained "
            f"customers; customer_features has {features.height} rows with class counts "
            f"{dict(zip(counts['churned'].to_list(), counts['count'].to_list(), strict=True))}"
            + hint
        )
    cutoff = label_cutoff(cfg, transactions) if transactions is not None else None
    # A label read from the customer table (or a label file) is each customer's status at
    # one date: at an earlier cut-off it would be the same row's label again, so training
    # there would train on the evaluated customers' own labels. Only labels derived from
    # transactions are known at an earlier cut-off.
    derived = cfg.labels.source == "transactions"
    if cutoff is not None and m.temporal_validation and derived:
        earlier = cutoff - dt.timedelta(days=cfg.labels.horizon_days)
        first = transactions.lazy().select(pl.col("timestamp").min()).collect().item()
        enough_history = first is not None and first.date() <= earlier - dt.timedelta(
            days=MIN_HISTORY_DAYS
        )
        if enough_history:
            train = features_at(cfg, customers, transactions, earlier)
            if train.height >= MIN_TRAIN_ROWS and train["churned"].n_unique() == 2:
                share = m.validation_fraction / (m.validation_fraction + m.holdout_fraction)
                later = features.with_columns(
                    _hashed(features, {"validation": share, "holdout": 1 - share}, seed)
                )
                out = pl.concat(
                    [train.with_columns(pl.lit("train").alias("split")), later],
                    how="diagonal_relaxed",
                )
                _enough_of_each_class(out)
                return out, {
                    "protocol": "temporal",
                    "population": population(cfg, features),
                    "description": f"train on cut-off {earlier}, validate and hold out "
                    f"(customers split {share:.0%}/{1 - share:.0%} by a stable hash of "
                    f"customer_id) on cut-off {cutoff}",
                    "train_cutoff": earlier.isoformat(),
                    "evaluation_cutoff": cutoff.isoformat(),
                }
            reason = (
                f"the earlier cut-off {earlier} has {train.height} customers, fewer than "
                f"{MIN_TRAIN_ROWS}"
                if train.height < MIN_TRAIN_ROWS
                else f"the labels at the earlier cut-off {earlier} are all one class"
            )
        else:
            reason = "not enough history before an earlier cut-off"
    elif cutoff is None:
        reason = "snapshot data"
    elif not derived:
        reason = (
            "the churn label is a column of the customer table, known at one date only: an "
            "earlier cut-off would train on the evaluated customers' own labels"
        )
    else:
        reason = "temporal validation disabled"
    train_share = 1.0 - m.validation_fraction - m.holdout_fraction
    split = _hashed(
        features,
        {"train": train_share, "validation": m.validation_fraction, "holdout": m.holdout_fraction},
        seed,
    )
    out = features.with_columns(split)
    _enough_of_each_class(out)
    return out, {
        "protocol": "hashed",
        "population": population(cfg, features),
        "description": f"split {train_share:.0%}/{m.validation_fraction:.0%}/"
        f"{m.holdout_fraction:.0%} by a stable hash of customer_id ({reason})",
        "evaluation_cutoff": cutoff.isoformat() if cutoff else None,
    }


#: Churned and retained customers each of validation and holdout needs: the champion and
#: its threshold are chosen on validation and judged on holdout.
MIN_PER_CLASS_IN_SPLIT = 3


def _enough_of_each_class(frame: pl.DataFrame) -> None:
    """Refuse a split whose validation or holdout part has fewer than
    :data:`MIN_PER_CLASS_IN_SPLIT` churned or retained customers: with one churner in
    validation the threshold was that customer's score, and with none the champion was
    picked at random and the threshold left at 0.5, deployed without a word."""
    sizes = (
        frame.filter(pl.col("split").is_in(["validation", "holdout"]))
        .group_by("split")
        .agg(pl.col("churned").sum().alias("churned"), pl.len().alias("rows"))
    )
    counts = {
        part: (int(churned), int(rows))
        for part, churned, rows in sizes.select("split", "churned", "rows").iter_rows()
    }
    counts = {p: counts.get(p, (0, 0)) for p in ("validation", "holdout")}
    short = {p: c for p, c in counts.items() if min(c[0], c[1] - c[0]) < MIN_PER_CLASS_IN_SPLIT}
    if short:
        said = ", ".join(f"{p} {n} churned of {rows}" for p, (n, rows) in counts.items())
        raise ValueError(
            f"training_set has too few customers to choose and judge a model: {said} (each "
            f"needs at least {MIN_PER_CLASS_IN_SPLIT} churned and {MIN_PER_CLASS_IN_SPLIT} "
            f"retained; {frame.height} customers in all): land more customers, or widen "
            "models.validation_fraction / models.holdout_fraction"
        )


def to_splits(training_set: pl.DataFrame) -> dict[str, Any]:
    """The training set as pandas frames by split (what the model code takes)."""
    return {
        name: training_set.filter(pl.col("split") == name).drop("split").to_pandas()
        for name in SPLITS
    }
