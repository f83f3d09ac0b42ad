"""Retention keeps the last N of each record kind and never the deployed, pinned or
rollback-target version."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.retention import RetentionPolicy, plan, prune
from churn_assets.lib.storage import Storage


def _version(s: Storage, i: int) -> str:
    name = f"v2026{1 + i // 28:02d}{1 + i % 28:02d}-000000"
    dep.write_version(s, name, {"classifier.skops": f"model {i}".encode()}, {"models": {}})
    return name


@pytest.fixture
def store(tmp_path) -> Storage:
    s = Storage(str(tmp_path / "synthetic"))
    names = [_version(s, i) for i in range(14)]
    dep.set_current(s, names[1], reason="first")  # an old version, deployed...
    dep.set_current(s, names[2], reason="second")
    dep.set_current(s, names[0], reason="rollback")  # ...then rolled back to the oldest
    for i in range(35):
        s.write_bytes(f"monitoring/drift/20261101T{i:06d}Z-run{i:04d}/report.html", b"x")
    s.write_json("monitoring/drift/latest.json", {"drifted": False})
    for i in range(33):
        s.write_bytes(f"quarantine/raw_transactions/20261101T{i:06d}Z-r/rows.parquet", b"x")
    s.write_bytes("quarantine/raw_customers/20261101T000000Z-r/rows.parquet", b"x")
    today = dt.date(2026, 11, 29)
    for back in range(40):
        day = today - dt.timedelta(days=back)
        s.write_bytes(f"inference_log/date={day.isoformat()}/000000-a.parquet", b"x")
    for i in range(25):
        s.write_bytes(f"models/classification/run-{i:03d}/champion-x.skops", b"x")
    return s


def test_keeps_the_newest_and_every_protected_version(store):
    report = prune(store, RetentionPolicy(), today=dt.date(2026, 11, 29))
    versions = dep.list_versions(store)
    # newest 10 plus the deployed (oldest) and the rollback target (the one before it)
    assert len(versions) == 12
    current = dep.read_current(store)["version"]
    assert current in versions and current == sorted(versions)[0]
    assert report["deleted"]["versions"] == 2
    assert set(report["protected_versions"]) == {current, "v20260103-000000"}
    assert dep.verify_version(store, current) == []


def test_keeps_the_newest_reports_batches_days_and_model_sets(store):
    report = prune(store, RetentionPolicy(), today=dt.date(2026, 11, 29))
    assert report["deleted"] == {
        "versions": 2,
        "model_sets": 5,
        "drift_reports": 5,
        "quarantine_batches": 3,
        "inference_log_days": 10,
        "score_snapshots": 0,
    }
    reports = store.list_files("monitoring/drift", "*/report.html")
    assert len(reports) == 30 and reports[0].startswith("monitoring/drift/20261101T000005Z")
    assert store.exists("monitoring/drift/latest.json")
    assert len(store.list_files("quarantine/raw_transactions", "*/*")) == 30
    assert len(store.list_files("quarantine/raw_customers", "*/*")) == 1
    days = store.list_files("inference_log", "*/*")
    assert len(days) == 30 and days[0].startswith("inference_log/date=2026-10-31")
    assert len(store.list_files("models/classification", "*/*")) == 20


def test_dry_run_deletes_nothing(store):
    before = store.list_files("", "**")
    report = prune(store, RetentionPolicy(versions=1), dry_run=True)
    assert report["dry_run"] and report["deleted"]["versions"] == 11
    assert store.list_files("", "**") == before


def test_a_version_pinned_in_the_pointer_is_kept(store):
    pointer = dep.read_current(store)
    pinned = "v20260105-000000"
    store.write_json(dep.POINTER, {**pointer, "pinned": pinned})
    todo = plan(store, RetentionPolicy(versions=1))
    assert dep.version_dir(pinned) not in todo["versions"]
    prune(store, RetentionPolicy(versions=1))
    assert pinned in dep.list_versions(store)


def test_policy_from_env_and_its_errors():
    policy = RetentionPolicy.from_env({"CHURN_RETENTION_VERSIONS": "3"})
    assert policy.versions == 3 and policy.drift_reports == 30
    for wrong in ("ten", "0", "-2"):
        with pytest.raises(ValueError, match=f"CHURN_RETENTION_VERSIONS='{wrong}': it takes a"):
            RetentionPolicy.from_env({"CHURN_RETENTION_VERSIONS": wrong})
    with pytest.raises(ValueError, match="at least 1"):
        RetentionPolicy(versions=0)


def test_nothing_deployed_prunes_by_count_only(tmp_path):
    s = Storage(str(tmp_path / "empty"))
    for i in range(4):
        _version(s, i)
    report = prune(s, RetentionPolicy(versions=2))
    assert report["deleted"]["versions"] == 2 and report["protected_versions"] == []


def test_scoring_snapshots_pending_their_horizon_are_always_kept(tmp_path):
    """Realized performance needs a snapshot until its horizon has passed in the data: those
    stay whatever the count; of the settled ones only the newest ``score_snapshots`` do."""
    s = Storage(str(tmp_path / "synthetic"))
    start = dt.date(2025, 1, 1)
    for i in range(40):  # a daily scoring run, a new version every 10 days
        cutoff = start + dt.timedelta(days=i)
        s.write_bytes(f"scores/v2025010{i // 10}-000000/{cutoff.isoformat()}.parquet", b"x")
    policy = RetentionPolicy(score_snapshots=5)
    todo = plan(s, policy, horizon_days=30)["score_snapshots"]
    # newest cut-off 2025-02-09: the last 30 days (from 2025-01-11 on) are pending
    assert len(todo) == 5 and todo[-1].endswith("/2025-01-05.parquet")
    report = prune(s, policy, horizon_days=30)
    assert report["deleted"]["score_snapshots"] == 5
    left = s.list_files("scores", "*/*.parquet")
    assert len(left) == 35 and min(p.rsplit("/", 1)[-1] for p in left) == "2025-01-06.parquet"
    # without the horizon, only the newest five of all stay
    assert len(plan(s, policy)["score_snapshots"]) == 30


def _model_set_run(cfg, kind: str) -> str:
    """One real MLflow model-set run: a parent and a candidate with a logged model."""
    import mlflow
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    from churn_assets.lib.tracking import ensure_experiment

    exp = ensure_experiment(cfg)
    model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    with mlflow.start_run(experiment_id=exp, tags={"model_set": kind}) as parent:
        mlflow.log_params({"primary_metric": "roc_auc", "seed": 42})
        mlflow.log_text("board", "leaderboard.md")
        mlflow.log_metrics({"champion_roc_auc": 0.9})
        with mlflow.start_run(experiment_id=exp, nested=True, tags={"model_set": kind}):
            mlflow.log_params({"max_depth": 3})
            mlflow.log_metrics({"roc_auc": 0.9, "train_seconds": 1.5})
            info = mlflow.sklearn.log_model(
                model, name="model", serialization_format="pickle", pip_requirements=[]
            )
            mlflow.log_metric("threshold", 0.4, model_id=info.model_id)  # the model's own
    return parent.info.run_id


def test_pruned_mlflow_runs_take_their_files_with_them(tmp_path):
    """Model-set runs beyond the count and drift-report runs beyond ``drift_reports`` are
    deleted with their artifacts and logged models: MLflow's delete only marks a run, so
    the artifact store kept every file of every run for ever."""
    from mlflow.entities import ViewType

    from churn_assets.lib.retention import prune_mlflow
    from churn_assets.lib.tracking import DRIFT_REPORT_RUN, TrackingConfig, _client, log_file

    root = tmp_path / "storage"
    artifacts = root / "mlflow" / "artifacts" / "synthetic"
    cfg = TrackingConfig(f"sqlite:///{tmp_path / 'mlflow.db'}", str(artifacts), "churn-x")
    s = Storage(str(root / "synthetic"))
    runs = [_model_set_run(cfg, "classification") for _ in range(3)]
    report = tmp_path / "drift_report.html"
    report.write_text("<html>drift</html>")
    drift = [log_file(cfg, str(report), DRIFT_REPORT_RUN, {"dataset": "x"}) for _ in range(3)]
    files_before = sorted(p for p in artifacts.rglob("*") if p.is_file())
    assert len(files_before) > 6
    client = _client(cfg)
    exp = client.get_experiment_by_name("churn-x").experiment_id
    before = {r.info.run_id for r in client.search_runs([exp], run_view_type=ViewType.ALL)}

    result = prune_mlflow(cfg, s, RetentionPolicy(model_sets=1, drift_reports=1))
    assert result["deleted_runs"] == 4  # two old model sets: parent and candidate each
    assert result["deleted_drift_report_runs"] == 2
    after = {r.info.run_id for r in client.search_runs([exp], run_view_type=ViewType.ALL)}
    gone = before - after  # not even marked deleted: their rows left the database
    assert len(gone) == 6 and gone >= {*runs[:2], *drift[:2]}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        for table in ("runs", "params", "tags", "metrics"):
            ids = {row[0] for row in db.execute(f"SELECT run_uuid FROM {table}")}
            assert not ids & gone, table
        assert db.execute("SELECT COUNT(*) FROM logged_models").fetchone()[0] == 1
    left = sorted(p for p in artifacts.rglob("*") if p.is_file())
    for run_id in gone:  # no file of a deleted run, nor of a model logged from it
        assert not any(run_id in str(p) for p in left)
    models = client.search_logged_models([exp])
    assert len(models) == 1 and models[0].source_run_id not in gone
    assert any(str(models[0].model_id) in str(p) for p in left)  # the kept model's files stay
    assert any(drift[-1] in str(p) for p in left) and any(runs[-1] in str(p) for p in left)


def test_registrations_of_versions_retention_removed_are_deleted(tmp_path):
    """The registry kept a model version for every promotion for ever, and with it its run
    and files; registrations of versions retention removed (never served or rolled back to
    again) are now deleted, unless an alias holds one or another storage registered it."""
    import mlflow
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    from churn_assets.lib.retention import prune_mlflow
    from churn_assets.lib.tracking import (
        TrackingConfig,
        _client,
        ensure_experiment,
        register_promoted,
        set_champion_alias,
    )

    root = tmp_path / "storage"
    artifacts = root / "mlflow" / "artifacts" / "synthetic"
    cfg = TrackingConfig(f"sqlite:///{tmp_path / 'mlflow.db'}", str(artifacts), "churn-synthetic")
    s = Storage(str(root / "synthetic"))
    exp = ensure_experiment(cfg)
    model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    names = [_version(s, i) for i in range(5)]
    for name in names:
        dep.set_current(s, name, reason="promoted")

    def register(version: str, storage_url: str) -> str:
        """A model logged in a run of its own, registered as deployment ``version``'s."""
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.sklearn.log_model(
                model, name="model", serialization_format="pickle", pip_requirements=[]
            )
        return register_promoted(
            cfg,
            dataset="synthetic",
            role="classifier",
            model_uri=info.model_uri,
            candidate="dummy",
            version=version,
            storage_url=storage_url,
        )["registered_version"]

    # the last one: a deployment still writing
    registered = {name: register(name, s.url()) for name in [*names, "v20260301-000000"]}
    client = _client(cfg)
    model_name = "synthetic-churn-classifier"
    # another platform sharing the registry registered v0 too (its own storage)
    staging = register(names[0], "s3://staging/synthetic")
    set_champion_alias(cfg, model_name, registered[names[1]])  # an alias holds v1's

    prune(s, RetentionPolicy(versions=2))  # v0, v1, v2 removed
    assert dep.list_versions(s) == names[3:]
    result = prune_mlflow(cfg, s, RetentionPolicy())

    assert sorted(result["deleted_registrations"]) == [
        f"{model_name} {registered[names[0]]}",
        f"{model_name} {registered[names[2]]}",
    ]
    left = {str(mv.version) for mv in client.search_model_versions(f"name='{model_name}'")}
    assert left == {
        registered[names[1]],  # the alias holds it
        registered[names[3]],
        registered[names[4]],
        registered["v20260301-000000"],
        staging,
    }
    assert prune_mlflow(cfg, s, RetentionPolicy())["deleted_registrations"] == []


