"""`churn remove-file`: taking an ingested file's lines back. Deleting its stored
partition by hand (what the docs said) left the Dagster partition behind, and every later
run warned about a partition 'not materialized'."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
from click.testing import CliRunner

from churn_assets.cli import main
from tests.data.test_bad_input import setup_landing
from tests.data.test_transaction_partitions import run

LATE = "invoice_id,customer_id,timestamp,amount\nI20,C2,2024-03-20 10:00:00,70.0\n"


def _spent(result, customer: str) -> float:
    """The customer's net spend in the current features of ``result``."""
    features = result.output_for_node("current_features")
    return features.filter(pl.col("customer_id") == customer)["monetary_total"].item()


def _warnings(instance: dg.DagsterInstance, text: str) -> list[str]:
    return [
        e.message
        for r in instance.get_runs()
        for e in instance.all_logs(r.run_id)
        if e.level >= 30 and text in e.message
    ]


def test_a_removed_file_takes_its_lines_back_without_a_warning(
    isolated_env: Path, tmp_path: Path, monkeypatch
):
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/b.csv": LATE})
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    first = run(config, instance)
    assert first.success
    assert _spent(first, "C2") == 80.0  # 15.5 - 5.5 + 70 (b.csv)

    unknown = CliRunner().invoke(main, ["remove-file", "nope.csv", "--dataset", config])
    assert unknown.exit_code == 1
    assert "no ingested transaction file 'nope.csv' in data set mini" in unknown.output
    assert "(its files: a.csv, b.csv)" in unknown.output

    # a landing run of b.csv going (or queued): removing the file underneath it
    # failed that run ("partition range b.csv to b.csv is not valid")
    going = dg.DagsterRun(
        job_name="ingest_features_drift",
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": "b.csv", "churn/dataset": "mini"},
    )
    instance.add_run(going)
    busy = CliRunner().invoke(main, ["remove-file", "b.csv", "--dataset", config])
    assert busy.exit_code == 1
    assert f"a run is ingesting 'b.csv' now (b.csv: run {going.run_id[:8]} " in busy.output
    assert "(ingest_features_drift, started)" in busy.output
    assert "nothing was removed" in busy.output
    assert instance.get_dynamic_partitions("transaction_files") == ["a.csv", "b.csv"]
    instance.report_run_canceled(going)

    done = CliRunner().invoke(main, ["remove-file", "b.csv", "--dataset", config])
    assert done.exit_code == 0, done.output
    assert "removed b.csv (1 stored line(s)); its landing file is still in the landing zone" in (
        done.output
    )
    assert instance.get_dynamic_partitions("transaction_files") == ["a.csv"]
    parts = isolated_env / "mini" / "assets" / "raw_transactions"
    assert sorted(p.name for p in parts.iterdir()) == ["a.csv.parquet"]

    (isolated_env / "landing" / "mini" / "transactions" / "b.csv").unlink()
    again = run(config, instance, only_new=True)
    assert again.success
    assert _spent(again, "C2") == 10.0  # b.csv's line is gone from the features
    assert _warnings(instance, "not materialized") == []
