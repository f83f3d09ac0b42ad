"""Point-in-time features: exact values on a tiny example, no look-ahead, labels."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from churn_assets.lib.features import FeatureParams, build_customer_features, default_cutoff

CUTOFF = dt.date(2024, 3, 1)
PARAMS = FeatureParams(cutoff=CUTOFF, horizon_days=30, naive_lookback_days=90)


def tx(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "timestamp": pl.Datetime("us"),
            "amount": pl.Float64,
            "invoice_id": pl.String,
            "category": pl.String,
            "country": pl.String,
        },
        orient="row",
    ).with_columns(
        (pl.col("invoice_id").str.starts_with("C") | (pl.col("amount") < 0)).alias("is_return")
    )


BASE = [
    ("A", dt.datetime(2024, 1, 1), 100.0, "I1", "toys", "UK"),
    ("A", dt.datetime(2024, 1, 1), 50.0, "I1", "books", "UK"),  # same order, 2 lines
    ("A", dt.datetime(2024, 2, 20), 30.0, "I2", "books", "UK"),
    ("A", dt.datetime(2024, 2, 21), -30.0, "C3", "books", "UK"),
    ("B", dt.datetime(2023, 6, 1), 500.0, "I4", "toys", "FR"),
    ("C", dt.datetime(2024, 2, 28), 10.0, "I5", "toys", "DE"),
]
AFTER = [
    ("A", dt.datetime(2024, 3, 5), 70.0, "I6", "toys", "UK"),
    ("C", dt.datetime(2024, 3, 1), -5.0, "C7", "toys", "DE"),  # a return only: still churned
    ("D", dt.datetime(2024, 3, 2), 99.0, "I8", "toys", "UK"),  # first seen after the cut-off
]


def test_exact_values():
    f = build_customer_features(None, tx(BASE + AFTER), PARAMS)
    assert f["customer_id"].to_list() == ["A", "B", "C"]  # D is not known before the cut-off
    a = f.row(0, named=True)
    assert a["frequency"] == 2 and a["return_count"] == 1
    assert a["recency_days"] == pytest.approx(10.0)  # 2024-02-20 → 2024-03-01 (leap year)
    assert a["monetary_total"] == pytest.approx(150.0)
    assert a["avg_order_value"] == pytest.approx(90.0)  # (150 + 30) / 2 orders
    assert a["tenure_days"] == pytest.approx(60.0)
    assert a["return_rate"] == pytest.approx(1 / 3)
    assert a["main_country"] == "UK"
    assert a["cat_share_books"] == pytest.approx(80 / 180)
    assert a["naive_total_sales"] == pytest.approx(150.0 * 30 / 90)
    labels = dict(zip(f["customer_id"], f["churned"], strict=True))
    assert labels == {"A": 0, "B": 1, "C": 1}
    assert dict(zip(f["customer_id"], f["total_sales"], strict=True)) == {
        "A": 70.0,
        "B": 0.0,
        "C": 0.0,
    }


def test_no_look_ahead_post_cutoff_changes_only_labels():
    changed = [
        ("A", dt.datetime(2024, 3, 5), 7000.0, "I6", "garden", "US"),
        ("B", dt.datetime(2024, 3, 20), 1.0, "I9", "toys", "FR"),
        ("E", dt.datetime(2024, 6, 1), 3.0, "I10", "toys", "UK"),
    ]
    before = build_customer_features(None, tx(BASE + AFTER), PARAMS)
    after = build_customer_features(None, tx(BASE + changed), PARAMS)
    features = [c for c in before.columns if c not in ("churned", "total_sales")]
    assert before.select(features).equals(after.select(features))
    assert not before.select("churned", "total_sales").equals(
        after.select("churned", "total_sales")
    )


def test_no_look_ahead_on_generated_data(tmp_path):
    from churn_assets.lib.generator import generate

    generate(str(tmp_path), customers=400, days=200, seed=3)
    t = pl.read_parquet(tmp_path / "transactions" / "*.parquet").with_columns(
        pl.col(pl.Categorical).cast(pl.String),
        pl.col("invoice_id").str.starts_with("C").alias("is_return"),
    )
    cust = pl.read_parquet(tmp_path / "customers" / "*.parquet")
    cutoff = default_cutoff(t, 60)
    params = FeatureParams(cutoff=cutoff, horizon_days=60)
    base = build_customer_features(cust, t, params)
    cut = dt.datetime.combine(cutoff, dt.time())
    # scramble every post-cut-off event: amounts, categories, drop half of them
    late = t.filter(pl.col("timestamp") >= cut)
    scrambled = pl.concat(
        [
            t.filter(pl.col("timestamp") < cut),
            late.with_columns(
                (pl.col("amount") * 3).alias("amount"), pl.lit("x").alias("category")
            ).gather_every(2),
        ]
    )
    other = build_customer_features(cust, scrambled, params)
    features = [c for c in base.columns if c not in ("churned", "total_sales")]
    assert base.height > 300
    # rows reach the sums in another order, so compare to floating-point precision
    assert_frame_equal(
        base.select(features),
        other.select(features),
        check_exact=False,
        rel_tol=1e-12,
        abs_tol=1e-9,
    )
    assert not base["total_sales"].equals(other["total_sales"])


def test_many_lines_are_read_a_bucket_of_customers_at_a_time_into_the_same_table(
    tmp_path, monkeypatch
):
    """Above BUCKET_ROWS lines the features and labels are built per bucket of customers
    (the memory of one bucket's orders, not every customer's): the same table, exactly,
    with and without a customer table."""
    from churn_assets.lib import features
    from churn_assets.lib.generator import generate

    generate(str(tmp_path), customers=800, days=200, seed=3)
    t = pl.read_parquet(tmp_path / "transactions" / "*.parquet").with_columns(
        pl.col(pl.Categorical).cast(pl.String),
        pl.col("invoice_id").str.starts_with("C").alias("is_return"),
    )
    cust = pl.read_parquet(tmp_path / "customers" / "*.parquet")
    params = FeatureParams(cutoff=default_cutoff(t, 60), horizon_days=60)
    whole = build_customer_features(cust, t, params)
    without_table = build_customer_features(None, t, params)

    monkeypatch.setattr(features, "BUCKET_ROWS", t.height // 4)  # ~160 customers a bucket
    assert features.bucket_count(features.order_rows(t.lazy())) >= 4  # orders: ~1 a line

    assert_frame_equal(build_customer_features(cust, t.lazy(), params), whole, check_exact=True)
    assert_frame_equal(build_customer_features(None, t, params), without_table, check_exact=True)
    assert whole["churned"].n_unique() == 2 and whole["total_sales"].sum() > 0


def test_buckets_follow_the_orders_the_lines_hold_not_the_lines(monkeypatch):
    """Many lines in few orders (Online Retail: 54M lines, 2.5M orders at 100x) are one
    bucket; lines without an invoice are an order each."""
    from churn_assets.lib import features

    monkeypatch.setattr(features, "BUCKET_ROWS", 100)
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 16, 39), "1m", eager=True
    )
    lines = pl.DataFrame(
        {
            "customer_id": [f"C{i % 20}" for i in range(1_000)],
            "invoice_id": [f"INV{i % 20}" for i in range(1_000)],
            "timestamp": stamps,
        }
    )
    few = features.order_rows(lines.lazy())
    many = features.order_rows(lines.with_columns(pl.lit(None).alias("invoice_id")).lazy())

    assert features.bucket_count(few) == 1 and 18 <= few <= 22
    assert features.bucket_count(many) in (10, 11) and 950 <= many <= 1_050
    assert features.order_rows(lines.head(100).lazy()) == 100  # up to a bucket: the lines


def test_default_cutoff_leaves_a_whole_horizon():
    t = tx(BASE + AFTER)
    assert default_cutoff(t, 30) == dt.date(2024, 2, 5)  # last day 2024-03-05, leap year


def test_order_mixing_a_purchase_and_a_return():
    rows = [
        ("X", dt.datetime(2024, 2, 1), 30.0, "I1", "toys", "UK"),
        ("X", dt.datetime(2024, 2, 1), -5.0, "I1", "toys", "UK"),
        ("X", dt.datetime(2023, 11, 1), -8.0, "C0", "toys", "UK"),
        ("X", dt.datetime(2024, 2, 11), 10.0, "I2", "toys", "UK"),
    ]
    x = build_customer_features(None, tx(rows), PARAMS).row(0, named=True)
    assert x["frequency"] == 2 and x["return_count"] == 2
    assert x["return_amount"] == pytest.approx(13.0)
    assert x["avg_order_value"] == pytest.approx(20.0)  # (30 + 10) / 2 purchase orders
    assert x["days_between_orders"] == pytest.approx(10.0)  # between purchases only
    assert x["monetary_total"] == pytest.approx(27.0)


def test_every_behaviour_column_is_a_name_configs_may_not_take(tmp_path):
    """The config's list of reserved names (``datasets.BEHAVIOUR_COLUMNS``, kept free of the
    feature code's imports) covers every column a feature build adds to the attributes."""
    from churn_assets.lib.datasets import BEHAVIOUR_COLUMNS, BEHAVIOUR_PREFIXES, PLATFORM_COLUMNS
    from churn_assets.lib.generator import generate

    generate(str(tmp_path), customers=200, days=200, seed=5)
    t = pl.read_parquet(tmp_path / "transactions" / "*.parquet").with_columns(
        pl.col(pl.Categorical).cast(pl.String),
        pl.col("invoice_id").str.starts_with("C").alias("is_return"),
    )
    if "country" not in t.columns:
        t = t.with_columns(pl.lit("UK").alias("country"))
    cust = pl.read_parquet(tmp_path / "customers" / "*.parquet")
    built = build_customer_features(cust, t, FeatureParams(cutoff=default_cutoff(t, 60)))
    added = [c for c in built.columns if c not in cust.columns]
    assert {"recency_days", "main_country", "sales_30d"} <= set(added)
    unreserved = [
        c
        for c in added
        if c not in PLATFORM_COLUMNS | BEHAVIOUR_COLUMNS and not c.startswith(BEHAVIOUR_PREFIXES)
    ]
    assert unreserved == []


