"""Bad input gets a failed blocking check naming the column and the count of bad rows,
the bad rows or files go to quarantine, and nothing downstream materializes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.helpers import run_graph as run_all

CONFIG = """
name: mini
customers:
  path: customers/
  id_column: customer_id
  signup_date: {name: signup_date, type: date}
  attributes:
    - {name: plan, type: categorical, nullable: false}
    - {name: age, type: integer, min: 18, max: 120}
    - {name: monthly_fee, type: numeric, min: 0, max: 10000}
transactions:
  path: transactions/
  customer_id: customer_id
  timestamp: timestamp
  amount: amount
  invoice_id: invoice_id
  cancellation_prefix: "C"
  min_amount: -5000
  max_amount: 5000
labels:
  source: transactions
  cutoff: 2024-03-01
  horizon_days: 30
"""

CUSTOMERS = """customer_id,signup_date,plan,age,monthly_fee
C1,2023-01-05,monthly,34,20.0
C2,2023-02-10,annual,45,15.5
C3,2023-03-15,monthly,29,20.0
C4,2023-04-20,two_year,61,12.0
"""

TRANSACTIONS = """invoice_id,customer_id,timestamp,amount
I1,C1,2024-01-03 10:00:00,25.0
I2,C1,2024-02-11 12:30:00,40.0
I3,C2,2024-01-20 09:00:00,15.5
C4,C2,2024-01-22 09:00:00,-5.5
I5,C3,2024-02-25 18:00:00,99.0
I6,C4,2024-01-02 08:00:00,12.0
I7,C1,2024-03-10 10:00:00,30.0
I8,C3,2024-03-12 10:00:00,10.0
"""


INGEST = ["raw_customers", "raw_transactions", "customer_features", "current_features"]


def run_graph(config: str):
    """Ingestion and features only: these data sets are too small to train on."""
    return run_all(config, selection=INGEST)


def setup_landing(
    storage: Path,
    tmp_path: Path,
    customers: bytes | str = CUSTOMERS,
    transactions: bytes | str = TRANSACTIONS,
    extra: dict[str, bytes | str] | None = None,
) -> str:
    """Write a small data set into the landing zone; returns the config path."""
    landing = storage / "landing" / "mini"
    files = {"customers/a.csv": customers, "transactions/a.csv": transactions, **(extra or {})}
    for rel, content in files.items():
        p = landing / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)
    return str(cfg)


def quarantined_rows(storage: Path, table: str) -> pl.DataFrame:
    files = sorted((storage / "mini" / "quarantine" / table).glob("*/rows.parquet"))
    assert files, f"no quarantined rows for {table}"
    return pl.read_parquet(files[-1])


def quarantined_files(storage: Path, table: str) -> list[str]:
    return sorted(
        p.name
        for p in (storage / "mini" / "quarantine" / table).glob("*/files/*")
        if p.name != "_reasons.json"
    )


def assert_blocked(run) -> None:
    assert not run.result.success
    assert "customer_features" not in run.materialized


def test_clean_input_materializes_everything(isolated_env, tmp_path):
    run = run_graph(setup_landing(isolated_env, tmp_path))
    assert run.result.success
    assert run.materialized == set(INGEST)
    assert all(c.passed for c in run.checks.values())
    assert not (isolated_env / "mini" / "quarantine").exists()


def test_missing_column(isolated_env, tmp_path):
    bad = "customer_id,signup_date,plan,age\nC9,2023-01-01,monthly,40\n"
    run = run_graph(setup_landing(isolated_env, tmp_path, extra={"customers/b.csv": bad}))
    check = run.check("raw_customers", "files_readable")
    assert not check.passed
    assert "b.csv" in check.description and "'monthly_fee'" in check.description
    assert check.metadata["problems"].value[0]["rows"] == 1
    assert quarantined_files(isolated_env, "raw_customers") == ["b.csv"]
    assert_blocked(run)


def test_wrong_type(isolated_env, tmp_path):
    customers = CUSTOMERS.replace("C2,2023-02-10,annual,45", "C2,2023-02-10,annual,forty")
    customers = customers.replace("C3,2023-03-15,monthly,29", "C3,2023-03-15,monthly,2x9")
    run = run_graph(setup_landing(isolated_env, tmp_path, customers=customers))
    check = run.check("raw_customers", "values_parse")
    assert not check.passed
    assert "column 'age': 2 value(s)" in check.description
    q = quarantined_rows(isolated_env, "raw_customers")
    assert sorted(q["customer_id"].to_list()) == ["C2", "C3"]
    assert_blocked(run)


def test_negative_amount(isolated_env, tmp_path):
    customers = CUSTOMERS.replace("monthly,34,20.0", "monthly,34,-20.0")
    run = run_graph(setup_landing(isolated_env, tmp_path, customers=customers))
    check = run.check("raw_customers", "expectations_met")
    assert not check.passed
    assert "monthly_fee" in check.description and "1 of 4" in check.description
    assert quarantined_rows(isolated_env, "raw_customers")["customer_id"].to_list() == ["C1"]
    assert_blocked(run)


def test_absurd_amount(isolated_env, tmp_path):
    tx = TRANSACTIONS.replace("I5,C3,2024-02-25 18:00:00,99.0", "I5,C3,2024-02-25 18:00:00,9e9")
    run = run_graph(setup_landing(isolated_env, tmp_path, transactions=tx))
    check = run.check("raw_transactions", "expectations_met")
    assert not check.passed
    assert "'amount'" in check.description and "1 of 8" in check.description
    assert quarantined_rows(isolated_env, "raw_transactions")["invoice_id"].to_list() == ["I5"]
    assert_blocked(run)


def test_duplicate_id(isolated_env, tmp_path):
    customers = CUSTOMERS + "C2,2023-05-01,monthly,50,20.0\n"
    run = run_graph(setup_landing(isolated_env, tmp_path, customers=customers))
    check = run.check("raw_customers", "expectations_met")
    assert not check.passed
    assert "customer_id" in check.description and "2 of 5" in check.description
    assert "needs the latest row of each customer only" in check.description
    assert quarantined_rows(isolated_env, "raw_customers")["customer_id"].to_list() == ["C2", "C2"]
    assert_blocked(run)


def test_empty_file(isolated_env, tmp_path):
    run = run_graph(setup_landing(isolated_env, tmp_path, extra={"transactions/b.csv": ""}))
    check = run.check("raw_transactions", "files_readable")
    assert not check.passed
    assert "b.csv: empty file" in check.description
    assert quarantined_files(isolated_env, "raw_transactions") == ["b.csv"]
    assert_blocked(run)


def test_header_only_file(isolated_env, tmp_path):
    run = run_graph(
        setup_landing(
            isolated_env,
            tmp_path,
            extra={"transactions/b.csv": "invoice_id,customer_id,timestamp,amount\n"},
        )
    )
    check = run.check("raw_transactions", "files_readable")
    assert not check.passed and "header only" in check.description
    assert_blocked(run)


def test_unparseable_date(isolated_env, tmp_path):
    tx = TRANSACTIONS.replace("2024-01-20 09:00:00", "20/01/2024 nine").replace(
        "2024-01-02 08:00:00", "yesterday"
    )
    run = run_graph(setup_landing(isolated_env, tmp_path, transactions=tx))
    check = run.check("raw_transactions", "values_parse")
    assert not check.passed
    assert "column 'timestamp': 2 value(s)" in check.description
    q = quarantined_rows(isolated_env, "raw_transactions")
    assert sorted(q["invoice_id"].to_list()) == ["I3", "I6"]
    assert q["_reason"].str.contains("timestamp").all()
    assert_blocked(run)


def test_unknown_encoding(isolated_env, tmp_path):
    latin = "customer_id,signup_date,plan,age,monthly_fee\nC9,2023-01-01,mensuel é,40,10\n"
    run = run_graph(
        setup_landing(isolated_env, tmp_path, extra={"customers/b.csv": latin.encode("latin-1")})
    )
    check = run.check("raw_customers", "files_readable")
    assert not check.passed
    assert "b.csv: unknown encoding" in check.description and "utf-8" in check.description
    assert quarantined_files(isolated_env, "raw_customers") == ["b.csv"]
    assert_blocked(run)


def test_missing_landing_zone_is_a_clear_error(isolated_env, tmp_path):
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)
    run = run_graph(str(cfg))
    assert not run.result.success
    failure = next(e for e in run.result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.event_specific_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert "IngestError: no such file or directory" in text and "churn seed" in text


@pytest.mark.parametrize("table", ["raw_customers", "raw_transactions"])
def test_quarantine_keeps_reasons(isolated_env, tmp_path, table):
    customers = CUSTOMERS.replace("annual,45", "annual,4000")
    tx = TRANSACTIONS.replace("2024-01-03 10:00:00,25.0", "2024-01-03 10:00:00,")
    run = run_graph(setup_landing(isolated_env, tmp_path, customers=customers, transactions=tx))
    q = quarantined_rows(isolated_env, table)
    assert q.height == 1
    assert q["_reason"][0]
    assert_blocked(run)


def test_too_few_labelled_customers_is_a_clear_error(isolated_env, tmp_path):
    run = run_all(setup_landing(isolated_env, tmp_path), selection=[*INGEST, "training_set"])
    failure = next(e for e in run.result.all_events if e.event_type_value == "STEP_FAILURE")
    err = failure.event_specific_data.error
    text = err.message + (err.cause.message if err.cause else "")
    assert "training_set needs at least 10 churned and 10 retained customers" in text


def test_bad_file_is_moved_out_and_not_retried(isolated_env, tmp_path):
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/b.csv": ""})
    first = run_graph(config)
    assert not first.result.success
    landing = isolated_env / "landing" / "mini" / "transactions"
    assert sorted(p.name for p in landing.iterdir()) == ["a.csv"]
    second = run_graph(config)
    assert second.result.success
    assert "customer_features" in second.materialized


def test_file_with_blocking_bad_rows_is_moved_whole(isolated_env, tmp_path):
    tx = "invoice_id,customer_id,timestamp,amount\nI9,C1,2024-01-05 10:00:00,9e9\n"
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/b.csv": tx})
    first = run_graph(config)
    assert not first.result.success
    assert quarantined_files(isolated_env, "raw_transactions") == ["b.csv"]
    assert not (isolated_env / "landing" / "mini" / "transactions" / "b.csv").exists()
    assert run_graph(config).result.success


@pytest.mark.parametrize(
    ("copy", "set_aside", "kept"),
    [("a (1).csv", "a (1).csv", "a.csv"), ("0 copy.csv", "a.csv", "0 copy.csv")],
)
def test_a_file_landed_twice_counts_once(isolated_env, tmp_path, copy, set_aside, kept):
    """The same bytes under a second name would count every line twice: one of the two is
    set aside (the one later by partition key, whichever runs first), moved to quarantine
    with the name of the file whose lines count, and the next run uses the other alone."""
    config = setup_landing(isolated_env, tmp_path, extra={f"transactions/{copy}": TRANSACTIONS})
    first = run_graph(config)
    assert not first.result.success
    failed = [
        e
        for e in first.result.get_asset_check_evaluations()
        if e.check_name == "files_readable" and not e.passed
    ]
    assert len(failed) == 1
    assert f"{set_aside}: the same bytes as landing file '{kept}', whose lines count" in (
        failed[0].description
    )
    assert quarantined_files(isolated_env, "raw_transactions") == [set_aside]
    landing = isolated_env / "landing" / "mini" / "transactions"
    assert sorted(p.name for p in landing.iterdir()) == [kept]
    second = run_graph(config)
    assert second.result.success
    lines = pl.read_parquet(isolated_env / "mini" / "assets" / "raw_transactions" / "*.parquet")
    assert lines.filter(~pl.col("_quarantined")).height == TRANSACTIONS.count("\n") - 1


def test_demo_json_reports_an_error_before_any_run_as_json(isolated_env, tmp_path):
    """A config refused when it loads stops the demo before any run: ``--json`` still
    prints one JSON document whose ``error`` says why, and exits 1."""
    import json

    from click.testing import CliRunner

    from churn_assets.cli import main

    config = setup_landing(isolated_env, tmp_path)
    Path(config).write_text(Path(config).read_text() + "models:\n  cv_folds: 1\n")
    result = CliRunner().invoke(main, ["demo", "--dataset", config, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["success"] is False
    assert report["error"].startswith("DatasetConfigError:")
    assert "cv_folds" in report["error"]


def test_file_names_giving_one_partition_key_each_get_one(isolated_env, tmp_path):
    """'b c.csv' and 'b_c.csv' both make the key 'b_c.csv': the file named so keeps it, the
    other has a hash of its path added, and both are ingested. They used to stop every
    landing tick and every partition run of the data set until one was renamed."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.ingest import transaction_files

    other = TRANSACTIONS.replace("I1,", "J1,")
    config = setup_landing(
        isolated_env,
        tmp_path,
        extra={"transactions/b c.csv": TRANSACTIONS, "transactions/b_c.csv": other},
    )
    landing = isolated_env / "landing" / "mini"
    files = transaction_files(load_dataset_config(config), str(landing))
    names = {k: u.rsplit("/", 1)[-1] for k, u in files.items()}
    assert names["a.csv"] == "a.csv" and names["b_c.csv"] == "b_c.csv"
    (spaced,) = [k for k, n in names.items() if n == "b c.csv"]
    assert spaced.startswith("b_c.csv--") and len(spaced) == len("b_c.csv--") + 8
    assert transaction_files(load_dataset_config(config), str(landing)) == files  # stable


