"""Ingestion and screening share the table's buffers instead of copying the whole table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import TRANSACTION_COLUMNS, chunked_like, ingest_transactions
from churn_assets.lib.quality import Rule
from churn_assets.lib.quarantine import screen


def _landing(tmp_path: Path, parts: int = 3) -> str:
    root = tmp_path / "landing" / "synthetic" / "transactions"
    root.mkdir(parents=True)
    for p in range(parts):
        n = 5 + p
        pl.DataFrame(
            {
                "invoice_id": [f"{'C' if i == 0 else 'I'}{p}{i:03d}" for i in range(n)],
                "customer_id": [f"{i % 3}.0" if i == 1 else f"c{i % 3}" for i in range(n)],
                "timestamp": [f"2024-01-0{1 + i % 9} 10:00:00" for i in range(n)],
                "amount": [
                    "-5" if i == 2 else ("x" if i == 3 and p == 1 else "10") for i in range(n)
                ],
                "category": pl.Series(
                    ["a", "b", None, "a", "b", "a", "c"][:n], dtype=pl.Categorical
                ),
                "country": pl.Series(["FR"] * n, dtype=pl.Categorical),
            }
        ).write_parquet(root / f"part-{p}.parquet")
    return str(tmp_path / "landing" / "synthetic")


def _aligned(frame: pl.DataFrame) -> bool:
    """Every materialised column has the chunks of the first one (scalar columns aside)."""
    first = [c.len() for c in frame.to_series(0).get_chunks()]
    return all(
        [c.len() for c in s.get_chunks()] in (first, [frame.height]) for s in frame.get_columns()
    )


def test_transactions_are_typed_per_file_with_one_chunk_per_file(tmp_path: Path) -> None:
    cfg = load_dataset_config("synthetic")
    res = ingest_transactions(cfg, _landing(tmp_path))
    frame = res.frame
    assert frame.columns == [*TRANSACTION_COLUMNS, "_source_file", "_parse_errors"]
    assert frame.height == 5 + 6 + 7
    assert frame.to_series(0).n_chunks() == 3 and _aligned(frame)
    assert frame["customer_id"].to_list()[:3] == ["c0", "1", "c2"]
    assert frame["is_return"].to_list()[:3] == [True, False, True]
    assert res.parse_errors == {"amount": 1}
    # an expression on the stacked table keeps its chunks: no copy of the whole table
    assert frame.with_columns(pl.col("amount").abs()).to_series(0).n_chunks() == 3


def test_screen_keeps_the_chunks_and_flags_the_bad_rows(tmp_path: Path) -> None:
    cfg = load_dataset_config("synthetic")
    frame = ingest_transactions(cfg, _landing(tmp_path)).frame
    rules = [Rule("between", "amount", min_value=0), Rule("not_null", "category")]
    out, bad = screen(frame, rules)
    assert out.columns == [*frame.columns, "_quarantined"]
    assert _aligned(out)
    assert out.drop("_source_file").to_series(0).n_chunks() == 3
    expected = (
        frame.with_row_index("_row")
        .filter(
            (pl.col("amount") < 0)
            | pl.col("category").is_null()
            | pl.col("_parse_errors").is_not_null()
        )["_row"]
        .to_list()
    )
    assert out.with_row_index("_row").filter("_quarantined")["_row"].to_list() == expected
    assert bad.columns == [*frame.columns, "_reason"]
    assert bad.height == len(expected)
    assert "unparseable value in amount" in bad["_reason"].to_list()


def test_chunked_like_follows_the_frame() -> None:
    frame = pl.concat([pl.DataFrame({"a": [1, 2, 3]}), pl.DataFrame({"a": [4, 5]})])
    flags = pl.Series("q", [True, False, True, False, True])
    out = chunked_like(flags, frame)
    assert out.to_list() == flags.to_list()
    assert [c.len() for c in out.get_chunks()] == [3, 2]
    single = pl.DataFrame({"a": [1, 2]})
    assert chunked_like(pl.Series("q", [True, False]), single).n_chunks() == 1


def _big_csv(tmp_path: Path, rows: int = 2_500) -> Path:
    """A transaction CSV with a bad amount, an empty line and UTC offsets, in a folder."""
    root = tmp_path / "landing" / "x" / "orders"
    root.mkdir(parents=True)
    lines = ["order,customer,at,amount"]
    for i in range(rows):
        amount = "ten" if i == 1_700 else ("N/A" if i == 40 else f"{(i % 50) - 5}.5")
        lines.append(f"O{i},c{i % 97},2024-03-{1 + i % 28:02d}T10:{i % 60:02d}:00+02:00,{amount}")
        if i == 1_234:
            lines.append(",,,")
    path = root / "orders.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


CSV_CONFIG = (
    "name: x\ntransactions:\n  path: orders/\n  customer_id: customer\n  timestamp: at\n"
    "  amount: amount\n  invoice_id: order\nlabels: {source: transactions, horizon_days: 7}\n"
)


def test_a_large_csv_is_typed_in_batches_exactly_as_whole(tmp_path: Path, monkeypatch) -> None:
    """Above BATCH_BYTES a plain local CSV is read and typed in batches of rows: the same
    table, parse failures, empty-line count and UTC conversion as when read whole, with a
    chunk per batch (aligned across columns)."""
    from churn_assets.lib import source_files

    path = _big_csv(tmp_path)
    first = path.read_text().splitlines()[1]
    path.write_text(path.read_text() + f"{first}\n{first}\n")  # a line written three times
    config = tmp_path / "x.yaml"
    config.write_text(CSV_CONFIG)
    cfg = load_dataset_config(str(config))
    landing = str(tmp_path / "landing" / "x")
    whole = ingest_transactions(cfg, landing)
    assert whole.frame.to_series(0).n_chunks() == 1
    monkeypatch.setattr(source_files, "BATCH_BYTES", 1_000)
    monkeypatch.setattr(source_files, "BATCH_ROWS", 600)
    batched = ingest_transactions(cfg, landing)
    assert batched.frame.to_series(0).n_chunks() == 5 and _aligned(batched.frame)
    # an expression on the stacked table keeps its chunks: no copy of the whole table
    assert batched.frame.with_columns(pl.col("amount").abs()).to_series(0).n_chunks() == 5
    assert batched.frame.equals(whole.frame)
    assert batched.parse_errors == whole.parse_errors == {"amount": 1}
    assert batched.empty_rows == whole.empty_rows == 1
    assert batched.repeated_lines == whole.repeated_lines == {"orders.csv": 2}
    assert batched.frame["timestamp"][0].hour == 8  # +02:00 read as UTC
    assert batched.frame["amount"].null_count() == 2  # "N/A" missing, "ten" failed


def test_a_large_csv_polars_cannot_parse_is_read_whole_and_quarantined(
    tmp_path: Path, monkeypatch
) -> None:
    from churn_assets.lib import source_files

    path = _big_csv(tmp_path)
    path.write_text(path.read_text() + 'O9,c1,"2024-03-01T10:00:00+02:00,1\n')  # open quote
    config = tmp_path / "x.yaml"
    config.write_text(CSV_CONFIG)
    monkeypatch.setattr(source_files, "BATCH_BYTES", 1_000)
    monkeypatch.setattr(source_files, "BATCH_ROWS", 600)
    res = ingest_transactions(load_dataset_config(str(config)), str(tmp_path / "landing" / "x"))
    assert res.frame.height == 0
    assert [p.file for p in res.file_problems] == ["orders.csv"]
    assert res.raw_bytes["orders.csv"] == path.read_bytes()  # kept whole for quarantine


@pytest.mark.parametrize("parse_failures", [True, False])
def test_screen_reasons_for_rows_failing_a_parse_a_rule_or_both(parse_failures: bool) -> None:
    frame = pl.DataFrame(
        {
            "customer_id": ["a", None, "c", None, "e"],
            "amount": [1.0, 2.0, None, None, -4.0],
            "_source_file": ["f"] * 5,
            "_parse_errors": ["amount", None, None, "amount", None]
            if parse_failures
            else [None] * 5,
        },
        schema_overrides={"_parse_errors": pl.String},
    )
    rules = [Rule("not_null", "customer_id"), Rule("between", "amount", min_value=0)]
    out, bad = screen(frame, rules)
    reasons = dict(zip(bad["customer_id"].fill_null("-").to_list(), bad["_reason"], strict=True))
    null_id = "column 'customer_id' is null"
    if parse_failures:
        assert out["_quarantined"].to_list() == [True, True, False, True, True]
        assert bad.columns == [*frame.columns, "_reason"]
        assert bad["amount"].to_list() == [1.0, 2.0, None, -4.0]  # in row order
        assert reasons["a"] == "unparseable value in amount"
        assert bad["_reason"][2] == f"unparseable value in amount; {null_id}"  # both
    else:
        assert out["_quarantined"].to_list() == [False, True, False, True, True]
        assert bad["_reason"].to_list()[:2] == [null_id, null_id]
    assert reasons["e"].startswith("column 'amount'")