def test_a_history_shorter_than_the_horizon_names_the_horizon_to_set():
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import label_cutoff

    cfg = load_dataset_config("synthetic")  # transactions, 90-day horizon
    t = tx(BASE + AFTER).filter(pl.col("timestamp") >= dt.datetime(2024, 1, 1))  # 65 days
    with pytest.raises(ValueError, match="no purchase history before the label cut-off") as e:
        label_cutoff(cfg, t)
    assert "span 65 day(s) (2024-01-01 to 2024-03-05)" in str(e.value)
    assert "labels.horizon_days to at most 32" in str(e.value)
    short = cfg.model_copy(update={"labels": cfg.labels.model_copy(update={"horizon_days": 30})})
    assert label_cutoff(short, t) == dt.date(2024, 2, 5)
    early = cfg.model_copy(
        update={"labels": cfg.labels.model_copy(update={"cutoff": dt.date(2023, 12, 1)})}
    )
    with pytest.raises(ValueError, match="labels.cutoff is 2023-12-01; set labels.cutoff after"):
        label_cutoff(early, t)


def _event(cust: str, day: float, page: str = "NextSong") -> dict:
    """One line of an event log (counted as 1), ``day`` days after 2024-01-01."""
    return {
        "customer_id": cust,
        "timestamp": dt.datetime(2024, 1, 1) + dt.timedelta(days=day),
        "amount": 1.0,
        "invoice_id": None,
        "category": page,
        "country": None,
        "is_return": False,
    }


