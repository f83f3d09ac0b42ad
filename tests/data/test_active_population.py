"""`labels.active_within_days`: customers who lapsed before a cut-off are left out of the
labelled features (so out of training), of current_features (so out of scoring, drift and
the sidecar's lookups); without it every customer known before the cut-off stays, and the
training set's metadata says how many of them had lapsed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from churn_assets.lib.datasets import DatasetConfigError, load_dataset_config
from churn_assets.lib.feature_sets import features_at, population, usable
from churn_assets.lib.ingest import ingest_customers, ingest_transactions
from tests.data.test_bad_input import CONFIG, INGEST, setup_landing
from tests.helpers import run_graph

ACTIVE = CONFIG.replace("  horizon_days: 30\n", "  horizon_days: 30\n  active_within_days: 30\n")


def _tables(storage: Path) -> dict[str, pl.DataFrame]:
    assets = storage / "mini" / "assets"
    return {n: pl.read_parquet(assets / f"{n}.parquet") for n in INGEST[2:]}


def test_lapsed_customers_are_left_out_of_features_and_current_features(isolated_env, tmp_path):
    # cut-off 2024-03-01: C1 last bought 19 days before, C3 5 days, C2 39 days, C4 59 days;
    # current_features (as of 2024-03-13): C1 3 days, C3 1 day, C2 51 days, C4 71 days
    config = setup_landing(isolated_env, tmp_path)
    every = run_graph(config, selection=INGEST)
    assert every.result.success
    tables = _tables(isolated_env)
    assert tables["customer_features"]["customer_id"].to_list() == ["C1", "C2", "C3", "C4"]
    assert tables["current_features"]["customer_id"].to_list() == ["C1", "C2", "C3", "C4"]

    Path(config).write_text(ACTIVE)
    active = run_graph(config, selection=INGEST)
    assert active.result.success
    tables = _tables(isolated_env)
    labelled = tables["customer_features"]
    assert labelled["customer_id"].to_list() == ["C1", "C3"]
    assert labelled["churned"].to_list() == [0, 0]  # both bought again after the cut-off
    assert tables["current_features"]["customer_id"].to_list() == ["C1", "C3"]
    assert tables["current_features"]["recency_days"].max() <= 30


def test_the_boundary_and_customers_who_never_bought(isolated_env, tmp_path):
    customers = (
        "customer_id,signup_date,plan,age,monthly_fee\n"
        "EXACT,2023-01-01,monthly,30,10\n"
        "LATE,2023-01-01,monthly,30,10\n"
        "NEWBIE,2024-02-20,monthly,30,10\n"
        "OLDIE,2023-06-01,monthly,30,10\n"
    )
    transactions = (
        "invoice_id,customer_id,timestamp,amount\n"
        "I1,EXACT,2024-01-31 00:00:00,10\n"  # exactly 30 days before the cut-off
        "I2,LATE,2024-01-30 23:00:00,10\n"  # 30 days and one hour before
        "I3,EXACT,2024-03-05 00:00:00,10\n"
    )
    config = Path(setup_landing(isolated_env, tmp_path, customers, transactions))
    config.write_text(ACTIVE)
    cfg = load_dataset_config(str(config))
    landing = str(isolated_env / "landing" / "mini")
    cust, _ = usable(ingest_customers(cfg, landing).frame)
    tx, _ = usable(ingest_transactions(cfg, landing).frame)
    frame = features_at(cfg, cust, tx, dt.date(2024, 3, 1))
    # NEWBIE never bought but signed up 10 days before: active; OLDIE signed up 9 months ago
    assert frame["customer_id"].to_list() == ["EXACT", "NEWBIE"]
    assert frame["recency_days"].to_list() == [30.0, 10.0]
    assert "labels.active_within_days" in population(cfg, frame)

    config.write_text(CONFIG)
    cfg = load_dataset_config(str(config))
    frame = features_at(cfg, cust, tx, dt.date(2024, 3, 1))
    assert frame.height == 4
    text = population(cfg, frame)
    # LATE (30 days and an hour) and OLDIE (signed up 274 days before) lapsed
    assert "2 of 4 had no purchase in the 30 days before it" in text


def test_a_snapshot_config_refuses_the_setting(tmp_path):
    path = tmp_path / "snap.yaml"
    path.write_text(
        "name: snap\ncustomers:\n  path: c.csv\n  id_column: id\n"
        "labels:\n  source: columns\n  churned_column: Exited\n  active_within_days: 30\n"
    )
    with pytest.raises(DatasetConfigError, match="active_within_days needs labels.source"):
        load_dataset_config(str(path))
