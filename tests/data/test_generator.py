"""Tests for the synthetic churn data generator (churn_assets.lib.generator)."""

from __future__ import annotations

import ast
import datetime as dt
import filecmp
import uuid
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn_assets.lib import generator as gen
from churn_assets.lib.generator import GenerationSummary, generate

START = dt.date(2024, 1, 1)
DAYS = 540
END = START + dt.timedelta(days=DAYS)
SEED = 11
N_CUSTOMERS = 5_000


def _ts(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationSummary, Path]:
    """~5k customers x 540 days; chunk size not aligned to the internal RNG blocks."""
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate(str(root), customers=N_CUSTOMERS, seed=SEED, chunk_customers=1_700)
    return summary, root


@pytest.fixture(scope="module")
def customers(sample: tuple[GenerationSummary, Path]) -> pl.DataFrame:
    return pl.read_parquet(sample[1] / "customers" / "batch-0000.parquet")


@pytest.fixture(scope="module")
def transactions(sample: tuple[GenerationSummary, Path]) -> pl.DataFrame:
    return pl.read_parquet(sample[1] / "transactions" / "batch-0000-part-*.parquet")


@pytest.fixture(scope="module")
def drift_sample(sample: tuple[GenerationSummary, Path]) -> GenerationSummary:
    """A drifted batch written beside the normal one (same seed, same customer ids)."""
    return generate(
        str(sample[1]),
        customers=N_CUSTOMERS,
        seed=SEED,
        chunk_customers=1_700,
        drift=True,
        batch_name="batch-0001-drift",
    )


def _inactive_last_90(customers: pl.DataFrame, transactions: pl.DataFrame) -> pl.DataFrame:
    recent = (
        transactions.filter(pl.col("timestamp") >= _ts(END - dt.timedelta(days=90)))
        .select("customer_id")
        .unique()
    )
    return customers.filter(pl.col("signup_date") < END - dt.timedelta(days=180)).with_columns(
        inactive=~pl.col("customer_id").is_in(recent["customer_id"].implode())
    )


def _assert_schema(df: pl.DataFrame, expected: dict[str, object]) -> None:
    assert df.columns == list(expected)
    for name, dtype in expected.items():
        assert df.schema[name] == dtype, (name, df.schema[name])


# --------------------------------------------------------------------------- layout / schema
def test_summary_and_files(sample: tuple[GenerationSummary, Path], transactions) -> None:
    summary, root = sample
    assert summary.customers == N_CUSTOMERS
    assert summary.transactions == transactions.height
    assert (summary.start, summary.end, summary.seed, summary.drifted) == (START, END, SEED, False)
    assert summary.files == [
        "customers/batch-0000.parquet",
        "transactions/batch-0000-part-00000.parquet",
        "transactions/batch-0000-part-00001.parquet",
        "transactions/batch-0000-part-00002.parquet",
    ]
    for rel in summary.files:
        assert (root / rel).is_file()
    # ~50 transactions per customer over 540 days.
    assert 40 <= summary.transactions / N_CUSTOMERS <= 60


def test_customer_schema_and_values(customers: pl.DataFrame) -> None:
    _assert_schema(
        customers,
        {
            "customer_id": pl.String,
            "signup_date": pl.Date,
            "plan": pl.Categorical,
            "payment_method": pl.Categorical,
            "region": pl.Categorical,
            "channel": pl.Categorical,
            "age": pl.Int64,
            "support_tickets": pl.Int64,
            "is_business": pl.Boolean,
            "monthly_fee": pl.Float64,
        },
    )
    assert customers.height == N_CUSTOMERS
    assert customers["customer_id"].n_unique() == N_CUSTOMERS
    assert customers["customer_id"][0] == "C0000001"
    assert customers["customer_id"].str.contains(r"^C\d{7}$").all()
    assert set(customers["plan"].cast(pl.String)) == {"monthly", "annual", "two_year"}
    assert customers["payment_method"].n_unique() == 4
    assert 5 <= customers["region"].n_unique() <= 7
    assert set(customers["channel"].cast(pl.String)) == {"web", "store", "partner"}
    assert customers["age"].min() >= 18 and customers["age"].max() <= 90
    assert customers["support_tickets"].min() >= 0
    assert customers["support_tickets"].max() >= 5
    assert 0.05 < customers["is_business"].mean() < 0.3
    assert customers["monthly_fee"].min() > 0
    before = (customers["signup_date"] < START).mean()
    during = ((customers["signup_date"] >= START) & (customers["signup_date"] < END)).mean()
    assert 0.5 < before < 0.9 and 0.1 < during < 0.5
    assert before + during == pytest.approx(1.0)


