"""Every data set shape runs end to end: a churn-only snapshot (no value label), a
value-only config (refused), and a later batch whose top categories change after a
deployment (scoring, drift and the sidecar keep working on the version's own columns)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import yaml

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import BUILTIN_DIR, DatasetConfigError, load_dataset_config
from churn_assets.lib.generator import generate
from churn_assets.lib.storage import Storage
from tests.conftest import BIN, REPO, free_port, wait_http
from tests.helpers import run_graph

pytestmark = pytest.mark.integration

#: Trimmed candidate lists: these tests are about data set shapes, not model quality
#: (the quality of the default candidate list is covered by tests/model).
FAST_MODELS = {
    "classification_candidates": ["logistic_regression", "lightgbm"],
    "regression_candidates": ["naive_baseline", "ridge"],
    "cv_folds": 2,
}


def churn_only_telco(tmp_path: Path) -> str:
    """Telco as a churn-only snapshot: the config without ``total_sales_column``, written
    the way docs/datasets.md describes a snapshot table with a churn label."""
    cfg = yaml.safe_load((BUILTIN_DIR / "telco.yaml").read_text())
    cfg["name"] = "telco_churn_only"
    del cfg["labels"]["total_sales_column"]
    cfg["models"] = dict(FAST_MODELS)
    path = tmp_path / "telco_churn_only.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def run_drafted(cfg: dict, tmp_path: Path, name: str) -> tuple[Path, Any]:
    """A drafted config with the trimmed candidate lists, saved as ``name``.yaml, run
    through the whole graph (which must succeed): the config's path and the run."""
    cfg["models"] = dict(FAST_MODELS)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    run = run_graph(str(config))
    assert run.result.success, run.result.all_events[-1]
    return config, run


def start_sidecar(storage: Path, dataset: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHURN_")},
        "CHURN_STORAGE_URL": str(storage),
        "CHURN_DATASET": dataset,
        "CHURN_SERVING_PORT": str(port),
        "CHURN_SERVING_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [str(BIN / "churn"), "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=60)
    return proc, url