def test_a_file_rewritten_while_its_run_reads_it_is_not_judged(isolated_env, tmp_path):
    """A landing file rewritten in place while its landing run reads it: what the run read is
    not what is there. The run failed ("unreadable" or a cut-off line, with a failure alert
    about a file that is fine) and quarantined the torn copy, or wrote the lines it happened
    to read; now it writes nothing, quarantines nothing, its checks warn that the file was
    not judged, and the run succeeds: the landing sensor sees the change and has it read
    again whole."""
    import threading

    from churn_assets.lib.ingest import file_stamp

    config = setup_landing(isolated_env, tmp_path)
    landing = isolated_env / "landing" / "mini"
    growing = landing / "transactions" / "b.csv"
    growing.write_text(TRANSACTIONS)
    stop = threading.Event()

    def rewrite() -> None:  # a writer appending lines, each in two writes, until the run ends
        with growing.open("a") as out:
            n = 0
            while not stop.is_set():
                n += 1
                out.write(f"J{n},C1,2024-02-0")
                out.flush()
                stop.wait(0.002)
                out.write("1 10:00:00,1.0\n")
                out.flush()

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        run = run_all(config, selection=["raw_transactions"])
    finally:
        stop.set()
        writer.join()
    assert run.result.success
    for check in ("files_readable", "values_parse", "expectations_met"):
        evaluation = run.check("raw_transactions", check)
        assert evaluation.severity.value == "WARN", check
        assert "not judged: b.csv changed while this run read it" in evaluation.description
    stored = sorted(
        p.name for p in (isolated_env / "mini" / "assets" / "raw_transactions").glob("*")
    )
    assert stored == ["a.csv.parquet"]  # the unchanged file only
    assert not (isolated_env / "mini" / "quarantine").exists()
    assert growing.exists() and file_stamp(str(growing)) is not None


