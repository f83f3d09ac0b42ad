"""Data-quality validation (Great Expectations 1.x suite) of a 200k-row table.

Reported against the same counts computed directly in polars in the same run (the floor any
rule engine pays), after one warm-up validation that takes GX's import and first-use costs.

    python -m benchmarks.validation --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import polars as pl


def table(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": pl.int_range(n, eager=True),
            "amount": (pl.int_range(n, eager=True) % 1000).cast(pl.Float64),
            "seg": pl.Series(["a", "b"] * (n // 2)),
        }
    )


def run(rows: int = 200_000) -> dict[str, Any]:
    from churn_assets.lib.quality import Rule, validate

    df = table(rows)
    rules = [
        Rule("not_null", "id"),
        Rule("unique", "id"),
        Rule("between", "amount", min_value=0, max_value=998),
        Rule("in_set", "seg", value_set=("a",)),
    ]
    validate(df.head(10), rules, "warm")
    start = time.perf_counter()
    report = validate(df, rules, "big")
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = df.select(
        pl.col("id").null_count().alias("null"),
        pl.col("id").is_duplicated().sum().alias("dup"),
        (~pl.col("amount").is_between(0, 998)).sum().alias("range"),
        (~pl.col("seg").is_in(["a"])).sum().alias("set"),
    ).row(0)
    reference_seconds = time.perf_counter() - start
    counts = [r.unexpected_count for r in report.results]
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "reference": "the same counts in polars, same run",
        "reference_seconds": round(reference_seconds, 4),
        "ratio_to_reference": round(seconds / max(reference_seconds, 1e-6), 1),
        "counts_match": counts == list(reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.rows), indent=None if args.json else 2))


if __name__ == "__main__":
    main()