def test_transaction_schema_and_values(transactions: pl.DataFrame, customers) -> None:
    _assert_schema(
        transactions,
        {
            "invoice_id": pl.String,
            "customer_id": pl.String,
            "timestamp": pl.Datetime("us"),
            "amount": pl.Float64,
            "category": pl.Categorical,
            "country": pl.Categorical,
        },
    )
    assert transactions["invoice_id"].n_unique() == transactions.height
    assert transactions["customer_id"].is_in(customers["customer_id"].implode()).all()
    ts = transactions["timestamp"]
    assert ts.min() >= _ts(START) and ts.max() < _ts(END)
    assert (ts.dt.microsecond() == 0).all()  # second resolution
    returns = transactions["amount"] < 0
    assert transactions["invoice_id"].str.starts_with("C").equals(returns, check_names=False)
    assert transactions["invoice_id"].str.contains(r"^[CI]\d{10}$").all()
    assert 0.03 <= returns.mean() <= 0.05
    assert (transactions["amount"] != 0).all()
    assert transactions["category"].n_unique() == 8
    assert "gift_cards" not in set(transactions["category"].cast(pl.String))
    assert transactions["country"].n_unique() == 10
    # Mostly each customer's home country: the modal country covers most of their orders.
    modal_share = (
        transactions.group_by("customer_id", "country")
        .len()
        .group_by("customer_id")
        .agg(pl.col("len").max() / pl.col("len").sum())
    )
    assert modal_share["len"].mean() > 0.85


def test_part_files_sorted_by_time(sample: tuple[GenerationSummary, Path]) -> None:
    part = pl.read_parquet(sample[1] / sample[0].files[1])
    assert part["timestamp"].is_sorted()


# --------------------------------------------------------------------------- determinism
def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    kwargs = {"customers": 1_200, "days": 120, "seed": 5, "chunk_customers": 500}
    a = generate(str(tmp_path / "a"), **kwargs)
    b = generate(str(tmp_path / "b"), **kwargs)
    assert a == b
    for rel in a.files:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
    c = generate(str(tmp_path / "c"), **{**kwargs, "seed": 6})
    assert not filecmp.cmp(tmp_path / "a" / a.files[0], tmp_path / "c" / c.files[0], shallow=False)


def test_chunk_size_only_changes_partitioning(tmp_path: Path) -> None:
    kwargs = {"customers": 2_100, "days": 90, "seed": 9}
    small = generate(str(tmp_path / "s"), chunk_customers=333, **kwargs)
    big = generate(str(tmp_path / "b"), chunk_customers=5_000, **kwargs)
    assert len(small.files) == 1 + 7 and len(big.files) == 1 + 1
    assert small.transactions == big.transactions
    read = pl.read_parquet
    t_small = read(tmp_path / "s" / "transactions" / "*.parquet").sort("invoice_id")
    t_big = read(tmp_path / "b" / "transactions" / "*.parquet").sort("invoice_id")
    assert t_small.equals(t_big)
    assert read(tmp_path / "s" / small.files[0]).equals(read(tmp_path / "b" / big.files[0]))


# --------------------------------------------------------------------------- realism
def test_no_purchases_before_signup(transactions: pl.DataFrame, customers) -> None:
    joined = transactions.join(customers.select("customer_id", "signup_date"), on="customer_id")
    assert (joined["timestamp"].dt.date() >= joined["signup_date"]).all()
    late = customers.filter(pl.col("signup_date") > START + dt.timedelta(days=200))
    first = joined.group_by("customer_id").agg(pl.col("timestamp").min().dt.date())
    late_first = first.join(late, on="customer_id")
    assert late_first.height > 100  # late signups do buy, just not before signing up