def wait_ready(url: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{url} never became ready")


@contextlib.contextmanager
def serving(storage: Path, dataset: str) -> Iterator[str]:
    """The sidecar on ``dataset``, ready: its URL; stopped on the way out."""
    proc, url = start_sidecar(storage, dataset)
    try:
        wait_ready(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_churn_only_snapshot_runs_end_to_end_and_is_served(tmp_path, isolated_env, real_data):
    config = churn_only_telco(tmp_path)
    run = run_graph(config)
    assert run.result.success, run.result.all_events[-1]
    regression = run.result.output_for_node("regression_models")
    assert regression["applicable"] is False and "no value label" in regression["reason"]
    check = run.check("regression_models", "value_champion_beats_naive")
    assert check.passed and "not applicable" in check.description
    out = run.result.output_for_node("deployed_model_version")
    assert out["promoted"] and set(out["decision"]["roles"]) == {"classifier"}
    s = Storage(str(isolated_env / "telco_churn_only"))
    manifest = dep.read_manifest(s, out["version"])
    assert set(manifest["models"]) == {"classifier", "classifier_fallback"}
    assert manifest["has_value_model"] is False
    assert manifest["models"]["classifier"]["metrics"]["roc_auc"] > 0.8
    scores = run.result.output_for_node("churn_scores")
    assert scores.height == 7043 and scores["expected_total_sales"].null_count() == 7043
    assert scores["churn_probability"].is_between(0, 1).all()
    assert "drift_report" in run.materialized
    features = run.result.output_for_node("customer_features")
    assert "total_sales" not in features.columns
    (event,) = [
        e
        for e in run.result.get_asset_materialization_events()
        if e.asset_key.path == ["customer_features"]
    ]
    # every column but the id and the churn label is a feature
    count = event.step_materialization_data.materialization.metadata["feature_count"].value
    assert count == features.width - 2

    with serving(isolated_env, config) as url:
        answer = httpx.post(
            f"{url}/predict", json={"records": [{"customer_id": "7590-VHVEG"}]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        pred = answer.json()["predictions"][0]
        assert 0 <= pred["churn_probability"] <= 1
        assert pred["expected_total_sales"] is None
        assert "no_value_model" in str(pred), pred
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["degraded_roles"] == {}, health  # no value label is not a degraded role


def test_value_only_config_is_refused_with_a_clear_error(tmp_path):
    cfg = yaml.safe_load((BUILTIN_DIR / "telco.yaml").read_text())
    del cfg["labels"]["churned_column"]
    path = tmp_path / "value_only.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DatasetConfigError, match="value-only data sets are not supported"):
        load_dataset_config(str(path))


def test_new_top_category_after_deployment_breaks_nothing(tmp_path, isolated_env):
    """After a deployment, a batch in which a new category becomes a top category: the
    features gain its share column, and churn_scores, drift_report and /predict still
    answer with the deployed version's own columns."""
    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = dict(FAST_MODELS)
    config = tmp_path / "synthetic.yaml"
    config.write_text(yaml.safe_dump(cfg))
    landing = isolated_env / "landing" / "synthetic"
    generate(str(landing), customers=1200, days=360, seed=11)
    first = run_graph(str(config))
    assert first.result.success
    version = first.result.output_for_node("deployed_model_version")["version"]
    s = Storage(str(isolated_env / "synthetic"))
    manifest = dep.read_manifest(s, version)
    old_categories = manifest["feature_definition"]["categories"]
    assert old_categories

    tx = pl.concat(
        [pl.read_parquet(p) for p in sorted((landing / "transactions").glob("*.parquet"))],
        how="vertical_relaxed",
    )
    last = tx["timestamp"].max()
    ids = tx["customer_id"].unique().sort().head(600).to_list()
    batch = pl.DataFrame(
        {
            "invoice_id": [f"NEW{i:06d}" for i in range(len(ids) * 5)],
            "customer_id": [c for c in ids for _ in range(5)],
            "timestamp": [last + dt.timedelta(hours=1 + i % 48) for i in range(len(ids) * 5)],
            "amount": [5000.0] * (len(ids) * 5),
            "category": ["hoverboards"] * (len(ids) * 5),
            "country": [tx["country"][0]] * (len(ids) * 5),
        }
    ).cast({c: tx.schema[c] for c in tx.columns if c in ("timestamp", "amount")})
    batch.select(tx.columns).write_parquet(landing / "transactions" / "zz-new-category.parquet")

    second = run_graph(
        str(config),
        selection=[
            "raw_customers",
            "raw_transactions",
            "current_features",
            "churn_scores",
            "drift_report",
        ],
    )
    assert second.result.success
    current = second.result.output_for_node("current_features")
    assert "cat_share_hoverboards" not in manifest["features"]["numeric"]
    for c in old_categories:
        assert any(col.endswith(c.lower().replace(" ", "_")) for col in current.columns), c
    scores = second.result.output_for_node("churn_scores")
    assert scores.height == current.height and (scores["model_version"] == version).all()
    drift = second.result.output_for_node("drift_report")
    assert drift["status"] == "ok" and drift["model_version"] == version

    with serving(isolated_env, str(config)) as url:
        answer = httpx.post(
            f"{url}/predict", json={"records": [{"customer_id": ids[0]}]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["model_version"] == version


def test_a_drafted_european_export_with_unlabelled_customers_runs_and_is_served(
    tmp_path, isolated_env
):
    """A bank's snapshot as a European export (";", cp1252, "1.234,56", labels "Ja"/"Nein",
    some blank): `churn draft-config` drafts its config, the graph trains on the labelled
    customers and scores every one, and the sidecar answers for an unlabelled customer."""
    from churn_assets.lib.config_draft import draft_config

    rng = np.random.default_rng(3)
    n = 3000
    age = rng.integers(18, 85, n)
    active = rng.random(n) < 0.5
    churn = rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 0.05 * (age - 40) - 1.0 * active)))
    label = np.where(churn, "Ja", "Nein").astype(object)
    label[rng.random(n) < 0.15] = None  # current customers: outcome not known yet
    frame = pl.DataFrame(
        {
            "Kundennummer": [f"K{i:05d}" for i in range(n)],
            "Land": rng.choice(["Deutschland", "Österreich", "Schweiz"], n),
            "Alter": age,
            "Aktiv": active.astype(int),
            "Saldo": [f"{v:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".") for v in
                      rng.uniform(0, 250_000, n)],
            "Gekündigt": label,
        }
    )  # fmt: skip
    path = tmp_path / "kunden.csv"
    path.write_bytes(frame.write_csv(separator=";").encode("cp1252"))
    text = draft_config(str(path), label="Gekündigt", id_column="Kundennummer")
    cfg = yaml.safe_load(text)
    assert cfg["labels"]["allow_unlabelled"] is True
    assert (cfg["customers"]["decimal"], cfg["customers"]["thousands"]) == (",", ".")
    config, run = run_drafted(cfg, tmp_path, "kunden")
    unlabelled = int((frame["Gekündigt"].is_null()).sum())
    assert run.result.output_for_node("training_set").height == n - unlabelled
    scores = run.result.output_for_node("churn_scores")
    assert scores.height == n
    blank_id = frame.filter(pl.col("Gekündigt").is_null())["Kundennummer"][0]
    with serving(isolated_env, str(config)) as url:
        answer = httpx.post(
            f"{url}/predict", json={"records": [{"customer_id": blank_id}]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        expected = scores.filter(pl.col("customer_id") == blank_id)["churn_probability"][0]
        assert answer.json()["predictions"][0]["churn_probability"] == pytest.approx(expected)


def test_an_activity_log_without_money_trains_and_serves_the_churn_model(tmp_path, isolated_env):
    """App events (user, time, event type; no amount), drafted by `churn draft-config`: each
    event counts once, the churn model is trained and served, and the value model is "not
    applicable" with the reason."""
    from churn_assets.lib.config_draft import draft_config

    rng = np.random.default_rng(9)
    users, n = 1500, 40_000
    user = rng.integers(0, users, n)
    life = rng.integers(20, 400, users)  # the day each user's activity stops
    day = rng.random(n) * life[user]
    start = dt.datetime(2023, 1, 1)
    frame = pl.DataFrame(
        {
            "user_id": [f"u{u:05d}" for u in user],
            "event_time": [start + dt.timedelta(days=float(d)) for d in day],
            "event": rng.choice(["login", "view", "click"], n),
        }
    ).sort("event_time")
    path = tmp_path / "events.csv"
    frame.write_csv(path)
    cfg = yaml.safe_load(draft_config(str(path), timestamp="event_time"))
    assert cfg["transactions"]["activity_only"] is True
    assert cfg["transactions"]["category"] == "event"
    config, run = run_drafted(cfg, tmp_path, "events")
    raw = run.result.output_for_node("raw_transactions")
    assert raw.height == n and (raw["amount"] == 1.0).all()
    features = run.result.output_for_node("customer_features")
    assert "total_sales" not in features.columns and "cat_share_login" in features.columns
    regression = run.result.output_for_node("regression_models")
    assert regression["applicable"] is False and "activity_only" in regression["reason"]
    out = run.result.output_for_node("deployed_model_version")
    assert out["promoted"] and set(out["decision"]["roles"]) == {"classifier"}
    scores = run.result.output_for_node("churn_scores")
    assert scores["expected_total_sales"].null_count() == scores.height

    with serving(isolated_env, str(config)) as url:
        answer = httpx.post(
            f"{url}/predict", json={"records": [{"customer_id": "u00001"}]}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        pred = answer.json()["predictions"][0]
        assert 0 <= pred["churn_probability"] <= 1 and pred["expected_total_sales"] is None


def test_a_snapshot_with_a_last_login_date_is_served_from_the_date_itself(tmp_path, isolated_env):
    """A snapshot with a ``LastLogin`` date, drafted by `churn draft-config`: the date is a
    ``days_since_last_login`` feature counted to the snapshot's day, stored with the
    version; the sidecar takes the customer's row as exported, date and all, and answers
    what it answers for the customer's id."""
    from churn_assets.lib.config_draft import draft_config

    rng = np.random.default_rng(5)
    n = 2000
    idle = rng.integers(0, 200, n)  # days since the last login, as of 2024-06-30
    plan = rng.choice(["basic", "pro"], n)
    churn = rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 0.02 * idle)))
    day = dt.date(2024, 6, 30)
    frame = pl.DataFrame(
        {
            "CustomerID": [f"C{i:05d}" for i in range(n)],
            "Plan": plan,
            "MonthlyFee": np.round(rng.uniform(5, 50, n), 2),
            "SignupDate": [
                day - dt.timedelta(days=int(d)) for d in [0, *rng.integers(1, 900, n - 1)]
            ],
            "LastLogin": [day - dt.timedelta(days=int(d)) for d in idle],
            "Churned": np.where(churn, "Yes", "No"),
        }
    )
    path = tmp_path / "accounts.csv"
    frame.write_csv(path)
    cfg = yaml.safe_load(draft_config(str(path), label="Churned"))
    config, run = run_drafted(cfg, tmp_path, "accounts")
    out = run.result.output_for_node("deployed_model_version")
    manifest = dep.read_manifest(Storage(str(isolated_env / cfg["name"])), out["version"])
    definition = manifest["feature_definition"]
    assert definition["dates_as_of"] == "2024-07-01"  # the day after the latest sign-up
    assert "days_since_last_login" in manifest["features"]["numeric"]
    assert definition["dates"] == {
        "last_login": "days_since_last_login",
        "signup_date": "tenure_days",
    }
    row = frame.row(7, named=True)
    exported = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}
    features = {k: v for k, v in exported.items() if k not in ("CustomerID", "Churned")}
    with serving(isolated_env, str(config)) as url:
        schema = httpx.get(f"{url}/predict/schema", timeout=30).json()
        assert schema["dates"]["fields"]["LastLogin"] == "days_since_last_login"
        assert schema["dates"]["fields"]["SignupDate"] == "tenure_days"
        by_id = httpx.post(
            f"{url}/predict", json={"records": [{"customer_id": row["CustomerID"]}]}, timeout=30
        )
        assert by_id.status_code == 200, by_id.text
        by_row = httpx.post(
            f"{url}/predict", json={"records": [{"features": features}]}, timeout=30
        )
        assert by_row.status_code == 200, by_row.text
        assert by_row.json()["predictions"][0]["churn_probability"] == pytest.approx(
            by_id.json()["predictions"][0]["churn_probability"]
        )
        bad = httpx.post(
            f"{url}/predict",
            json={"records": [{"features": {**features, "LastLogin": "last week"}}]},
            timeout=30,
        )
        assert bad.status_code == 422
        assert "'LastLogin' must be a date" in bad.text
        # the same customer a year on, sent with its dates a year later and ?as_of= a year
        # after the version's day: the same days, the same answer
        later = {
            k: (dt.date.fromisoformat(v[:10]) + dt.timedelta(days=365)).isoformat()
            if k in ("LastLogin", "SignupDate")
            else v
            for k, v in features.items()
        }
        moved = httpx.post(
            f"{url}/predict?as_of=2025-07-01", json={"records": [{"features": later}]}, timeout=30
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["predictions"][0]["churn_probability"] == pytest.approx(
            by_row.json()["predictions"][0]["churn_probability"]
        )
        wrong = httpx.post(
            f"{url}/predict?as_of=someday", json={"records": [{"features": later}]}, timeout=30
        )
        assert wrong.status_code == 422 and "as_of must be a date" in wrong.text


def small_snapshot(tmp_path: Path, total: list[float]) -> Path:
    """A 400-customer snapshot config (plan, tenure, fee, an attribute with one value, the
    value label ``total``) with the trimmed candidate lists."""
    rng = np.random.default_rng(36)
    n = len(total)
    tenure = rng.integers(0, 72, n)
    fee = rng.uniform(10, 120, n).round(2)
    churned = rng.random(n) < 1 / (1 + np.exp(1 - 0.03 * fee + 0.05 * tenure))
    rare = np.full(n, np.nan)
    rare[7] = 1.5
    pl.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(n)],
            "plan": rng.choice(["basic", "pro", "max"], n),
            "tenure": tenure,
            "monthly_fee": fee,
            "rare": rare,
            "total": total,
            "churn": np.where(churned, "Yes", "No"),
        }
    ).write_csv(tmp_path / "flat.csv")
    cfg = {
        "name": "flat",
        "customers": {
            "path": str(tmp_path / "flat.csv"),
            "id_column": "customer_id",
            "attributes": [
                {"name": "plan", "type": "categorical"},
                {"name": "tenure", "type": "integer"},
                {"name": "monthly_fee", "type": "numeric"},
                {"name": "rare", "type": "numeric"},
            ],
        },
        "labels": {
            "source": "columns",
            "churned_column": "churn",
            "churned_positive": ["Yes"],
            "total_sales_column": "total",
        },
        "models": {**FAST_MODELS, "classification_candidates": ["hist_gradient_boosting"]},
    }
    config = tmp_path / "flat.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