def test_a_file_still_being_written_when_judged_stays_in_the_landing_zone(tmp_path):
    """A slow writer's file read half-written fails its checks, but by the time it would be
    moved to quarantine it has grown: what was judged is not what is there, so it stays in
    the landing zone for the next tick (it was moved whole, with the reason of its cut-off
    last line, and the landing zone lost a good file)."""
    import polars as pl

    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.ingest import ingest_transactions
    from churn_assets.lib.quarantine import release_landing_files

    landing = tmp_path / "landing"
    (landing / "transactions").mkdir(parents=True)
    (landing / "customers").mkdir()
    cfg_path = tmp_path / "mini.yaml"
    cfg_path.write_text(CONFIG)
    slow = landing / "transactions" / "slow.csv"
    half = TRANSACTIONS[: TRANSACTIONS.index("\n", 60) + 8]  # cut within a line
    slow.write_text(half)
    res = ingest_transactions(load_dataset_config(str(cfg_path)), str(landing))
    assert res.parse_errors  # the cut-off line
    bad = pl.DataFrame({"_source_file": ["slow.csv"]})
    slow.write_text(TRANSACTIONS)  # the writer finishes
    moved = release_landing_files(res, bad, True, str(landing), {}, str(tmp_path / "q"))
    assert moved == [] and res.changed_since_read == ["slow.csv"]
    assert slow.read_text() == TRANSACTIONS and not (tmp_path / "q").exists()
    # unchanged since it was read: moved, as before
    res = ingest_transactions(load_dataset_config(str(cfg_path)), str(landing))
    assert release_landing_files(res, bad, True, str(landing), {}, str(tmp_path / "q")) == [
        "slow.csv"
    ]
    assert not slow.exists()