def test_monthly_plan_stops_purchasing_more_than_two_year(transactions, customers) -> None:
    df = _inactive_last_90(customers, transactions)
    rates = df.group_by("plan").agg(pl.col("inactive").mean())
    rate = dict(zip(rates["plan"].cast(pl.String), rates["inactive"], strict=True))
    assert rate["monthly"] > 2 * rate["two_year"]
    assert rate["monthly"] > rate["annual"] > rate["two_year"]


def test_other_churn_drivers(transactions: pl.DataFrame, customers) -> None:
    df = _inactive_last_90(customers, transactions)

    def inactive(expr: pl.Expr) -> float:
        return df.filter(expr)["inactive"].mean()

    assert inactive(pl.col("support_tickets") >= 4) > inactive(pl.col("support_tickets") == 0) + 0.1
    assert inactive(pl.col("age") < 30) > inactive(pl.col("age") >= 40) + 0.05
    pm = pl.col("payment_method")
    assert inactive(pm == "electronic_check") > inactive(pm == "bank_transfer") + 0.05


def test_activity_fades_before_latent_churn_and_stops_after() -> None:
    """Uses the internal simulation to see the latent churn dates."""
    before_30 = before_60_90 = after = 0
    for blk in gen._blocks(SEED, 3_000, DAYS, START, drift=False, key=0):
        churn = blk.cust["churn_day"][blk.tx["cust"] - blk.lo]
        t = blk.tx["secs"] / 86_400
        mask = np.isfinite(churn) & (churn > 120)
        gap = churn[mask] - t[mask]
        before_30 += int(((gap > 0) & (gap <= 30)).sum())
        before_60_90 += int(((gap > 60) & (gap <= 90)).sum())
        after += int((np.floor(t[mask]) > np.floor(churn[mask])).sum())
        assert 0.1 < np.isfinite(blk.cust["churn_day"]).mean() < 0.7
    assert after == 0
    assert before_60_90 > 2.5 * before_30  # same window length, much less activity near churn


