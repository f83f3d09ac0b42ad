"""A new local MLflow store starts from the migrated schema cached per MLflow version, and
still comes up when that cache cannot be used."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from churn_assets.lib.tracking import CACHE_DIR_ENV, TrackingConfig, _client, ensure_experiment


def _revision(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("select version_num from alembic_version").fetchone()[0]


def _config(tmp_path: Path, name: str) -> TrackingConfig:
    db = tmp_path / name / "mlflow.db"
    return TrackingConfig(f"sqlite:///{db}", str(tmp_path / name / "artifacts"), "churn-test")


def test_new_stores_copy_the_cached_schema_and_work(tmp_path, monkeypatch):
    from mlflow.store.db.utils import _get_latest_schema_revision

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    first, second = _config(tmp_path, "a"), _config(tmp_path, "b")

    exp_a = ensure_experiment(first)
    templates = list(cache.glob("mlflow-*-schema.db"))
    assert len(templates) == 1
    assert _revision(templates[0]) == _get_latest_schema_revision()
    template_bytes = templates[0].read_bytes()

    exp_b = ensure_experiment(second)
    assert templates[0].read_bytes() == template_bytes  # the template is never written to
    assert ensure_experiment(second) == exp_b  # an existing store is left as it is
    for cfg, exp in ((first, exp_a), (second, exp_b)):
        db = Path(cfg.tracking_uri[len("sqlite:///") :])
        assert _revision(db) == _get_latest_schema_revision()
        client = _client(cfg)
        names = {e.name: e for e in client.search_experiments()}
        assert set(names) == {"Default", "churn-test"}
        assert names["churn-test"].artifact_location == cfg.artifact_location
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "roc_auc", 0.9)
        assert client.get_run(run.info.run_id).data.metrics == {"roc_auc": 0.9}
    assert not list(tmp_path.rglob("*.partial"))


def test_an_unusable_cache_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))
    cfg = _config(tmp_path, "c")

    exp = ensure_experiment(cfg)

    client = _client(cfg)
    assert client.get_experiment(exp).name == "churn-test"
    assert not (blocker / "cache").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9/", "postgresql://u@localhost/db"])
def test_only_local_sqlite_stores_are_seeded(tmp_path, monkeypatch, uri):
    from churn_assets.lib.tracking import _seed_sqlite_store

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    _seed_sqlite_store(TrackingConfig(uri, str(tmp_path / "artifacts"), "churn-test"))
    assert not (tmp_path / "cache").exists()
