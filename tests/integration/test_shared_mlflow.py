"""Two platforms (staging and production, each its own storage) on one real `mlflow server`.

With the shipped names both logged into the experiment `churn-synthetic` that the first one
created (the second one's model files under the first one's storage), registered as
`synthetic-churn-classifier` with one `champion` alias for both, and each one's retention
counted the other's runs as its own and deleted them. The second platform is now refused
before it trains, and ``CHURN_MLFLOW_NAMESPACE`` gives it names of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from churn_assets.lib.datasets import BUILTIN_DIR
from churn_assets.lib.generator import generate
from tests.conftest import BIN

pytestmark = pytest.mark.integration  # starts mlflow server

FAST_MODELS = {
    "classification_candidates": ["logistic_regression", "lightgbm"],
    "regression_candidates": ["naive_baseline", "ridge"],
    "cv_folds": 2,
}


def _platform(tmp_path: Path, name: str) -> Path:
    """A platform's storage root, its landing zone seeded (1,500 customers)."""
    storage = tmp_path / name
    generate(str(storage / "landing" / "synthetic"), customers=1500, days=360, seed=7)
    return storage


def _demo(env: dict[str, str]) -> tuple[int, dict]:
    done = subprocess.run(
        [str(BIN / "churn"), "demo", "--json", "--no-seed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def _active_runs(client, experiment: str) -> set[str]:
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000)}


def test_a_second_platform_on_the_same_mlflow_server_gets_names_of_its_own(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow.tracking import MlflowClient

    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = {**cfg.get("models", {}), **FAST_MODELS}
    config = tmp_path / "synthetic.yaml"
    config.write_text(yaml.safe_dump(cfg))
    staging, production = _platform(tmp_path, "staging"), _platform(tmp_path, "production")
    base = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "CHURN_DATASET": str(config),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    base.pop("CHURN_MLFLOW_NAMESPACE", None)
    client = MlflowClient(mlflow_server, mlflow_server)

    code, first = _demo({**base, "CHURN_STORAGE_URL": str(staging)})
    assert code == 0 and first["success"], first
    staging_runs = _active_runs(client, "churn-synthetic")
    name = "synthetic-churn-classifier"
    staging_champion = client.get_model_version_by_alias(name, "champion")
    assert staging_champion.tags["storage"] == str(staging / "synthetic")

    # production, same server, same names: refused before anything runs
    code, refused = _demo({**base, "CHURN_STORAGE_URL": str(production)})
    assert code != 0 and refused["success"] is False
    error = " ".join(refused["error"].split())
    assert error.startswith("SharedExperimentError: the MLflow experiment 'churn-synthetic'")
    assert f"the platform storing at {staging}" in error
    assert f"this platform stores at {production}" in error
    assert "Nothing was logged or registered in it" in error
    assert "set CHURN_MLFLOW_NAMESPACE" in error
    assert not (production / "synthetic" / "assets").exists()
    assert _active_runs(client, "churn-synthetic") == staging_runs

    # production's retention leaves staging's runs alone (it deleted its drift reports)
    from churn_assets.lib.settings import ChurnSettings
    from churn_assets.lib.tracking import DRIFT_REPORT_RUN, TrackingConfig, log_file

    report = tmp_path / "drift_report.html"
    report.write_text("<html></html>")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    staging_tracking = TrackingConfig.from_settings(
        ChurnSettings(storage_url=str(staging)), "synthetic"
    )
    log_file(staging_tracking, str(report), DRIFT_REPORT_RUN, {"dataset": "synthetic"})
    staging_runs = _active_runs(client, "churn-synthetic")
    (tmp_path / "production_home").mkdir()
    retention = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "churn_assets.definitions"]
        + ["-j", "retention_job"],
        env={
            **base,
            "CHURN_STORAGE_URL": str(production),
            "DAGSTER_HOME": str(tmp_path / "production_home"),
            "CHURN_RETENTION_DRIFT_REPORTS": "1",
            "CHURN_RETENTION_MODEL_SETS": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert retention.returncode == 0, retention.stderr[-3000:]
    assert _active_runs(client, "churn-synthetic") == staging_runs
    assert "MLflow runs not pruned: the MLflow experiment 'churn-synthetic'" in retention.stderr

    # with a namespace production has its own experiment, models and aliases
    code, second = _demo(
        {**base, "CHURN_STORAGE_URL": str(production), "CHURN_MLFLOW_NAMESPACE": "production"}
    )
    assert code == 0 and second["success"], second
    exp = client.get_experiment_by_name("churn-production-synthetic")
    assert exp.artifact_location == str(production / "mlflow" / "artifacts" / "synthetic")
    ours = client.get_model_version_by_alias("production-synthetic-churn-classifier", "champion")
    assert ours.tags["storage"] == str(production / "synthetic")
    theirs = client.get_model_version_by_alias(name, "champion")
    assert theirs.version == staging_champion.version
    assert _active_runs(client, "churn-synthetic") == staging_runs