def test_spend_is_heavy_tailed(transactions: pl.DataFrame) -> None:
    spend = transactions.group_by("customer_id").agg(pl.col("amount").sum())["amount"]
    top = spend.sort(descending=True).head(N_CUSTOMERS // 100).sum()
    assert top / spend.sum() >= 0.10
    orders = transactions.filter(pl.col("amount") > 0)["amount"]
    assert orders.mean() > 1.3 * orders.median()  # right-skewed order values


def test_weekly_and_yearly_seasonality(transactions: pl.DataFrame) -> None:
    per_day = transactions.group_by(pl.col("timestamp").dt.date().alias("day")).len()
    monthly = (
        per_day.group_by(pl.col("day").dt.month().alias("month"))
        .agg(pl.col("len").mean())
        .sort("month")
    )
    december = monthly.filter(pl.col("month") == 12)["len"].item()
    assert december > 1.3 * monthly["len"].mean()
    assert december == monthly["len"].max()
    weekday = per_day.group_by(pl.col("day").dt.weekday().alias("wd")).agg(pl.col("len").mean())
    by_wd = dict(zip(weekday["wd"], weekday["len"], strict=True))
    assert by_wd[6] > 1.15 * by_wd[2]  # Saturday busier than Tuesday


# --------------------------------------------------------------------------- drift
def test_drift_batch_is_shifted_and_appendable(
    sample: tuple[GenerationSummary, Path], drift_sample: GenerationSummary, customers, transactions
) -> None:
    root = sample[1]
    assert drift_sample.drifted
    assert drift_sample.end == END and drift_sample.start == END - dt.timedelta(days=60)
    assert drift_sample.files[0] == "customers/batch-0001-drift.parquet"
    assert all("batch-0001-drift" in f for f in drift_sample.files)

    d_cust = pl.read_parquet(root / drift_sample.files[0])
    d_tx = pl.read_parquet(root / "transactions" / "batch-0001-drift-part-*.parquet")
    _assert_schema(d_cust, dict(customers.schema))
    _assert_schema(d_tx, dict(transactions.schema))
    assert d_cust.height == drift_sample.customers == N_CUSTOMERS // 4
    assert d_tx.height == drift_sample.transactions > 0

    # A new cohort: ids that never collide with the base ids, signed up in the last 60 days.
    assert d_cust["customer_id"].str.contains(r"^C\d{13}$").all()
    all_customers = pl.read_parquet(root / "customers" / "*.parquet")
    assert all_customers["customer_id"].is_unique().all()  # raw_customers: one row per id
    assert d_cust["signup_date"].min() >= END - dt.timedelta(days=60)
    # Recent transactions of existing (base) customers and of the new cohort.
    assert d_tx["customer_id"].is_in(all_customers["customer_id"].implode()).all()
    is_base = d_tx["customer_id"].is_in(customers["customer_id"].implode())
    assert 0.5 < is_base.mean() < 0.95
    assert d_tx["timestamp"].min() >= _ts(END - dt.timedelta(days=60))
    assert d_tx["timestamp"].max() < _ts(END)
    joined = d_tx.join(all_customers.select("customer_id", "signup_date"), on="customer_id")
    assert (joined["timestamp"].dt.date() >= joined["signup_date"]).all()
    # Invoice ids do not collide with the normal batch.
    assert d_tx["invoice_id"].str.contains(r"^[CI]\d{15}$").all()
    assert d_tx["invoice_id"].is_unique().all()

    # Visible shifts.
    monthly_share = (pl.col("plan") == "monthly").mean()
    assert d_cust.select(monthly_share).item() > customers.select(monthly_share).item() + 0.15
    apac_share = (pl.col("region") == "apac").mean()
    assert d_cust.select(apac_share).item() > customers.select(apac_share).item() + 0.15
    assert d_cust["age"].mean() < customers["age"].mean() - 5
    assert "gift_cards" in set(d_tx["category"].cast(pl.String))
    assert (d_tx["amount"] < 0).mean() > 1.8 * (transactions["amount"] < 0).mean()
    pos = pl.col("amount") > 0
    assert d_tx.filter(pos)["amount"].mean() > 1.3 * transactions.filter(pos)["amount"].mean()

    # Both batches read together (different category dictionaries) without id clashes.
    both = pl.read_parquet(root / "transactions" / "*.parquet")
    assert both.height == transactions.height + d_tx.height
    assert both["invoice_id"].is_unique().all()


def test_two_drift_batches_do_not_collide(tmp_path: Path) -> None:
    kwargs = {"customers": 800, "days": 120, "seed": 4, "drift": True}
    a = generate(str(tmp_path), batch_name="drift-0001", **kwargs)
    b = generate(str(tmp_path), batch_name="drift-0002", **kwargs)
    assert a.customers == b.customers == 200
    cust = pl.read_parquet(tmp_path / "customers" / "*.parquet")
    tx = pl.read_parquet(tmp_path / "transactions" / "*.parquet")
    assert cust.height == 400 and cust["customer_id"].is_unique().all()
    assert tx.height == a.transactions + b.transactions
    assert tx["invoice_id"].is_unique().all()
    # Same name again: byte-identical.
    again = generate(str(tmp_path / "again"), batch_name="drift-0001", **kwargs)
    for rel in again.files:
        assert filecmp.cmp(tmp_path / rel, tmp_path / "again" / rel, shallow=False), rel


def test_drift_keeps_latent_churn() -> None:
    """Existing customers whose latent churn precedes the drift window stay silent."""
    key = gen._batch_key("batch-0001-drift")
    normal = list(gen._blocks(SEED, 2_500, DAYS, START, drift=False, key=0))
    drifted = list(gen._blocks(SEED, 2_500, DAYS, START, drift=True, key=key))
    existing = [b for b in drifted if not b.emit_customers]
    assert [b.lo for b in existing] == [b.lo for b in normal]
    assert all(b.emit_customers for b in drifted[len(existing) :])
    silent = 0
    for base, blk in zip(normal, existing, strict=True):
        np.testing.assert_array_equal(blk.cust["churn_day"], base.cust["churn_day"])
        np.testing.assert_array_equal(blk.cust["signup"], base.cust["signup"])
        churn = blk.cust["churn_day"]
        assert (churn[blk.tx["cust"] - blk.lo] > DAYS - 60).all()
        silent += int((churn <= DAYS - 60).sum())
    assert silent > 100


# --------------------------------------------------------------------------- formats / io
def test_csv_output(tmp_path: Path) -> None:
    s = generate(str(tmp_path), customers=800, days=60, seed=3, fmt="csv", chunk_customers=400)
    assert s.files == [
        "customers/batch-0000.csv",
        "transactions/batch-0000-part-00000.csv",
        "transactions/batch-0000-part-00001.csv",
    ]
    cust = pl.read_csv(tmp_path / s.files[0], try_parse_dates=True)
    tx = pl.read_csv(tmp_path / "transactions" / "*.csv", try_parse_dates=True)
    assert cust.height == 800 and tx.height == s.transactions
    assert cust.columns == [
        "customer_id", "signup_date", "plan", "payment_method", "region", "channel",
        "age", "support_tickets", "is_business", "monthly_fee",
    ]  # fmt: skip
    assert tx.columns == ["invoice_id", "customer_id", "timestamp", "amount", "category", "country"]
    assert cust.schema["signup_date"] == pl.Date and cust.schema["is_business"] == pl.Boolean
    assert tx.schema["timestamp"] == pl.Datetime("us")
    assert tx.schema["invoice_id"] == pl.String and tx.schema["customer_id"] == pl.String
    header = (tmp_path / s.files[1]).read_text().splitlines()[1]
    assert ":" in header and "." not in header.split(",")[2]  # "YYYY-MM-DD HH:MM:SS"
    generate(str(tmp_path / "pq"), customers=800, days=60, seed=3)
    tx_pq = pl.read_parquet(tmp_path / "pq" / "transactions" / "*.parquet")
    assert tx.sort("invoice_id")["amount"].equals(tx_pq.sort("invoice_id")["amount"])


def test_fsspec_url(tmp_path: Path) -> None:
    url = f"memory://churn-gen-{uuid.uuid4().hex}/landing/synthetic"
    fs = fsspec.filesystem("memory")
    try:
        s = generate(url, customers=300, days=30, seed=1, batch_name="b1")
        for rel in s.files:
            assert fs.exists(f"{url}/{rel}")
        with fs.open(f"{url}/{s.files[0]}", "rb") as fh:
            assert pq.read_table(fh).num_rows == 300
    finally:
        fs.rm(url.split("/landing")[0], recursive=True)


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(str(tmp_path), fmt="json")
    with pytest.raises(ValueError):
        generate(str(tmp_path), customers=0)
    with pytest.raises(ValueError):
        generate(str(tmp_path), chunk_customers=0)


def test_generator_is_framework_free() -> None:
    tree = ast.parse(Path(gen.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"dagster", "mlflow", "pandas"}


# --------------------------------------------------------------------------- s3 / scale
@pytest.mark.integration
def test_s3_via_moto(tmp_path: Path) -> None:
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        opts = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
        }
        boto3 = pytest.importorskip("boto3")
        boto3.client(
            "s3",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **opts["client_kwargs"],
        ).create_bucket(Bucket="landing")
        fs = fsspec.filesystem("s3", **opts)
        s = generate("s3://landing/synthetic", customers=400, days=30, seed=2, storage_options=opts)
        for rel in s.files:
            assert fs.exists(f"landing/synthetic/{rel}")
        local = generate(str(tmp_path), customers=400, days=30, seed=2)
        with fs.open(f"landing/synthetic/{s.files[1]}", "rb") as fh:
            assert fh.read() == (tmp_path / local.files[1]).read_bytes()
    finally:
        server.stop()


def test_memory_is_bounded_by_chunk_size(tmp_path: Path) -> None:
    """Peak Arrow memory follows the chunk size, not the data size.

    (Measured separately: 10M transactions with the default chunk size peak at ~0.55 GB RSS.)
    """
    default_pool = pa.default_memory_pool()
    peaks = {}
    for chunk in (1_500, 12_000):
        pool = pa.proxy_memory_pool(default_pool)
        pa.set_memory_pool(pool)
        try:
            s = generate(
                str(tmp_path / str(chunk)), customers=12_000, seed=3, chunk_customers=chunk
            )
        finally:
            pa.set_memory_pool(default_pool)
        assert s.transactions > 500_000
        peaks[chunk] = pool.max_memory()
    assert peaks[1_500] < 0.3 * peaks[12_000]