def test_a_constant_value_label_and_an_empty_attribute_leave_the_churn_model(
    tmp_path, isolated_env
):
    """A value label with one value for everyone was "learned" with R² 1.0 and deployed; a
    numeric attribute with one value among 400 rows crashed the tree models' cross-
    validation ("window shape cannot be larger than input array shape"). The value model is
    now "not applicable", saying why, and the empty attribute is left out, saying so: the
    churn model is trained and deployed."""
    run = run_graph(str(small_snapshot(tmp_path, [100.0] * 400)))
    assert run.result.success, run.result.all_events[-1]
    regression = run.result.output_for_node("regression_models")
    assert regression["applicable"] is False
    assert "(total_sales) is 100 for every customer" in regression["reason"]
    classification = run.result.output_for_node("classification_models")
    assert "rare" not in classification["feature_spec"]["numeric"]
    (mat,) = [
        e.materialization
        for e in run.result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == "classification_models"
    ]
    assert "rare" in mat.metadata["features_left_out"].value
    out = run.result.output_for_node("deployed_model_version")
    assert out["promoted"] and set(out["decision"]["roles"]) == {"classifier"}


def test_a_negative_value_label_leaves_the_churn_model(tmp_path, isolated_env):
    """Credit balances (a negative value label for 40 of 400 customers) failed the blocking
    feature check and stopped the churn model with the value model. The check now warns,
    and the value set is not applicable, naming the count and the column."""
    total = [float(-5 if i % 10 == 0 else 50 + i) for i in range(400)]
    run = run_graph(str(small_snapshot(tmp_path, total)))
    assert run.result.success, run.result.all_events[-1]
    check = run.check("customer_features", "customer_features_valid")
    assert check.passed and "total_sales" in check.description
    regression = run.result.output_for_node("regression_models")
    assert regression["applicable"] is False
    assert (
        "40 customer(s) have a negative value label (total_sales, from total)"
        in (regression["reason"])
    )
    out = run.result.output_for_node("deployed_model_version")
    assert out["promoted"] and set(out["decision"]["roles"]) == {"classifier"}