def test_exit_events_label_a_cancellation_in_the_horizon_and_drop_those_gone_before():
    """An event log (Sparkify's 'Cancellation Confirmation'): a customer who cancels within
    the horizon churned though active before cancelling; one who cancelled before the
    cut-off is left out (nothing to predict); without exit events both count as before."""
    cut = dt.date(2024, 3, 1)

    ev = _event

    lines = pl.DataFrame(
        [ev("stays", d) for d in (5, 40, 70, 90)]
        + [ev("cancels_later", d) for d in (5, 40, 65)]
        + [ev("cancels_later", 70, "Cancellation Confirmation")]
        + [ev("gone", d) for d in (5, 50)]
        + [ev("gone", 55, "Cancellation Confirmation")]
    )
    plain = FeatureParams(cutoff=cut, horizon_days=30, categories=())
    exits = FeatureParams(
        cutoff=cut, horizon_days=30, categories=(), exit_events=("Cancellation Confirmation",)
    )

    before = build_customer_features(None, lines, plain)
    after = build_customer_features(None, lines, exits)

    assert dict(before.select("customer_id", "churned").iter_rows()) == {
        "cancels_later": 0,
        "gone": 1,
        "stays": 0,
    }
    assert dict(after.select("customer_id", "churned").iter_rows()) == {
        "cancels_later": 1,
        "stays": 0,
    }
    assert after.columns == before.columns


