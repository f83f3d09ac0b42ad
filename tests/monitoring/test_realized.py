"""Realized performance on small frames with known answers (churn_assets/lib/realized.py):
outcomes with the training label definitions, metrics, deciles, the verdict, snapshots in
storage and the report, and landing a generated history in two steps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from churn_assets.lib import realized as rz
from churn_assets.lib.storage import Storage

CUTOFF = dt.date(2024, 6, 1)
HORIZON = 30


def tx(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """Raw transactions (customer, ISO timestamp, amount); negative amounts are returns."""
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": [dt.datetime.fromisoformat(r[1]) for r in rows],
            "amount": [float(r[2]) for r in rows],
            "invoice_id": [f"I{i}" for i in range(len(rows))],
        }
    ).with_columns(
        (pl.col("amount") < 0).alias("is_return"),
        pl.lit(None, dtype=pl.String).alias("category"),
        pl.lit(None, dtype=pl.String).alias("country"),
    )


# ------------------------------------------------------------------------------ outcomes


def test_outcomes_follow_the_training_label_definition():
    transactions = tx(
        [
            ("a", "2024-05-20 10:00", 50),  # before the cut-off: not an outcome
            ("a", "2024-06-10 10:00", 30),  # bought in the horizon: retained
            ("a", "2024-06-12 10:00", -10),  # a return nets off the sales
            ("b", "2024-06-05 09:00", -20),  # a return only: no purchase, churned, sales 0
            ("c", "2024-07-01 00:00", 99),  # first moment after the 30-day horizon
            ("d", "2024-06-01 00:00", 12),  # first moment of the horizon: retained
        ]
    )
    ids = pl.Series("customer_id", ["a", "b", "c", "d", "e"])  # e: no transaction at all
    out = rz.observed_outcomes(transactions, ids, CUTOFF, HORIZON).sort("customer_id")
    assert out["churned"].to_list() == [0, 1, 1, 0, 1]
    assert out["total_sales"].to_list() == [20.0, 0.0, 0.0, 12.0, 0.0]


def test_outcomes_match_the_training_table_labels():
    """The same customers and cut-off give the labels customer_features trains on."""
    from churn_assets.lib.features import FeatureParams, build_customer_features

    transactions = tx(
        [
            ("a", "2024-05-01 10:00", 40),
            ("a", "2024-06-03 10:00", 25),
            ("b", "2024-04-01 10:00", 80),
            ("b", "2024-06-20 10:00", -5),
            ("c", "2024-05-30 10:00", 15),
            ("c", "2024-07-05 10:00", 15),
        ]
    )
    params = FeatureParams(cutoff=CUTOFF, horizon_days=HORIZON, categories=())
    table = build_customer_features(None, transactions, params).sort("customer_id")
    out = rz.observed_outcomes(transactions, table["customer_id"], CUTOFF, HORIZON)
    assert (
        out.sort("customer_id")
        .select("churned", "total_sales")
        .equals(table.select("churned", "total_sales"))
    )


def test_evaluable_until_is_the_label_cutoff_rule():
    transactions = tx([("a", "2024-01-01 10:00", 5), ("a", "2024-07-10 18:00", 5)])
    # the last day 2024-07-10 is covered: a 30-day horizon fits after 2024-06-11
    assert rz.evaluable_until(transactions, HORIZON) == dt.date(2024, 6, 11)
    assert rz.evaluable_until(transactions.clear(), HORIZON) is None


# ------------------------------------------------------------------------------- metrics


def joined(y: list[int], p: list[float], value=None, sales=None) -> pl.DataFrame:
    n = len(y)
    return pl.DataFrame(
        {
            "churned": y,
            "churn_probability": p,
            "expected_total_sales": value if value is not None else [None] * n,
            "total_sales": sales if sales is not None else [0.0] * n,
        },
        schema_overrides={"expected_total_sales": pl.Float64},
    )


def test_perfect_scores_give_roc_auc_one_and_exact_values():
    y = [0] * 20 + [1] * 20
    p = [0.1] * 20 + [0.9] * 20
    sales = [float(i) for i in range(40)]
    out = rz.realized_metrics(joined(y, p, sales, sales), threshold=0.5)
    assert out["n"] == 40 and out["positives"] == 20
    assert out["roc_auc"] == 1.0 and out["pr_auc"] == 1.0
    assert out["brier"] == pytest.approx(0.01)
    assert out["precision"] == out["recall"] == 1.0
    assert out["observed_churn_rate"] == out["expected_churn_rate"] == 0.5
    assert out["value_mae"] == 0.0 and out["value_r2"] == 1.0


def test_inverted_scores_give_roc_auc_zero_and_no_value_without_a_value_model():
    y = [0] * 10 + [1] * 10
    p = [0.9] * 10 + [0.1] * 10
    out = rz.realized_metrics(joined(y, p), threshold=0.5)
    assert out["roc_auc"] == 0.0
    assert "value_mae" not in out and "value_r2" not in out


def test_one_class_leaves_ranking_metrics_empty():
    out = rz.realized_metrics(joined([0] * 12, [0.2] * 12), threshold=0.5)
    assert out["roc_auc"] is None and out["pr_auc"] is None
    assert out["brier"] == pytest.approx(0.04)


def test_deciles_compare_expected_and_observed_rates():
    p = np.arange(100) / 100.0  # 0.00 .. 0.99
    y = (p >= 0.5).astype(int)
    deciles = rz.decile_calibration(y, p)
    assert [d["n"] for d in deciles] == [10] * 10
    assert [d["decile"] for d in deciles] == list(range(1, 11))
    assert deciles[0]["expected_rate"] == pytest.approx(0.045)
    assert [d["observed_rate"] for d in deciles] == [0.0] * 5 + [1.0] * 5
    assert deciles[-1]["min_probability"] == 0.9 and deciles[-1]["max_probability"] == 0.99
    # |0.045-0| |0.145-0| ... |0.445-0| then |0.545-1| ... |0.945-1|: mean 0.25
    assert rz.calibration_error(deciles) == pytest.approx(0.25)


def test_deciles_of_few_rows_are_one_row_each():
    deciles = rz.decile_calibration(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.4]))
    assert [(d["n"], d["observed_rate"]) for d in deciles] == [(1, 0.0), (1, 1.0), (1, 1.0)]


def test_deployment_metrics_come_from_the_manifest():
    manifest = {
        "models": {
            "classifier": {
                "candidate": "lightgbm",
                "threshold": 0.3,
                "metrics": {"roc_auc": 0.91, "pr_auc": 0.8, "brier": 0.07, "f1": 0.7},
            },
            "regressor": {"candidate": "ridge", "metrics": {"mae": 12.0, "r2": 0.6}},
        },
        "base_rates": {"churn_probability": 0.2},
    }
    out = rz.deployment_metrics(manifest)
    assert out["roc_auc"] == 0.91 and out["value_r2"] == 0.6 and out["value_mae"] == 12.0
    assert out["candidate"] == "lightgbm" and out["training_churn_rate"] == 0.2
    assert rz.deployment_metrics(None) == {}


# ------------------------------------------------------------------------------- verdict


def realized(auc: float | None, n: int = 200, positives: int = 40) -> dict:
    return {"roc_auc": auc, "n": n, "positives": positives}


def test_verdict_holds_within_the_margin():
    v = rz.judge(realized(0.86), {"roc_auc": 0.90}, floor=0.7, margin=0.05)
    assert v.passed and v.judged and "holds" in v.reason


def test_verdict_fails_more_than_the_margin_below_deployment_time():
    v = rz.judge(realized(0.80), {"roc_auc": 0.90}, floor=0.7, margin=0.05)
    assert not v.passed
    assert "0.1000 below the deployment-time 0.9000 (margin 0.05)" in v.reason


def test_verdict_fails_below_the_floor_even_without_a_deployment_figure():
    v = rz.judge(realized(0.65), {}, floor=0.7, margin=0.05)
    assert not v.passed and "below the floor 0.70" in v.reason


def test_verdict_does_not_judge_too_few_outcomes():
    v = rz.judge(realized(0.2, n=200, positives=5), {"roc_auc": 0.9}, floor=0.7, margin=0.05)
    assert v.passed and not v.judged and "5 churned" in v.reason
    assert rz.judge(realized(None), {"roc_auc": 0.9}, floor=0.7, margin=0.05).passed


# ----------------------------------------------------------------- snapshots and report


def deploy(storage: Storage, version: str, roc_auc: float, current: bool = True) -> None:
    """A minimal version manifest (and pointer): what the report reads of a deployment."""
    storage.write_json(
        f"deployments/versions/{version}/manifest.json",
        {
            "models": {
                "classifier": {
                    "candidate": "logistic_regression",
                    "threshold": 0.5,
                    "metrics": {"roc_auc": roc_auc, "pr_auc": 0.8, "brier": 0.1},
                }
            }
        },
    )
    if current:
        storage.write_json("deployments/current.json", {"version": version})


def population(n: int = 60) -> tuple[pl.DataFrame, pl.Series]:
    """Transactions where the first half of ``n`` customers buy again after the cut-off
    and the second half do not, and a scoring that ranks them correctly."""
    ids = [f"C{i:03d}" for i in range(n)]
    rows = [(c, "2024-05-15 12:00", 10.0) for c in ids]
    rows += [(c, "2024-06-10 12:00", 25.0) for c in ids[: n // 2]]
    rows += [("zz", "2024-07-05 12:00", 1.0)]  # the data reaches past the 30-day horizon
    proba = pl.Series("churn_probability", [0.1] * (n // 2) + [0.8] * (n - n // 2))
    return tx(rows), proba


def scores(proba: pl.Series, version: str, value: bool = True) -> pl.DataFrame:
    n = len(proba)
    return pl.DataFrame(
        {
            "customer_id": [f"C{i:03d}" for i in range(n)],
            "churn_probability": proba,
            "churn_label": (proba >= 0.5).cast(pl.Int8),
            "expected_total_sales": [25.0 if p < 0.5 else 0.0 for p in proba] if value else None,
            "model_version": [version] * n,
        },
        schema_overrides={"expected_total_sales": pl.Float64},
    )


def test_snapshots_are_listed_by_cutoff_then_version(tmp_path: Path):
    storage = Storage(str(tmp_path))
    _, proba = population()
    for version, cutoff in (("v2", dt.date(2024, 6, 1)), ("v1", dt.date(2024, 6, 1))):
        rz.write_snapshot(
            storage,
            scores(proba, version),
            version=version,
            cutoff=cutoff,
            threshold=0.5,
            horizon_days=HORIZON,
        )
    rz.write_snapshot(
        storage,
        scores(proba, "v1"),
        version="v1",
        cutoff=dt.date(2024, 5, 1),
        threshold=0.5,
        horizon_days=HORIZON,
    )
    refs = rz.list_snapshots(storage)
    assert [(r.cutoff.isoformat(), r.version) for r in refs] == [
        ("2024-05-01", "v1"),
        ("2024-06-01", "v1"),
        ("2024-06-01", "v2"),
    ]
    snap = storage.read_parquet(refs[0].path)
    assert snap.columns == [*rz.SCORE_COLUMNS, "cutoff", "threshold", "horizon_days", "scored_at"]
    assert snap["cutoff"][0] == dt.date(2024, 5, 1) and snap["horizon_days"][0] == HORIZON


def test_report_waits_then_evaluates_then_judges(tmp_path: Path):
    storage = Storage(str(tmp_path))
    transactions, proba = population()
    assert rz.evaluate_snapshots(storage, transactions, HORIZON, floor=0.7)["status"] == (
        "no_snapshots"
    )
    deploy(storage, "v1", roc_auc=0.95)
    rz.write_snapshot(
        storage, scores(proba, "v1"), version="v1", cutoff=CUTOFF, threshold=0.5, horizon_days=30
    )
    early = transactions.filter(pl.col("timestamp") < dt.datetime(2024, 6, 20))
    waiting = rz.evaluate_snapshots(storage, early, HORIZON, floor=0.7)
    assert waiting["status"] == "waiting"
    assert waiting["pending"] == [
        {"version": "v1", "cutoff": "2024-06-01", "evaluable_on": "2024-07-01"}
    ]

    report = rz.evaluate_snapshots(storage, transactions, HORIZON, floor=0.7, margin=0.05)
    assert report["status"] == "ok" and report["pending"] == []
    latest = report["latest"]
    assert latest["realized"]["n"] == 60 and latest["realized"]["positives"] == 30
    assert latest["realized"]["roc_auc"] == 1.0
    assert latest["realized"]["value_mae"] == 0.0
    assert latest["deployment"]["roc_auc"] == 0.95
    assert report["verdict"]["passed"] and not report["retraining_requested"]
    table = rz.summary_rows(report)
    assert table.select("version", "cutoff", "roc_auc", "deployed_roc_auc").row(0) == (
        "v1",
        "2024-06-01",
        1.0,
        0.95,
    )


def test_a_degraded_model_fails_and_requests_retraining_while_deployed(tmp_path: Path):
    storage = Storage(str(tmp_path))
    transactions, proba = population()
    deploy(storage, "v1", roc_auc=0.95)
    flipped = 0.9 - proba  # ranks churners lowest: ROC-AUC 0
    rz.write_snapshot(
        storage, scores(flipped, "v1"), version="v1", cutoff=CUTOFF, threshold=0.5, horizon_days=30
    )
    report = rz.evaluate_snapshots(storage, transactions, HORIZON, floor=0.7, margin=0.05)
    assert report["latest"]["realized"]["roc_auc"] == 0.0
    assert not report["verdict"]["passed"] and report["retraining_requested"]
    assert "below the floor" in report["verdict"]["reason"]

    deploy(storage, "v2", roc_auc=0.9)  # a newer version took over meanwhile
    report = rz.evaluate_snapshots(storage, transactions, HORIZON, floor=0.7, margin=0.05)
    assert not report["verdict"]["passed"] and not report["retraining_requested"]
    assert "v2 is deployed since: no retraining requested" in report["verdict"]["reason"]


def test_latest_snapshot_is_judged_and_each_version_reported(tmp_path: Path):
    storage = Storage(str(tmp_path))
    transactions, proba = population()
    deploy(storage, "v1", roc_auc=0.95, current=False)
    deploy(storage, "v2", roc_auc=0.95)
    early = CUTOFF - dt.timedelta(days=10)
    for version, cutoff in (("v1", early), ("v1", CUTOFF), ("v2", CUTOFF)):
        rz.write_snapshot(
            storage,
            scores(proba, version),
            version=version,
            cutoff=cutoff,
            threshold=0.5,
            horizon_days=HORIZON,
        )
    report = rz.evaluate_snapshots(storage, transactions, HORIZON, floor=0.7)
    assert len(report["snapshots"]) == 3
    assert (report["latest"]["version"], report["latest"]["cutoff"]) == ("v2", "2024-06-01")
    assert {v: e["cutoff"] for v, e in report["by_version"].items()} == {
        "v1": "2024-06-01",
        "v2": "2024-06-01",
    }


def test_stored_scoring_cutoff_skips_quarantined_rows(tmp_path: Path):
    storage = Storage(str(tmp_path))
    assert rz.stored_scoring_cutoff(storage) is None
    frame = tx([("a", "2024-06-10 23:00", 5), ("a", "2030-01-01 00:00", 5)]).with_columns(
        pl.Series("_quarantined", [False, True])
    )
    storage.write_parquet("assets/raw_transactions.parquet", frame)
    assert rz.stored_scoring_cutoff(storage) == dt.date(2024, 6, 11)


def test_land_window_lands_every_row_once(tmp_path: Path):
    from churn_assets.lib.generator import generate

    summary = generate(str(tmp_path / "stage"), customers=150, days=120, seed=3)
    split = summary.end - dt.timedelta(days=30)
    landing = tmp_path / "landing"
    first = rz.land_window(str(tmp_path / "stage"), str(landing), end=split)
    later = rz.land_window(
        str(tmp_path / "stage"), str(landing), start=split, batch_name="batch-0001"
    )
    customers = pl.read_parquet(landing / "customers" / "*.parquet")
    transactions = pl.read_parquet(landing / "transactions" / "*.parquet")
    assert first["customers"] + later["customers"] == customers.height == 150
    assert customers["customer_id"].n_unique() == 150
    assert first["transactions"] + later["transactions"] == transactions.height
    assert transactions.height == summary.transactions
    before = pl.read_parquet(landing / "transactions" / "batch-0000.parquet")
    assert before["timestamp"].max() < dt.datetime.combine(split, dt.time())
    after = pl.read_parquet(landing / "customers" / "batch-0001.parquet")
    assert after["signup_date"].min() >= split
