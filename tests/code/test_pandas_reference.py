"""The pandas benchmark baseline computes the same features and labels as the polars code.

``benchmarks/pandas_features.py`` is the reference the feature benchmark compares
``churn_assets.lib.features.build_customer_features`` against; these tests prove both give
the same customers and the same values (counts exactly, floats within 1e-9) so the benchmark
compares like with like.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest

from benchmarks.pandas_features import pandas_customer_features
from churn_assets.lib.features import FeatureParams, build_customer_features
from churn_assets.lib.ingest import TRANSACTION_SCHEMA

START = dt.datetime(2024, 1, 1)
CUTOFF = dt.date(2024, 12, 1)
HORIZON = 90
CATEGORIES = (
    "Electronics", "Fashion", "Home & Garden", "Beauty", "Sports", "Toys", "Books",
    "Grocery", "Pets", "Music",
)  # fmt: skip
COUNTRIES = ("GB", "DE", "FR", "NL", "ES", "US")
COUNT_COLUMNS = {
    "frequency", "return_count", "active_days", "n_categories", "n_countries", "churned",
    "orders_30d", "orders_90d", "orders_180d", "orders_365d", "orders_60d",
}  # fmt: skip
RTOL = ATOL = 1e-9


def _transactions(seed: int = 7, customers: int = 300) -> pl.DataFrame:
    """A few thousand lines: multi-line orders, returns, null invoice/category/country."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    invoice = 0
    horizon_end = dt.datetime.combine(CUTOFF, dt.time()) + dt.timedelta(days=HORIZON)
    span = int((horizon_end - START).total_seconds())
    for c in range(customers):
        cid = f"C{c:05d}"
        for _ in range(rng.poisson(5) + 1):  # orders
            ts = START + dt.timedelta(seconds=int(rng.integers(0, span)))
            is_return = rng.random() < 0.08
            no_invoice = rng.random() < 0.1
            invoice += 1
            inv = None if no_invoice else ("C" if is_return else "") + f"{invoice:08d}"
            home = COUNTRIES[c % len(COUNTRIES)]
            for _ in range(rng.integers(1, 4)):  # lines
                amount = round(float(rng.lognormal(3.0, 1.0)), 2)
                cat = CATEGORIES[min(int(rng.exponential(3.0)), len(CATEGORIES) - 1)]
                country = home if rng.random() < 0.85 else COUNTRIES[rng.integers(0, 6)]
                rows.append(
                    {
                        "customer_id": cid,
                        "timestamp": ts,
                        "amount": -amount if is_return else amount,
                        "invoice_id": inv,
                        "category": None if rng.random() < 0.05 else cat,
                        "country": None if rng.random() < 0.04 else country,
                        "is_return": is_return,
                    }
                )
    cutoff_ts = dt.datetime.combine(CUTOFF, dt.time())

    def add(cid, ts, amount, inv, cat="Books", country="GB", is_return=None):
        is_return = amount < 0 if is_return is None else is_return
        rows.append(
            {
                "customer_id": cid,
                "timestamp": ts,
                "amount": amount,
                "invoice_id": inv,
                "category": cat,
                "country": country,
                "is_return": is_return,
            }
        )

    # Only returns before the cut-off (frequency 0, recency = first order age).
    add("R00001", cutoff_ts - dt.timedelta(days=40), -12.5, "CR1")
    add("R00001", cutoff_ts - dt.timedelta(days=10), -3.0, "CR2")
    # Orders exactly on the window boundaries (age == 30, 90, 180 days) and at the cut-off.
    for days in (30, 90, 180, 365):
        add("B00001", cutoff_ts - dt.timedelta(days=days), 10.0 + days, f"B{days}")
    add("B00001", cutoff_ts, 99.0, "B-label")  # first label-window event (included)
    add("B00002", cutoff_ts - dt.timedelta(seconds=1), 5.0, "B2")
    add("B00002", horizon_end, 50.0, "B2-late")  # just after the horizon (excluded)
    add("B00002", horizon_end - dt.timedelta(seconds=1), -5.0, "CB2")  # return only in horizon
    # Two countries with equal absolute spend: ties are broken by country name.
    add("T00001", cutoff_ts - dt.timedelta(days=5), 20.0, "T1", country="NL")
    add("T00001", cutoff_ts - dt.timedelta(days=6), 20.0, "T2", country="DE")
    # No category and no country at all; lines without an invoice sharing one timestamp.
    ts = cutoff_ts - dt.timedelta(days=3, hours=2)
    add("N00001", ts, 7.0, None, cat=None, country=None)
    add("N00001", ts, 8.0, None, cat=None, country=None)
    add("N00001", ts - dt.timedelta(days=20), 1.0, None, cat=None, country=None)
    # A customer that only appears after the cut-off is not in the feature table.
    add("L00001", cutoff_ts + dt.timedelta(days=3), 40.0, "L1")
    return pl.DataFrame(rows, schema=TRANSACTION_SCHEMA).sample(
        fraction=1.0, shuffle=True, seed=seed
    )