def test_a_customer_who_comes_back_after_an_exit_event_counts_again():
    """Activity more than a day after a customer's last exit event is a return: before the
    cut-off the customer stays in the table, in the horizon the customer is retained. Events
    logged within the day after a cancellation (a last page view) are not a return."""
    cut = dt.date(2024, 3, 1)
    exit_page = "Cancellation Confirmation"

    ev = _event

    lines = pl.DataFrame(
        # left in January, back in February: in the table; active in the horizon
        [ev("returned", d) for d in (5, 10)]
        + [ev("returned", 20, exit_page)]
        + [ev("returned", d) for d in (45, 70)]
        # a page view an hour after cancelling: still gone
        + [ev("gone", d) for d in (5, 50)]
        + [ev("gone", 55, exit_page), ev("gone", 55 + 1 / 24)]
        # left twice, the second time for good
        + [ev("twice", 5, exit_page), ev("twice", 30), ev("twice", 50, exit_page)]
        # cancels in the horizon, resubscribes ten days later: retained
        + [ev("back_in_horizon", d) for d in (5, 40, 65, 75)]
        + [ev("back_in_horizon", 66, exit_page)]
        # cancels in the horizon with a last event the same hour: churned
        + [ev("cancels", d) for d in (5, 40, 65)]
        + [ev("cancels", 70, exit_page), ev("cancels", 70 + 1 / 48)]
    )
    params = FeatureParams(cutoff=cut, horizon_days=30, categories=(), exit_events=(exit_page,))

    table = build_customer_features(None, lines, params)

    assert dict(table.select("customer_id", "churned").iter_rows()) == {
        "back_in_horizon": 0,
        "cancels": 1,
        "returned": 0,
    }


def test_date_attributes_become_the_days_from_them_to_the_cutoff():
    """A last login or a contract's end is a number a model can take: the days from the
    date to the cut-off (negative after it); a missing date stays missing."""
    customers = pl.DataFrame(
        {
            "customer_id": ["A", "B", "C"],
            "plan": ["x", "y", "x"],
            "last_login": [dt.date(2024, 2, 20), None, dt.date(2024, 2, 29)],
            "contract_end": [dt.datetime(2024, 3, 11, 12), dt.datetime(2023, 12, 2), None],
        }
    )
    f = build_customer_features(customers, tx(BASE + AFTER), PARAMS)
    assert "last_login" not in f.columns and "contract_end" not in f.columns
    assert f["days_since_last_login"].to_list() == [10.0, None, 1.0]
    assert f["days_since_contract_end"].to_list() == [-10.5, 90.0, None]
    snapshot = build_customer_features(customers, None, PARAMS)
    assert snapshot["days_since_last_login"].to_list() == [10.0, None, 1.0]


def test_a_snapshot_counts_its_dates_to_its_own_latest_date_not_to_today():
    """The same export gives the same features on any day: "now" is labels.cutoff when
    set, else the day after its latest sign-up (a contract's end after the export, even if
    before today, does not move it), else the day after its latest date not in the future."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import snapshot_as_of

    cfg = load_dataset_config("telco")
    customers = pl.DataFrame(
        {
            "customer_id": ["A", "B"],
            "signup_date": [dt.date(2021, 5, 1), dt.date(2024, 6, 29)],
            "last_login": [dt.datetime(2024, 6, 29, 23), None],
            "contract_end": [dt.date(2999, 1, 1), dt.date(2025, 1, 1)],  # after the export
        }
    )
    assert snapshot_as_of(cfg, customers) == dt.date(2024, 6, 30)
    no_signup = customers.drop("signup_date")
    assert snapshot_as_of(cfg, no_signup) == dt.date(2025, 1, 2)  # 2999 is in the future
    fixed = cfg.model_copy(
        update={"labels": cfg.labels.model_copy(update={"cutoff": dt.date(2024, 7, 15)})}
    )
    assert snapshot_as_of(fixed, customers) == dt.date(2024, 7, 15)
    assert snapshot_as_of(cfg, customers.select("customer_id")) == dt.date.today()


def test_labels_of_returns_alone_say_so():
    """A file of refunds only (every amount negative) was said to hold customers of "a
    single order" who might be orders rather than people; it holds no purchase at all."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import build_training_set

    features = pl.DataFrame(
        {"customer_id": [str(i) for i in range(50)], "frequency": [0.0] * 50, "churned": [1] * 50}
    )
    with pytest.raises(ValueError, match="needs at least 10 churned") as e:
        build_training_set(load_dataset_config("synthetic"), features, None, None)
    assert "100% of the customers have no purchase before the cut-off, only returns" in str(e.value)


@pytest.mark.parametrize(
    ("churned", "says"),
    [
        (1, "If transactions.customer_id names an order or a visit rather than a person"),
        (0, "a shorter horizon gives churned customers to learn from"),
    ],
)
def test_labels_all_of_one_class_say_what_to_change(churned, says):
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import build_training_set

    features = pl.DataFrame(
        {
            "customer_id": [str(i) for i in range(50)],
            "frequency": [1.0] * 50,
            "churned": [churned] * 50,
        }
    )
    with pytest.raises(ValueError, match="needs at least 10 churned") as e:
        build_training_set(load_dataset_config("synthetic"), features, None, None)
    assert says in str(e.value)
    assert ("100% of them placed a single order" in str(e.value)) == bool(churned)