def test_runs_whose_files_the_artifact_store_refuses_to_delete_are_kept(tmp_path, monkeypatch):
    """An artifact store refusing deletions (a bucket without delete permission) left the
    retention job failing on its first run to prune; such runs are now kept whole, counted
    with the store's error, and pruned by a later run once it allows deletions."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from churn_assets.lib.retention import prune_mlflow
    from churn_assets.lib.tracking import TrackingConfig

    root = tmp_path / "storage"
    artifacts = root / "mlflow" / "artifacts" / "synthetic"
    cfg = TrackingConfig(f"sqlite:///{tmp_path / 'mlflow.db'}", str(artifacts), "churn-x")
    s = Storage(str(root / "synthetic"))
    for _ in range(3):
        _model_set_run(cfg, "classification")
    files = sorted(p for p in artifacts.rglob("*") if p.is_file())

    def refuse(self, artifact_path=None):  # the store's answer, as root cannot be refused
        raise PermissionError(f"Access Denied: {self.artifact_dir}")

    with monkeypatch.context() as m:
        m.setattr(LocalArtifactRepository, "delete_artifacts", refuse)
        refused = prune_mlflow(cfg, s, RetentionPolicy(model_sets=1, drift_reports=1))
    assert refused["deleted_runs"] == 0 and refused["runs_kept_files_not_deletable"] == 4
    assert refused["artifact_store_error"].startswith("PermissionError: Access Denied")
    assert sorted(p for p in artifacts.rglob("*") if p.is_file()) == files

    allowed = prune_mlflow(cfg, s, RetentionPolicy(model_sets=1, drift_reports=1))
    assert allowed["deleted_runs"] == 4 and "runs_kept_files_not_deletable" not in allowed


def test_the_version_a_rollback_goes_to_is_kept_after_rolling_back_twice(tmp_path):
    """After two rollbacks (v5 → v4 → v3) `churn rollback` goes to v2, older than the newest
    kept: retention protected the version just left (v4) instead, deleted v2, and the next
    rollback failed with 'unknown version'."""
    s = Storage(str(tmp_path / "synthetic"))
    names = [_version(s, i) for i in range(6)]
    for name in names:
        dep.set_current(s, name, reason="promoted")
    dep.rollback(s)
    dep.rollback(s)
    assert dep.read_current(s)["version"] == names[3]
    report = prune(s, RetentionPolicy(versions=2))
    assert names[2] in report["protected_versions"]
    assert dep.list_versions(s) == names[2:]
    assert dep.rollback(s)["version"] == names[2]


def test_a_rollback_to_a_version_retention_removed_says_so(tmp_path):
    """`churn rollback --to` a version retention removed said 'unknown version', as for a
    typo, though the user saw it deployed; it now says its files were removed."""
    s = Storage(str(tmp_path / "synthetic"))
    names = [_version(s, i) for i in range(5)]
    for name in names:
        dep.set_current(s, name, reason="promoted")
    prune(s, RetentionPolicy(versions=2))
    assert names[0] not in dep.list_versions(s)
    with pytest.raises(dep.DeploymentError) as removed:
        dep.rollback(s, names[0])
    assert str(removed.value) == (
        f"{names[0]} is no longer stored: it was deployed, but retention removed its files "
        "(retention_job keeps the newest CHURN_RETENTION_VERSIONS versions, the deployed, "
        f"pinned and rollback-target ones); stored versions: {', '.join(names[3:])}"
    )
    with pytest.raises(dep.DeploymentError, match="^unknown version v20991231-000000; known"):
        dep.rollback(s, "v20991231-000000")


def test_a_run_registered_beyond_the_first_hundred_models_is_kept(tmp_path):
    """A registry holding more than 100 registered models (a shared one): only the first
    page of them was read, so the run of a model version registered under a later name
    counted as unused and was deleted, with its files."""
    from churn_assets.lib.retention import prune_mlflow
    from churn_assets.lib.tracking import TrackingConfig, _client

    root = tmp_path / "storage"
    artifacts = root / "mlflow" / "artifacts" / "synthetic"
    cfg = TrackingConfig(f"sqlite:///{tmp_path / 'mlflow.db'}", str(artifacts), "churn-x")
    old, _ = (_model_set_run(cfg, "classification") for _ in range(2))
    client = _client(cfg)
    for i in range(100):
        client.create_registered_model(f"another-team-{i:03d}")
    exp = client.get_experiment_by_name("churn-x").experiment_id
    (child,) = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{old}'")
    (model,) = client.search_logged_models(
        [exp], filter_string=f"source_run_id = '{child.info.run_id}'"
    )
    client.create_registered_model("zz-their-model")
    client.create_model_version("zz-their-model", model.model_uri, run_id=child.info.run_id)
    result = prune_mlflow(cfg, Storage(str(root / "synthetic")), RetentionPolicy(model_sets=1))
    assert result["deleted_runs"] == 0
    assert client.get_run(old).info.lifecycle_stage == "active"
    assert any(model.model_id in str(p) for p in artifacts.rglob("*") if p.is_file())