@pytest.fixture(scope="module")
def transactions() -> pl.DataFrame:
    return _transactions()


def assert_same_features(expected: pl.DataFrame, actual: pd.DataFrame) -> None:
    """Same customers in the same order, same columns, counts exact, floats within 1e-9."""
    assert list(actual.columns) == expected.columns
    assert actual["customer_id"].tolist() == expected["customer_id"].to_list()
    for col in expected.columns:
        want = expected[col]
        got = actual[col]
        if want.dtype == pl.String:
            left = [None if pd.isna(v) else str(v) for v in got]
            assert left == want.to_list(), col
        elif col in COUNT_COLUMNS:
            np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(), err_msg=col)
        else:
            np.testing.assert_allclose(
                got.to_numpy(dtype="float64"),
                want.cast(pl.Float64).to_numpy(),
                rtol=RTOL,
                atol=ATOL,
                err_msg=col,
            )


def test_generated_frame_covers_edge_cases(transactions: pl.DataFrame) -> None:
    assert 1_500 <= transactions.height <= 10_000
    assert transactions["is_return"].sum() > 50
    for col in ("invoice_id", "category", "country"):
        assert transactions[col].null_count() > 0, col
    assert transactions["category"].n_unique() > 8
    assert transactions["country"].n_unique() > 3


@pytest.mark.parametrize(
    "params",
    [
        FeatureParams(cutoff=CUTOFF),
        FeatureParams(cutoff=CUTOFF, horizon_days=60, naive_lookback_days=180),
        FeatureParams(
            cutoff=CUTOFF,
            windows=(60, 90, 180),
            with_labels=False,
            categories=("Books", "Home & Garden", "Nothing Like This"),
        ),
        FeatureParams(cutoff=dt.date(2024, 6, 15), horizon_days=30),
    ],
    ids=["default", "short-horizon", "explicit-categories-no-labels", "early-cutoff"],
)
def test_pandas_matches_polars(transactions: pl.DataFrame, params: FeatureParams) -> None:
    expected = build_customer_features(None, transactions.lazy(), params)
    actual = pandas_customer_features(transactions.to_pandas(), params)
    assert_same_features(expected, actual)
    if params.cutoff == CUTOFF:
        assert "R00001" in expected["customer_id"].to_list()
        assert "L00001" not in expected["customer_id"].to_list()


def test_comparison_covers_the_interesting_columns(transactions: pl.DataFrame) -> None:
    """The default build has category shares, main country, trends and both labels."""
    expected = build_customer_features(None, transactions, FeatureParams(cutoff=CUTOFF))
    cols = set(expected.columns)
    assert {"main_country", "sales_trend_90d", "orders_trend_90d", "naive_total_sales"} <= cols
    assert {"churned", "total_sales", "n_categories"} <= cols
    assert sum(c.startswith("cat_share_") for c in cols) == 8
    assert 0 < expected["churned"].sum() < expected.height
    row = expected.filter(pl.col("customer_id") == "T00001").row(0, named=True)
    assert row["main_country"] == "DE"
    row = expected.filter(pl.col("customer_id") == "N00001").row(0, named=True)
    assert row["main_country"] is None and row["n_countries"] == 0.0
    assert row["frequency"] == 2.0  # two lines without invoice at one timestamp: one order


def test_fallback_generator_data_agrees(tmp_path) -> None:
    """The benchmark's stand-in generator writes the standard schema; both builds agree on it."""
    from benchmarks.features import _fallback_generate

    rows = _fallback_generate(tmp_path, customers=400, days=540, seed=3)
    frame = pl.read_parquet(sorted(tmp_path.glob("*.parquet")))
    assert frame.height == rows > 5_000
    assert frame.schema == pl.Schema(
        {
            "customer_id": pl.String,
            "timestamp": pl.Datetime("us"),
            "amount": pl.Float64,
            "invoice_id": pl.String,
            "category": pl.String,
            "country": pl.String,
            "is_return": pl.Boolean,
        }
    )
    params = FeatureParams(cutoff=dt.date(2025, 3, 1))
    expected = build_customer_features(None, frame.lazy(), params)
    assert_same_features(expected, pandas_customer_features(frame.to_pandas(), params))


def test_benchmark_run_smoke() -> None:
    """``run`` on a tiny data set: both workers run, results match, the dict is complete."""
    from benchmarks.features import TARGETS, run

    result = run(transactions=20_000, seed=5)
    assert 15_000 <= result["transactions"] <= 25_000
    assert result["results_match"] is True
    assert result["targets"] == TARGETS
    for impl in ("polars", "pandas"):
        assert result[impl]["seconds"] > 0
        assert 0 < result[impl]["peak_rss_mb"] < 4_096
    assert result["speedup"] == pytest.approx(
        result["pandas"]["seconds"] / result["polars"]["seconds"], rel=0.02
    )
    assert isinstance(result["meets_targets"], bool)