def test_categories_spelled_alike_share_one_column():
    """ "Home & Garden", "home-garden" and "HOME_GARDEN" give the same column name: the
    feature table failed ("column with name 'cat_share_home_garden' has more than one
    occurrence") for as long as the three were among the top categories. They now share
    one column, the sum of their spend."""
    import dataclasses

    spelled = [
        ("A", dt.datetime(2024, 1, 1), 10.0, "I1", "Home & Garden", "UK"),
        ("A", dt.datetime(2024, 1, 2), 30.0, "I2", "home-garden", "UK"),
        ("A", dt.datetime(2024, 1, 3), 40.0, "I3", "HOME_GARDEN", "UK"),
        ("A", dt.datetime(2024, 1, 4), 20.0, "I4", "toys", "UK"),
    ]
    params = dataclasses.replace(
        PARAMS, categories=("Home & Garden", "home-garden", "HOME_GARDEN", "toys")
    )
    f = build_customer_features(None, tx(spelled), params)
    shares = [c for c in f.columns if c.startswith("cat_share_")]
    assert shares == ["cat_share_home_garden", "cat_share_toys"]
    assert f["cat_share_home_garden"].item() == pytest.approx(0.8)


def test_a_stray_latest_line_is_named_where_the_labels_come_out_of_one_class():
    """One line with a typo'd year (2025 in 2024 data) moved every cut-off by six months:
    299 of 300 customers churned and training_set blamed the horizon. The stray tail is
    found (lines after a gap longer than the horizon among the latest ones) and named."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import build_training_set, stray_latest_lines

    start = dt.datetime(2024, 1, 1)
    stamps = [start + dt.timedelta(hours=3 * i) for i in range(2920)]  # 2024, every 3 h
    tx = pl.DataFrame(
        {
            "timestamp": [*stamps, dt.datetime(2025, 7, 6, 4, 0)],
            "_source_file": ["a.csv"] * len(stamps) + ["late.csv"],
        }
    )
    said = stray_latest_lines(tx.lazy(), 90)
    assert said is not None
    assert "the latest 1 line(s) (in late.csv), from 2025-07-06 to 2025-07-06" in said
    assert "lie 187 days after the rest of the history, which ends 2024-12-30" in said
    assert stray_latest_lines(tx.head(len(stamps)), 90) is None  # no stray
    paused = tx.with_columns(  # a 60-day pause before the last 100 lines: within the horizon
        pl.when(pl.int_range(pl.len()) >= len(stamps) - 100)
        .then(pl.col("timestamp") + dt.timedelta(days=60))
        .otherwise(pl.col("timestamp"))
    ).head(len(stamps))
    assert stray_latest_lines(paused, 90) is None
    features = pl.DataFrame(
        {"customer_id": [str(i) for i in range(50)], "frequency": [2.0] * 50, "churned": [1] * 50}
    )
    with pytest.raises(ValueError, match="needs at least 10 churned") as e:
        build_training_set(load_dataset_config("synthetic"), features, None, tx)
    assert "lie 187 days after the rest of the history" in str(e.value)


def test_too_few_of_a_class_in_validation_or_holdout_is_refused_saying_so():
    """60 customers with 14 churned left one churner in validation: its score became the
    threshold and the model was deployed as usual. A split part with fewer than 3 churned
    or retained customers is refused, counting each part; 11 customers in all are said to
    be too few rather than blamed on the horizon."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import build_training_set

    cfg = load_dataset_config("telco")  # a snapshot: split by a hash of the id
    n = 60

    def features(every: tuple[int, ...]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "customer_id": [f"C{i:04d}" for i in range(n)],
                "tenure": [1.0] * n,
                "churned": [int(i % 5 in every) for i in range(n)],
            }
        )

    frame, _ = build_training_set(cfg, features((0, 1)), None, None)  # 24 churned: enough
    parts = dict(frame.group_by("split").agg(pl.col("churned").sum()).iter_rows())
    assert min(parts["validation"], parts["holdout"]) >= 3
    with pytest.raises(ValueError, match="too few customers to choose and judge a model") as e:
        build_training_set(cfg, features((0,)), None, None)  # 12 churned
    assert "validation 3 churned of 14, holdout 2 churned of 13" in str(e.value)
    tiny = (
        features((0,))
        .head(11)
        .with_columns(pl.Series("churned", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]))
    )
    with pytest.raises(ValueError, match="only 11 customers: no setting makes enough"):
        build_training_set(cfg, tiny, None, None)
