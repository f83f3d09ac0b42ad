"""Realized performance on the real UCI Online Retail data: ``churn demo`` with
``CHURN_DEMO_SIMULATE_HORIZON`` scores at an earlier cut-off and lets the horizon pass within
the data, on a copy cut in storage, with the shipped model settings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from churn_assets.lib import realized as rz
from tests.integration.test_real_datasets import retail_reference

pytestmark = pytest.mark.integration

HORIZON = 91


def test_simulation_cutoffs_keep_the_training_labels_before_the_scores_horizon():
    last = dt.date(2011, 12, 9)
    # the shipped cut-off's labels reach into the scored horizon: one horizon earlier
    assert rz.simulation_cutoffs(last, HORIZON, dt.date(2011, 9, 9)) == (
        dt.date(2011, 9, 10),
        dt.date(2011, 6, 11),
    )
    # an earlier configured cut-off is kept, none gives one horizon before scoring
    assert rz.simulation_cutoffs(last, HORIZON, dt.date(2011, 3, 1))[1] == dt.date(2011, 3, 1)
    assert rz.simulation_cutoffs(last, HORIZON, None)[1] == dt.date(2011, 6, 11)


def test_a_users_files_are_copied_cut_at_the_scoring_cutoff_and_left_alone(tmp_path: Path):
    """A user's own config with a customer table (relative paths, latin-1, semicolons): the
    copy before the cut-off reads back with the derived config; the rest lands later."""
    from churn_assets.lib.datasets import DatasetConfig
    from churn_assets.lib.ingest import ingest_customers, ingest_transactions

    landing = tmp_path / "landing"
    (landing / "src").mkdir(parents=True)
    customers = "id;joined;city\nA;2024-01-02;Zürich\nB;2024-05-20;Köln\nC;;Wien\n"
    transactions = "who;at;eur\n" + "".join(
        f"{c};{d:%Y-%m-%d} 10:00;{v}\n"
        for c, d, v in [
            ("A", dt.date(2024, 1, 5), 10),
            ("A", dt.date(2024, 3, 1), 20),
            ("C", dt.date(2024, 4, 1), 5),
            ("B", dt.date(2024, 6, 2), 7),
            ("A", dt.date(2024, 6, 20), 9),
            ("C", dt.date(2024, 6, 30), 4),
        ]
    )
    (landing / "src" / "customers.csv").write_bytes(customers.encode("latin-1"))
    (landing / "src" / "tx.csv").write_bytes(transactions.encode("latin-1"))
    sources = {p.name: p.read_bytes() for p in (landing / "src").iterdir()}
    cfg = DatasetConfig.model_validate(
        {
            "name": "mine",
            "customers": {
                "path": "src/customers.csv",
                "encoding": "latin-1",
                "separator": ";",
                "id_column": "id",
                "signup_date": {"name": "signup", "source": "joined", "type": "date"},
                "attributes": [{"name": "city"}],
            },
            "transactions": {
                "path": "src/tx.csv",
                "encoding": "latin-1",
                "separator": ";",
                "customer_id": "who",
                "timestamp": "at",
                "timestamp_format": "%Y-%m-%d %H:%M",
                "amount": "eur",
            },
            "labels": {"source": "transactions", "horizon_days": 30},
        }
    )
    split = rz.split_sources(cfg, str(landing), str(tmp_path / "stage"))
    assert (split.cutoff, split.training_cutoff) == (dt.date(2024, 6, 1), dt.date(2024, 5, 2))
    assert split.history == (dt.date(2024, 1, 5), dt.date(2024, 7, 1))
    assert split.landed_first == {"transactions": 3, "customers": 3}
    assert split.held_back == {"transactions": 3, "customers": 0}
    derived = DatasetConfig.model_validate(split.config)
    assert derived.labels.cutoff == split.training_cutoff
    tx = ingest_transactions(derived, str(landing)).frame
    assert tx["timestamp"].max() < dt.datetime(2024, 6, 1)
    assert sorted(ingest_customers(derived, str(landing)).frame["city"].to_list()) == [
        "Köln",
        "Wien",
        "Zürich",
    ]
    assert rz.land_held_back(split) == ["transactions/batch-0001-0000-tx.csv"]
    assert ingest_transactions(derived, str(landing)).frame.height == 6
    assert {p.name: p.read_bytes() for p in (landing / "src").iterdir()} == sources


def test_the_copy_is_cut_where_ingestion_reads_the_times(tmp_path: Path):
    """Times with UTC offsets failed the copy ("no readable transaction timestamps"), and
    local times of a ``timezone`` were cut by their wall clock, hours from the cut-off that
    ingestion computes in UTC. The copy now reads them as ingestion does."""
    from churn_assets.lib.datasets import DatasetConfig

    landing = tmp_path / "landing"
    (landing / "src").mkdir(parents=True)
    rows = [
        ("A", "2024-01-05T10:00:00+05:30"),
        ("B", "2024-03-01T09:00:00Z"),
        ("A", "2024-05-31T22:00:00-05:00"),  # 2024-06-01 03:00 UTC: after the cut-off
        ("C", "2024-05-31 20:00:00"),  # naive: New York, 2024-06-01 00:00 UTC
        ("B", "2024-05-31 19:00:00"),  # 23:00 UTC: before
        ("C", "2024-06-30T12:00:00Z"),
    ]
    (landing / "src" / "tx.csv").write_text(
        "who,at,eur\n" + "".join(f"{c},{t},5\n" for c, t in rows)
    )
    cfg = DatasetConfig.model_validate(
        {
            "name": "mine",
            "transactions": {
                "path": "src/tx.csv",
                "customer_id": "who",
                "timestamp": "at",
                "amount": "eur",
                "timezone": "America/New_York",
            },
            "labels": {"source": "transactions", "horizon_days": 30},
        }
    )
    split = rz.split_sources(cfg, str(landing), str(tmp_path / "stage"))
    assert split.cutoff == dt.date(2024, 6, 1)
    assert split.landed_first == {"transactions": 3, "customers": 0}
    assert split.held_back == {"transactions": 3, "customers": 0}


def test_online_retail_realized_after_a_simulated_horizon(real_data: Path, isolated_env: Path):
    """The whole graph on the invoice lines before 2011-09-10, then the rest lands and
    realized_performance measures the deployed model on what the customers did next. Shipped
    model settings (every default candidate, 5 CV folds): about a minute on 2 cores."""
    from churn_assets.demo import run_demo, source_simulation_refusal
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import get_settings

    source = real_data / "online_retail.csv"
    before = source.stat()
    report = run_demo("online_retail", simulate_horizon=True)
    assert report["success"], report["error"]
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (
        before.st_size,
        before.st_mtime_ns,
    )

    sim = report["simulation"]
    scored = dt.date.fromisoformat(sim["scored_at_cutoff"])
    trained = dt.date.fromisoformat(sim["trained_at_cutoff"])
    assert sim["history"] == ["2010-12-01", "2011-12-10"]
    assert scored == dt.date(2011, 9, 10)
    # the model's labels end before the scores' horizon starts
    assert trained + dt.timedelta(days=HORIZON) <= scored
    assert report["features"]["cutoff"] == trained.isoformat()
    assert sim["landed_first"]["transactions"] + sim["landed_later"]["transactions"] == 541_909
    first_raw = report["assets"]["raw_transactions"]["rows"]
    assert first_raw == sim["landed_first"]["transactions"]
    assert sim["outcomes_run"]["success"]
    # the landing run ingests the new file alone (its own partition), once
    later_raw = sim["outcomes_run"]["assets"]["raw_transactions"]
    assert later_raw["rows"] == sim["landed_later"]["transactions"]
    assert later_raw["partitions"] == 1

    realized = report["realized"]
    assert realized["status"] == "ok", realized
    assert realized["pending"] == []
    version = report["deployment"]["version"]
    entry = realized["by_version"][version]
    assert entry["cutoff"] == scored.isoformat()
    got, then = entry["realized"], entry["deployment"]
    for key in ("roc_auc", "pr_auc", "brier", "value_mae", "value_r2"):
        assert got[key] is not None and then[key] is not None, key
    # better than chance, and no better than a churn model on invoice lines plausibly is:
    # a realized ROC-AUC near 1 would mean the outcomes leaked into training
    assert 0.65 <= got["roc_auc"] <= 0.9
    assert abs(got["roc_auc"] - then["roc_auc"]) <= 0.1
    assert 0.0 < got["brier"] < 0.25
    assert realized["verdict"]["judged"]

    # the outcomes are those of the horizon after the scoring cut-off, counted independently
    known, churned = retail_reference(source, scored.isoformat(), HORIZON)
    snapshot = pl.read_parquet(
        sim["outcomes_run"]["assets"]["realized_performance"]["metadata"]["snapshot_file"]
    )
    ids = {i.removesuffix(".0") for i in snapshot["customer_id"].to_list()}
    assert ids == known and got["n"] == len(known)
    assert got["positives"] == len(churned)

    # a second simulation on the same storage would score with a model deployed before
    cfg = load_dataset_config("online_retail")
    assert "already holds a deployment" in (source_simulation_refusal(cfg, get_settings()) or "")
