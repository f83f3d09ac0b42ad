"""A landing file whose export wrote some lines twice: every line still counts (two equal
purchases can be real), but the repeats are counted over the whole line and named."""

from __future__ import annotations

import gzip
from pathlib import Path

import dagster as dg

from tests.data.test_bad_input import TRANSACTIONS, setup_landing
from tests.data.test_transaction_partitions import run

# two lines of TRANSACTIONS written twice; the last two lines differ in a column the
# data set does not read only, and so are not repeats
WIDE = "invoice_id,customer_id,timestamp,amount,stock_code\n" + "".join(
    line + f",S{i}\n" for i, line in enumerate(TRANSACTIONS.splitlines()[1:])
)
REPEATED = (
    WIDE
    + "I1,C1,2024-01-03 10:00:00,25.0,S0\n\nI5,C3,2024-02-25 18:00:00,99.0,S4\r\n"
    + "I9,C4,2024-03-01 08:00:00,5.0,S8\nI9,C4,2024-03-01 08:00:00,5.0,S9\n"
)


def test_lines_repeated_in_a_file_are_counted_and_named(isolated_env: Path, tmp_path):
    config = setup_landing(
        isolated_env,
        tmp_path,
        transactions=REPEATED,
        # other invoices: not a copy of a.csv
        extra={"transactions/b.csv.gz": gzip.compress(REPEATED.replace(",C", ",D").encode())},
    )
    instance = dg.DagsterInstance.ephemeral()
    result = run(config, instance)
    assert result.success
    meta = {
        m.partition: m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("raw_transactions")
    }
    # a plain file scanned from its path, a compressed one from its bytes: the same count
    assert {k: m["repeated_lines"].value for k, m in meta.items()} == {"a.csv": 2, "b.csv.gz": 2}
    assert {k: m["usable_rows"].value for k, m in meta.items()} == {"a.csv": 12, "b.csv.gz": 12}
    warnings = sorted(
        e.message
        for r in instance.get_runs()  # one run per partition
        for e in instance.all_logs(r.run_id)
        if e.level >= 30 and "repeat an earlier line" in e.message
    )
    assert len(warnings) == 2
    assert (
        "2 line(s) repeat an earlier line of their file byte for byte (2 in a.csv)" in (warnings[0])
    )
    assert "(2 in b.csv.gz); each is counted as a purchase of its own" in warnings[1]


def test_a_file_without_repeats_says_zero(isolated_env: Path, tmp_path):
    config = setup_landing(isolated_env, tmp_path, transactions=WIDE)
    result = run(config, dg.DagsterInstance.ephemeral())
    [event] = [
        m
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("raw_transactions")
    ]
    assert event.materialization.metadata["repeated_lines"].value == 0
