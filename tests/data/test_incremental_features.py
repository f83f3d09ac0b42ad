"""Current features kept up to date batch by batch equal the table built from every line."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from churn_assets.lib import features, incremental
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.feature_sets import features_at, reference_categories, usable
from churn_assets.lib.generator import generate
from churn_assets.lib.ingest import ingest_customers, ingest_transactions
from churn_assets.lib.storage import Storage


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Typed customers and transaction lines of a small synthetic data set."""
    landing = tmp_path_factory.mktemp("landing")
    generate(str(landing / "synthetic"), customers=800, days=200, seed=5)
    cfg = load_dataset_config("synthetic")
    customers, _ = usable(ingest_customers(cfg, str(landing / "synthetic")).frame)
    lines, _ = usable(ingest_transactions(cfg, str(landing / "synthetic")).frame)
    return cfg, customers, lines.sort("timestamp", "invoice_id", "customer_id")


def _whole(cfg, customers, lines, categories):
    """The table the current_features asset builds from every line."""
    cutoff = lines["timestamp"].max().date() + dt.timedelta(days=1)
    return features_at(cfg, customers, lines, cutoff, with_labels=False, categories=categories)


def _split_at(lines: pl.DataFrame, ts: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """History before ``ts`` and the batch from it (whole orders on each side)."""
    first = lines.group_by("invoice_id").agg(pl.col("timestamp").min().alias("_first"))
    tagged = lines.join(first, on="invoice_id", how="left")
    late = pl.col("_first") >= ts
    return tagged.filter(~late).drop("_first"), tagged.filter(late).drop("_first")


def _add(storage, name, lines, customers, categories):
    return incremental.add_batch(
        storage, name, lines, customers, categories, horizon_days=90, naive_lookback_days=270
    )


def test_a_batch_on_the_same_day_recomputes_only_its_customers(synthetic, tmp_path):
    cfg, customers, lines = synthetic
    categories = reference_categories(cfg, lines)
    last = lines["timestamp"].max()
    history, batch = _split_at(lines, last.replace(hour=0, minute=0) + dt.timedelta(hours=12))
    assert history.height and batch.height
    assert history["timestamp"].max().date() == last.date()  # the cut-off does not move
    storage = Storage(str(tmp_path / "state"))

    first = _add(storage, "history", history, customers, categories)
    update = _add(storage, "batch-1", batch, customers, categories)

    assert first.mode == "full"
    assert update.mode == "touched"
    assert update.customers_updated == batch["customer_id"].n_unique() < update.customers_total
    expected = _whole(cfg, customers, lines, categories)
    assert_frame_equal(incremental.read_table(storage), expected, check_exact=True)
    # lines of ids the customer table lacks are counted, batch by batch
    assert first.unknown_customer_lines == update.unknown_customer_lines == 0
    stranger = batch.head(3).with_columns(pl.lit("C-stranger").alias("customer_id"))
    assert _add(storage, "batch-2", stranger, customers, categories).unknown_customer_lines == 3


def test_a_batch_on_a_new_day_recomputes_every_customer_from_the_parts(synthetic, tmp_path):
    cfg, customers, lines = synthetic
    categories = reference_categories(cfg, lines)
    last_day = lines["timestamp"].max().replace(hour=0, minute=0, second=0, microsecond=0)
    history, batch = _split_at(lines, last_day - dt.timedelta(days=3))
    storage = Storage(str(tmp_path / "state"))

    _add(storage, "history", history, customers, categories)
    update = _add(storage, "batch-1", batch, customers, categories)

    assert update.mode == "full"
    assert update.cutoff == last_day.date() + dt.timedelta(days=1)
    expected = _whole(cfg, customers, lines, categories)
    assert_frame_equal(incremental.read_table(storage), expected, check_exact=True)


def test_large_batches_reduced_a_bucket_of_customers_at_a_time_give_the_same_table(
    synthetic, tmp_path, monkeypatch
):
    """A history and a new day's batch larger than a bucket (the parts, their compaction
    and the aggregates each built over several customer buckets) give the same table."""
    cfg, customers, lines = synthetic
    categories = reference_categories(cfg, lines)
    last_day = lines["timestamp"].max().replace(hour=0, minute=0, second=0, microsecond=0)
    history, batch = _split_at(lines, last_day - dt.timedelta(days=3))
    expected = _whole(cfg, customers, lines, categories)  # in one query
    # about 200 customers a bucket: polars divides a one-row column exactly and a longer
    # one by its reciprocal, so a one-customer bucket could differ in the last bit
    monkeypatch.setattr(features, "BUCKET_ROWS", history.height // 4)
    assert features.bucket_count(features.order_rows(history.lazy())) >= 4
    storage = Storage(str(tmp_path / "state"))

    _add(storage, "history", history, customers, categories)
    update = _add(storage, "batch-1", batch, customers, categories)

    assert update.mode == "full"
    assert_frame_equal(incremental.read_table(storage), expected, check_exact=True)
    compacted = storage.read_parquet("activity/batch-1.parquet")
    assert compacted.select("customer_id", "day").is_duplicated().sum() == 0
    assert compacted.height == incremental.batch_parts(lines)["activity"].height


def test_without_a_customer_table_new_customers_are_added(synthetic, tmp_path):
    cfg, _, lines = synthetic
    categories = reference_categories(cfg, lines)
    last = lines["timestamp"].max()
    history, batch = _split_at(lines, last.replace(hour=0, minute=0) + dt.timedelta(hours=12))
    newcomer = batch.head(1).with_columns(
        pl.lit("NEW-1").alias("customer_id"), pl.lit("INV-NEW-1").alias("invoice_id")
    )
    batch = pl.concat([batch, newcomer])
    storage = Storage(str(tmp_path / "state"))

    _add(storage, "history", history, None, categories)
    update = _add(storage, "batch-1", batch, None, categories)

    table = incremental.read_table(storage)
    assert update.mode == "touched"
    assert "NEW-1" in table["customer_id"].to_list()
    assert update.customers_total == table.height
    snapshot = cfg.model_copy(update={"customers": None})
    expected = _whole(snapshot, None, pl.concat([history, batch]), categories)
    assert_frame_equal(table, expected, check_exact=True)


def test_a_batch_is_written_once_and_bad_batches_are_refused(synthetic, tmp_path):
    cfg, customers, lines = synthetic
    categories = reference_categories(cfg, lines)
    storage = Storage(str(tmp_path / "state"))
    _add(storage, "b1", lines.head(500), customers, categories)
    before = incremental.read_table(storage)

    with pytest.raises(ValueError, match="added already"):
        _add(storage, "b1", lines.slice(500, 100), customers, categories)
    with pytest.raises(ValueError, match="no usable transaction lines"):
        _add(storage, "b2", lines.head(0), customers, categories)
    with pytest.raises(ValueError, match="letters, digits"):
        _add(storage, "../escape", lines.head(10), customers, categories)

    assert_frame_equal(incremental.read_table(storage), before)  # nothing lost
    assert storage.read_json(incremental.STATE)["batches"] == ["b1"]


def test_hourly_batches_of_one_day_and_late_lines_all_give_the_whole_table(synthetic, tmp_path):
    """Three batches within the last day (each touching customers already active that day),
    then a batch of late lines from before it: every step equals the table of every line."""
    cfg, customers, lines = synthetic
    categories = reference_categories(cfg, lines)
    noon = lines["timestamp"].max().replace(hour=0, minute=0) + dt.timedelta(hours=12)
    late_lines = lines.filter(pl.col("invoice_id").is_in(lines.head(40)["invoice_id"].implode()))
    rest = lines.join(late_lines.select("invoice_id").unique(), on="invoice_id", how="anti")
    history, day = _split_at(rest, noon - dt.timedelta(hours=6))
    storage = Storage(str(tmp_path / "state"))
    _add(storage, "history", history, customers, categories)
    seen = [history]
    for i, (lo, hi) in enumerate([(-6, -2), (-2, 3), (3, 24)]):
        start, end = noon + dt.timedelta(hours=lo), noon + dt.timedelta(hours=hi)
        batch = day.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
        if batch.height == 0:
            continue
        seen.append(batch)
        update = _add(storage, f"hour-{i}", batch, customers, categories)
        assert update.mode == "touched"
        assert update.customers_total == customers.height
        expected = _whole(cfg, customers, pl.concat(seen), categories)
        assert_frame_equal(incremental.read_table(storage), expected, check_exact=True)

    update = _add(storage, "late", late_lines, customers, categories)  # lines of early days

    assert update.mode == "full"
    expected = _whole(cfg, customers, pl.concat([*seen, late_lines]), categories)
    assert_frame_equal(incremental.read_table(storage), expected, check_exact=True)
    # the full recompute compacted every batch's parts into its own
    state = storage.read_json(incremental.STATE)
    assert state["batches"] == ["late"] and "hour-0" in state["added"]
    for part in incremental.PARTS:
        assert storage.list_files(part, "*.parquet") == [f"{part}/late.parquet"]
    with pytest.raises(ValueError, match="added already"):
        _add(storage, "hour-0", late_lines, customers, categories)
    last_day = pl.concat(seen).filter(pl.col("timestamp") >= noon - dt.timedelta(hours=6))
    again = last_day.head(30).with_columns(
        ("X" + pl.col("invoice_id")).alias("invoice_id"), pl.col("timestamp").dt.offset_by("1s")
    )
    update = _add(storage, "after", again, customers, categories)  # on the compacted parts
    assert update.mode == "touched"
    everything = pl.concat([*seen, late_lines, again])
    assert_frame_equal(
        incremental.read_table(storage),
        _whole(cfg, customers, everything, categories),
        check_exact=True,
    )
    update = _add(
        storage,
        "next-day",
        again.with_columns(
            pl.col("timestamp").dt.offset_by("1d"), ("Y" + pl.col("invoice_id")).alias("invoice_id")
        ),
        customers,
        categories,
    )
    assert update.mode == "full"
    assert storage.read_json(incremental.STATE)["batches"] == ["next-day"]


def _sourced(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(name).alias(incremental.SOURCE_COLUMN))


def test_sync_adds_only_new_landing_files_and_starts_anew_when_one_changes(synthetic, tmp_path):
    cfg, customers, lines = synthetic
    categories = reference_categories(cfg, lines)
    noon = lines["timestamp"].max().replace(hour=0, minute=0) + dt.timedelta(hours=12)
    history, batch = _split_at(lines, noon)
    storage = Storage(str(tmp_path / "state"))

    def sync(frame, who=customers):
        return incremental.sync(
            storage, frame.lazy(), who, categories, horizon_days=90, naive_lookback_days=270
        )

    old = _sourced(history, "transactions/part-0.parquet")
    table, info = sync(old)
    assert info["rebuilt"] and info["modes"] == ["full"]
    assert_frame_equal(table, _whole(cfg, customers, history, categories), check_exact=True)

    table, info = sync(old)  # nothing new: nothing read again, nothing recomputed
    assert not info["rebuilt"] and info["files_added"] == 0 and info["customers_updated"] == 0

    both = pl.concat([old, _sourced(batch, "transactions/hour-12.parquet")])
    table, info = sync(both)
    assert not info["rebuilt"] and info["modes"] == ["touched"]
    assert_frame_equal(table, _whole(cfg, customers, lines, categories), check_exact=True)

    late = _sourced(
        both.head(20).with_columns(("L" + pl.col("invoice_id")).alias("invoice_id")),
        "transactions/late.parquet",
    )
    with_late = pl.concat([both, late])
    table, info = sync(with_late)  # lines of earlier days: every row again, parts compacted
    assert not info["rebuilt"] and info["modes"] == ["full"]
    expected = _whole(cfg, customers, with_late.drop(incremental.SOURCE_COLUMN), categories)
    assert_frame_equal(table, expected, check_exact=True)
    assert not sync(with_late)[1]["rebuilt"]  # and the state still matches its files

    rewritten = both.with_columns(
        pl.when(pl.col("invoice_id") == both["invoice_id"][0])
        .then(pl.col("amount") + 1.0)
        .otherwise(pl.col("amount"))
        .alias("amount")
    )
    table, info = sync(rewritten)  # a landing file rewritten in place
    assert info["rebuilt"]
    expected = _whole(cfg, customers, rewritten.drop(incremental.SOURCE_COLUMN), categories)
    assert_frame_equal(table, expected, check_exact=True)

    fewer = customers.head(customers.height - 10)
    table, info = sync(rewritten, fewer)  # another customer table
    assert info["rebuilt"]
    expected = _whole(cfg, fewer, rewritten.drop(incremental.SOURCE_COLUMN), categories)
    assert_frame_equal(table, expected, check_exact=True)


def test_exit_events_leave_the_same_customers_out_batch_by_batch(synthetic, tmp_path):
    """With exit events (here the first category by name, as a stand-in) the customers who
    'left' before now are out of the incremental table as of the table from every line."""
    cfg, customers, lines = synthetic
    exits = (lines["category"].drop_nulls().sort()[0],)
    cfg = cfg.model_copy(
        update={"transactions": cfg.transactions.model_copy(update={"exit_events": list(exits)})}
    )
    categories = reference_categories(cfg, lines)
    last_day = lines["timestamp"].max().replace(hour=0, minute=0, second=0, microsecond=0)
    history, batch = _split_at(lines, last_day - dt.timedelta(days=3))
    storage = Storage(str(tmp_path / "state"))
    kwargs = {"horizon_days": 90, "naive_lookback_days": 270, "exit_events": exits}

    incremental.add_batch(storage, "history", history, customers, categories, **kwargs)
    incremental.add_batch(storage, "batch-1", batch, customers, categories, **kwargs)

    table = incremental.read_table(storage)
    expected = _whole(cfg, customers, lines, categories)
    assert_frame_equal(table, expected, check_exact=True)
    plain = cfg.model_copy(
        update={"transactions": cfg.transactions.model_copy(update={"exit_events": []})}
    )
    assert 0 < table.height < _whole(plain, customers, lines, categories).height


def _exit_setup(synthetic):
    """The synthetic data set with the exit event ``EXIT``: its config, customers and
    category columns, the history and a same-day batch of the last day, and a customer of
    that batch."""
    cfg, customers, lines = synthetic
    cfg = cfg.model_copy(
        update={"transactions": cfg.transactions.model_copy(update={"exit_events": ["EXIT"]})}
    )
    categories = reference_categories(cfg, lines)
    last = lines["timestamp"].max()
    history, batch = _split_at(lines, last.replace(hour=0, minute=0) + dt.timedelta(hours=12))
    return cfg, customers, categories, history, batch, batch["customer_id"][0]


def _exit_batches(tmp_path, cfg, customers, categories, history, batch):
    """``history`` then ``batch`` added with the exit event ``EXIT``: the table before and
    after the batch and what the batch did; the table after is checked against the one
    from every line."""
    storage = Storage(str(tmp_path / "state"))
    kwargs = {"horizon_days": 90, "naive_lookback_days": 270, "exit_events": ("EXIT",)}
    incremental.add_batch(storage, "history", history, customers, categories, **kwargs)
    before = incremental.read_table(storage)
    update = incremental.add_batch(storage, "batch-1", batch, customers, categories, **kwargs)
    table = incremental.read_table(storage)
    expected = _whole(cfg, customers, pl.concat([history, batch]), categories)
    assert_frame_equal(table, expected, check_exact=True)
    return before, update, table


def test_a_customer_who_leaves_within_the_day_is_out_of_the_table_at_once(synthetic, tmp_path):
    """An exit event in a same-day batch (only its customers recomputed) hides the
    customer's row of the last full recompute: the table equals the one from every line."""
    cfg, customers, categories, history, batch, leaver = _exit_setup(synthetic)
    exit_line = batch.head(1).with_columns(
        pl.lit("INV-EXIT-1").alias("invoice_id"), pl.lit("EXIT").alias("category")
    )
    batch = pl.concat([batch, exit_line])
    before, update, table = _exit_batches(tmp_path, cfg, customers, categories, history, batch)
    assert update.mode == "touched"
    assert leaver in before["customer_id"].to_list()
    assert leaver not in table["customer_id"].to_list()


def test_a_customer_who_comes_back_after_leaving_is_in_the_table_again(synthetic, tmp_path):
    """A customer hidden by an exit event is back in the table once a later batch holds a
    line more than a day after it, as in the table from every line; a state written before
    returns counted is built anew once."""
    cfg, customers, categories, history, batch, leaver = _exit_setup(synthetic)
    earlier = history.filter(pl.col("customer_id") == leaver).sort("timestamp")
    exit_line = earlier.tail(1).with_columns(
        pl.lit("INV-EXIT-1").alias("invoice_id"),
        pl.lit("EXIT").alias("category"),
        (pl.col("timestamp") + dt.timedelta(minutes=1)).alias("timestamp"),
    )
    history = pl.concat([history, exit_line])
    before, update, table = _exit_batches(tmp_path, cfg, customers, categories, history, batch)

    assert update.mode == "touched"
    assert leaver not in before["customer_id"].to_list()
    assert leaver in table["customer_id"].to_list()

    kwargs = {"horizon_days": 90, "naive_lookback_days": 270, "exit_events": ("EXIT",)}
    state = Storage(str(tmp_path / "sync"))
    sourced = _sourced(history, "transactions/part-0.parquet")
    sync = incremental.sync(state, sourced.lazy(), customers, categories, **kwargs)
    assert sync[1]["rebuilt"]
    sources = state.read_json(incremental.SOURCES)
    state.write_json(incremental.SOURCES, {k: v for k, v in sources.items() if k != "exit_times"})
    assert incremental.sync(state, sourced.lazy(), customers, categories, **kwargs)[1]["rebuilt"]
    assert not incremental.sync(state, sourced.lazy(), customers, categories, **kwargs)[1][
        "rebuilt"
    ]