def test_a_table_without_any_label_says_so(tmp_path, isolated_env):
    """Every churn label blank, with ``allow_unlabelled``: the failure blamed
    labels.active_within_days and labels.cutoff, which a snapshot does not even take."""
    config = small_snapshot(tmp_path, [10.0] * 60)
    frame = pl.read_csv(tmp_path / "flat.csv").with_columns(pl.lit("").alias("churn"))
    frame.write_csv(tmp_path / "flat.csv")
    cfg = yaml.safe_load(config.read_text())
    cfg["labels"]["allow_unlabelled"] = True
    config.write_text(yaml.safe_dump(cfg))
    run = run_graph(str(config))
    assert not run.result.success
    (failure,) = [e for e in run.result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "customer_features"
    assert "every one of the 60 customers has a blank churn label (column 'churn'" in (
        failure.event_specific_data.error.to_string()
    )


def test_a_snapshot_with_transactions_has_no_realized_performance(tmp_path, isolated_env):
    """Accounts with a churn column and their payments beside them (`churn draft-config
    accounts.csv --label is_churn --transactions payments.csv`): realized performance said
    "waiting" for the horizon, then would have judged the churn model against "no purchase
    in the horizon", a label it never learned, and asked for a retraining on that verdict.
    It is "not applicable" now, naming the churn column."""
    from churn_assets.lib.config_draft import draft_config

    rng = np.random.default_rng(5)
    n, m = 2000, 20_000
    ids = [f"A{i:05d}" for i in range(n)]
    tenure = rng.integers(1, 72, n)
    churn = rng.random(n) < 1 / (1 + np.exp(-(1.0 - 0.05 * tenure)))
    pl.DataFrame(
        {"account": ids, "plan": rng.choice(["basic", "plus"], n), "tenure": tenure,
         "is_churn": churn.astype(int)}
    ).write_csv(tmp_path / "accounts.csv")  # fmt: skip
    days = np.datetime64("2025-01-01") + rng.integers(0, 365, m).astype("timedelta64[D]")
    pl.DataFrame(
        {"account": rng.choice(ids, m), "paid_at": [str(d) for d in days],
         "amount": rng.uniform(5, 80, m).round(2)}
    ).write_csv(tmp_path / "payments.csv")  # fmt: skip
    text = draft_config(
        str(tmp_path / "accounts.csv"),
        label="is_churn",
        transactions_file=str(tmp_path / "payments.csv"),
        timestamp="paid_at",
    )
    cfg = yaml.safe_load(text)
    assert cfg["labels"]["source"] == "columns" and cfg["transactions"]
    _, run = run_drafted(cfg, tmp_path, "accounts")
    realized = run.result.output_for_node("realized_performance")
    assert realized["status"] == "not_applicable", realized
    assert "'is_churn'" in realized["message"] and not realized["retraining_requested"]
