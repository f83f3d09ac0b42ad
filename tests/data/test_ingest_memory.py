"""Ingestion and screening share the table's buffers instead of copying the whole table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import TRANSACTION_COLUMNS, ingest_transactions
from churn_assets.lib.quality import Rule
from churn_assets.lib.quarantine import _chunked_like, screen


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
    out = _chunked_like(flags, frame)
    assert out.to_list() == flags.to_list()
    assert [c.len() for c in out.get_chunks()] == [3, 2]
    single = pl.DataFrame({"a": [1, 2]})
    assert _chunked_like(pl.Series("q", [True, False]), single).n_chunks() == 1
