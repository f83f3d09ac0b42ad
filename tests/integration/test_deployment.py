"""Model sets → MLflow → gated, versioned deployment → batch scores → rollback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import BUILTIN_DIR
from churn_assets.lib.generator import generate
from churn_assets.lib.storage import Storage
from tests.conftest import BIN
from tests.helpers import run_graph

pytestmark = pytest.mark.integration

FAST_MODELS = {
    "classification_candidates": ["logistic_regression", "lightgbm"],
    "regression_candidates": ["naive_baseline", "ridge"],
    "cv_folds": 2,
}


def small_synthetic(storage: Path, tmp_path: Path, **models) -> str:
    """A 1,500-customer synthetic data set with a fast candidate list; returns its config."""
    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = {**FAST_MODELS, **models}
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(cfg))
    landing = storage / "landing" / "synthetic"
    if not landing.exists():
        generate(str(landing), customers=1500, days=360, seed=7)
    return str(path)


def mlflow_client(storage: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{storage / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(uri, uri)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The graph materialized twice on the same data (module-wide: it is the slow part)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("deploy")
    storage = tmp / "storage"
    mp.setenv("CHURN_STORAGE_URL", str(storage))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = small_synthetic(storage, tmp)
    first = run_graph(config)
    second = run_graph(config)
    yield storage, config, first, second
    mp.undo()


def test_first_run_promotes_a_complete_version(deployed):
    storage, _, first, _ = deployed
    assert first.result.success
    out = first.result.output_for_node("deployed_model_version")
    assert out["promoted"]
    for role in ("classifier", "regressor"):
        assert out["decision"]["roles"][role]["reason"] == "nothing deployed yet"
        assert out["decision"]["roles"][role]["promote"]
    s = Storage(str(storage / "synthetic"))
    pointer = dep.read_current(s)
    assert pointer["version"] == out["version"]
    assert dep.verify_version(s, out["version"]) == []
    manifest = dep.read_manifest(s, out["version"])
    assert set(manifest["models"]) == set(dep.MODEL_ROLES)
    assert 0 < manifest["models"]["classifier"]["threshold"] < 1
    assert manifest["feature_schema"]["plan"]["categories"] == ["annual", "monthly", "two_year"]
    definition = manifest["feature_definition"]
    shares = sorted(c for c in definition["columns"] if c.startswith("cat_share_"))
    assert len(shares) == len(definition["categories"]) > 0
    assert definition["horizon_days"] == 90 and definition["label_cutoff"]
    assert set(manifest["artifacts"]) >= {
        "classifier.skops",
        "regressor.skops",
        "reference.parquet",
    }


def test_scores_are_the_deployed_models_predictions(deployed):
    """churn_scores holds, for every customer, the deployed classifier's probability, the
    label at the version's stored threshold and the deployed regressor's value."""
    import numpy as np

    storage, _, first, _ = deployed
    scores = first.result.output_for_node("churn_scores")
    current = first.result.output_for_node("current_features")
    assert scores["customer_id"].to_list() == current["customer_id"].to_list()
    s = Storage(str(storage / "synthetic"))
    version = first.result.output_for_node("deployed_model_version")["version"]
    manifest = dep.read_manifest(s, version)
    models = dep.load_models(s, manifest)
    columns = manifest["features"]["numeric"] + manifest["features"]["categorical"]
    frame = current.select(["customer_id", *columns]).to_pandas()
    proba = models["classifier"].predict_proba(frame)[:, 1]
    np.testing.assert_allclose(scores["churn_probability"].to_numpy(), proba, rtol=0, atol=1e-12)
    threshold = manifest["models"]["classifier"]["threshold"]
    assert scores["churn_label"].to_list() == (proba >= threshold).astype(int).tolist()
    assert 0 < scores["churn_label"].sum() < scores.height
    value = np.clip(models["regressor"].predict(frame), 0, None)
    np.testing.assert_allclose(scores["expected_total_sales"].to_numpy(), value, atol=1e-9)
    assert (scores["model_version"] == version).all()


def test_same_seed_same_metrics_and_gate_keeps(deployed):
    _, _, first, second = deployed
    for key in ("classification_models", "regression_models"):
        a, b = first.result.output_for_node(key), second.result.output_for_node(key)

        def metrics(board):
            return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in board]

        for x, y in zip(metrics(a["leaderboard"]), metrics(b["leaderboard"]), strict=True):
            assert x == y, {k: (x[k], y.get(k)) for k in x if x[k] != y.get(k)}
        assert a["champion_metrics"] == b["champion_metrics"]
    out = second.result.output_for_node("deployed_model_version")
    assert second.result.success and not out["promoted"]
    assert out["version"] == first.result.output_for_node("deployed_model_version")["version"]
    for role in ("classifier", "regressor"):
        d = out["decision"]["roles"][role]
        assert "not better" in d["reason"], d["reason"]
        # the same model on the same rows: a zero difference with a zero-width interval
        assert d["comparison"]["diff"] == 0 and d["interval"][d["metric"]] == [0.0, 0.0]
    assert "deployed_model_version" in second.materialized


def test_mlflow_runs_nested_finished_and_aliases(deployed):
    storage, _, first, _ = deployed
    client = mlflow_client(storage)
    exp = client.get_experiment_by_name("churn-synthetic")
    assert exp.artifact_location.startswith(str(storage))
    runs = client.search_runs([exp.experiment_id], max_results=200)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    out = first.result.output_for_node("classification_models")
    parent = out["mlflow"]["parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert {r.data.tags["candidate"] for r in children} == {"logistic_regression", "lightgbm"}
    assert all("roc_auc" in r.data.metrics for r in children)
    manifest = dep.read_manifest(
        Storage(str(storage / "synthetic")),
        first.result.output_for_node("deployed_model_version")["version"],
    )
    for role, name in (
        ("classifier", "synthetic-churn-classifier"),
        ("regressor", "synthetic-clv-regressor"),
    ):
        assert manifest["models"][role]["registered_model"] == name
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == manifest["models"][role]["registered_version"]
        assert champion.tags["deployed_version"] == manifest["version"]
        assert client.get_model_version_by_alias(name, "challenger")
        # registered on promotion only: the second (kept) run registered nothing
        assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == ["1"]

    # the registered classifier, loaded as MLflow users do, answers as churn_scores does:
    # pyfunc predict gives [P(retained), P(churned)], labelled at its 'threshold' tag
    import mlflow.pyfunc
    import numpy as np

    mlflow.set_tracking_uri(client.tracking_uri)
    name = "synthetic-churn-classifier"
    champion = client.get_model_version_by_alias(name, "champion")
    threshold = float(champion.tags["threshold"])
    assert threshold == manifest["models"]["classifier"]["threshold"]  # exact
    assert "P(churned) >= the threshold" in champion.description
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    scores = first.result.output_for_node("churn_scores").head(200)
    rows = first.result.output_for_node("current_features")
    rows = rows.filter(rows["customer_id"].is_in(scores["customer_id"].implode()))
    columns = [*manifest["features"]["numeric"], *manifest["features"]["categorical"]]
    proba = np.asarray(model.predict(rows.sort("customer_id").select(columns).to_pandas()))
    scores = scores.sort("customer_id")
    assert proba.shape == (scores.height, 2)
    assert np.allclose(proba[:, 1], scores["churn_probability"].to_numpy(), atol=1e-6)
    labels = (proba[:, 1] >= threshold).astype(np.int8)
    assert (labels == scores["churn_label"].to_numpy()).all()


def _deploy_a_copy(s: Storage) -> tuple[str, dict, str]:
    """Deploy a copy of the deployed version: (the deployed version, its manifest, the
    copy's version, now deployed)."""
    v1 = dep.read_current(s)["version"]
    m1 = dep.read_manifest(s, v1)
    artifacts = {n: s.read_bytes(f"deployments/versions/{v1}/{n}") for n in m1["artifacts"]}
    v2 = dep.new_version(s)
    dep.write_version(
        s, v2, artifacts, {k: v for k, v in m1.items() if k not in ("version", "artifacts")}
    )
    dep.set_current(s, v2, reason="test")
    return v1, m1, v2


def test_rollback_moves_pointer_and_alias(deployed, tmp_path):
    storage, _, first, _ = deployed
    s = Storage(str(storage / "synthetic"))
    v1, m1, v2 = _deploy_a_copy(s)
    env = {"CHURN_STORAGE_URL": str(storage), "PATH": str(BIN)}
    done = subprocess.run([str(BIN / "churn"), "rollback"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert f"now {v1}" in done.stdout and "aliases moved" in done.stdout
    assert "pinned until `churn unpin`" in done.stdout
    pointer = dep.read_current(s)
    assert pointer["version"] == v1 and pointer["history"][-1]["version"] == v2
    assert pointer["pinned"] == v1

    # while pinned, a retraining keeps the pinned version whatever the challengers
    from churn_assets.lib.release import release

    out = release(
        s,
        dataset="synthetic",
        classification=first.result.output_for_node("classification_models"),
        regression=first.result.output_for_node("regression_models"),
        training_set=first.result.output_for_node("training_set"),
        lineage={},
    )
    assert not out["promoted"] and out["version"] == v1
    assert f"version {v1} is pinned" in out["decision"]["reason"]
    unpinned = subprocess.run(
        [str(BIN / "churn"), "unpin"], capture_output=True, text=True, env=env
    )
    assert unpinned.returncode == 0, unpinned.stderr
    assert "automatic promotion is on" in unpinned.stdout
    assert dep.read_current(s)["pinned"] is None and dep.read_current(s)["version"] == v1
    again = subprocess.run(
        [str(BIN / "churn"), "rollback", "--to", "v19990101-000000"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 1 and "unknown version" in again.stderr


def test_a_rollback_with_mlflow_down_says_so_and_is_repaired_once_it_answers(deployed, monkeypatch):
    """MLflow unreachable: the pointer moves (serving follows it) and the rollback says
    the champion aliases did not; naming the deployed version again re-points them."""
    from churn_assets.lib.rollback import MOVED, aliases_problem, rollback_deployment
    from churn_assets.lib.settings import ChurnSettings
    from tests.conftest import free_port

    storage, _, _, _ = deployed
    s = Storage(str(storage / "synthetic"))
    v1, m1, v2 = _deploy_a_copy(s)
    client = mlflow_client(storage)
    name = "synthetic-churn-classifier"
    client.delete_registered_model_alias(name, "champion")  # what the failed move leaves
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set by any earlier client
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = ChurnSettings(
        storage_url=str(storage), mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"
    )

    pointer = rollback_deployment(s, down, "synthetic", v1, pin=False)

    assert dep.read_current(s)["version"] == v1
    assert pointer["mlflow_aliases"].startswith("not moved: ")
    problem = aliases_problem(pointer)
    # not pinned: the command it names leaves automatic promotion on (a plain rollback pins)
    assert problem and f"`churn rollback --to {v1} --no-pin` points them at it" in problem
    pinned_problem = aliases_problem({**pointer, "pinned": v1})
    assert pinned_problem and f"`churn rollback --to {v1}` points them at it" in pinned_problem
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias(name, "champion")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    up = ChurnSettings(storage_url=str(storage))
    repaired = rollback_deployment(s, up, "synthetic", v1, pin=False)

    assert repaired["already_deployed"] and repaired["mlflow_aliases"] == MOVED
    assert aliases_problem(repaired) is None
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == m1["models"]["classifier"]["registered_version"]
    assert dep.read_current(s)["version"] == v1 and not dep.read_current(s).get("pinned")
    # `churn rollback --to <the deployed version>` pins it, as every rollback does
    pinned = rollback_deployment(s, up, "synthetic", v1)
    assert pinned["already_deployed"] and dep.read_current(s)["pinned"] == v1
    dep.unpin(s)  # as the later tests expect it


def test_a_rollback_after_the_mlflow_store_was_lost_says_no_retry_can_move_the_aliases(
    deployed, tmp_path
):
    """The MLflow store lost (an empty one in its place, as MLflow creates on first use):
    `churn rollback` moves the pointer and says that the registry has no such model and
    that nothing is to be repeated. Before, it said "once MLflow answers, `churn rollback
    --to v…` points them at it", a command that failed the same way forever, and left a
    pending alias move that every later deployment run tried again."""
    from churn_assets.lib.rollback import ALIASES_PENDING

    storage, _, _, _ = deployed
    s = Storage(str(storage / "synthetic"))
    v1, _, v2 = _deploy_a_copy(s)
    env = {
        "CHURN_STORAGE_URL": str(storage),
        "PATH": str(BIN),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'lost' / 'mlflow.db'}",
    }
    (tmp_path / "lost").mkdir()

    done = subprocess.run([str(BIN / "churn"), "rollback"], capture_output=True, text=True, env=env)

    assert dep.read_current(s)["version"] == v1  # serving follows the pointer all the same
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert f"{v1} is deployed (serving follows it from storage" in message
    assert "has no synthetic-churn-classifier version" in message
    assert "its store was lost or replaced" in message
    assert "Nothing to repeat" in message
    assert "once MLflow answers" not in message
    assert not s.exists(ALIASES_PENDING)
    dep.unpin(s)  # as the later tests expect it


def test_a_rollback_never_moves_the_champion_of_another_platform_sharing_the_names(
    deployed, tmp_path
):
    """Two platforms on one MLflow server, both registering as `synthetic-churn-classifier`
    (what earlier releases did; a platform is now refused its first training there): one
    alias `champion` per name, so this platform's `churn rollback` moved the alias of the
    platform whose experiment the names are (staging's rollback changed what production's
    `models:/synthetic-churn-classifier@champion` loads). The pointer still moves; the
    aliases stay where the other platform put them, and the command says why and what to
    set."""
    from mlflow.tracking import MlflowClient

    from churn_assets.lib.rollback import ALIASES_PENDING

    storage, _, _, _ = deployed
    s = Storage(str(storage / "synthetic"))
    pointer = dep.read_current(s)
    ours = dep.read_manifest(s, pointer["version"])["models"]
    other = "s3://shared/production"
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = MlflowClient(uri, uri)  # the server both platforms use
    shared.create_experiment(
        "churn-synthetic", artifact_location=f"{other}/mlflow/artifacts/synthetic"
    )
    for role in ("classifier", "regressor"):
        name = ours[role]["registered_model"]
        shared.create_registered_model(name)
        mine = int(ours[role]["registered_version"])
        for number in range(1, mine + 2):  # this platform's number, and the other's newest
            storage_tag = s.url() if number == mine else f"{other}/synthetic"
            shared.create_model_version(name, f"{storage_tag}/model", tags={"storage": storage_tag})
        shared.set_registered_model_alias(name, "champion", str(mine + 1))
    env = {"CHURN_STORAGE_URL": str(storage), "PATH": str(BIN), "MLFLOW_TRACKING_URI": uri}

    done = subprocess.run(
        [str(BIN / "churn"), "rollback", "--to", pointer["version"], "--no-pin"],
        capture_output=True,
        text=True,
        env=env,
    )

    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert f"{pointer['version']} is deployed (serving follows it" in message
    assert "champion is on a version registered by the platform storing at" in message
    assert f"{other}/synthetic" in message and "CHURN_MLFLOW_NAMESPACE" in message
    for role in ("classifier", "regressor"):
        name = ours[role]["registered_model"]
        held = shared.get_model_version_by_alias(name, "champion")
        assert held.tags["storage"] == f"{other}/synthetic", role
    assert not s.exists(ALIASES_PENDING)  # nothing to repeat: a later run would take it too
    assert dep.read_current(s)["version"] == pointer["version"]


def test_a_failed_alias_move_is_repaired_by_the_next_deployment_run(deployed, monkeypatch):
    """A promotion whose champion-alias move found MLflow down leaves the move pending; the
    next deployment run (one that keeps the version) makes it, with no hand step. A pending
    move of a version no longer deployed is dropped, not made."""
    from churn_assets.lib.rollback import (
        ALIASES_PENDING,
        repair_champion_aliases,
        sync_champion_aliases,
    )
    from churn_assets.lib.settings import ChurnSettings
    from tests.conftest import free_port

    storage, _, _, _ = deployed
    s = Storage(str(storage / "synthetic"))
    v1, m1, v2 = _deploy_a_copy(s)
    dep.rollback(s, v1, pin=False)
    client = mlflow_client(storage)
    name = "synthetic-churn-classifier"
    client.delete_registered_model_alias(name, "champion")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = ChurnSettings(
        storage_url=str(storage), mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"
    )
    assert sync_champion_aliases(s, down, "synthetic", v1).startswith("not moved: ")
    assert s.read_json(ALIASES_PENDING)["version"] == v1
    # still down at the next run: still pending, and said so
    assert "still do not point at" in repair_champion_aliases(s, down, "synthetic")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    up = ChurnSettings(storage_url=str(storage))
    said = repair_champion_aliases(s, up, "synthetic")

    assert said and said.startswith(f"the MLflow champion aliases now point at {v1}")
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == m1["models"]["classifier"]["registered_version"]
    assert not s.exists(ALIASES_PENDING)
    assert repair_champion_aliases(s, up, "synthetic") is None  # nothing left to do

    # pending for a version deployed over since: dropped, the alias is left where it is
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sync_champion_aliases(s, down, "synthetic", v2)
    assert repair_champion_aliases(s, up, "synthetic") is None
    assert not s.exists(ALIASES_PENDING)
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(champion.version)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_tampered_deployment_is_refused(deployed):
    from churn_assets.lib.scoring import load_deployed

    storage, _, _, _ = deployed
    s = Storage(str(storage / "synthetic"))
    version = dep.read_current(s)["version"]
    path = storage / "synthetic" / "deployments" / "versions" / version / "regressor.skops"
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert dep.verify_version(s, version) == ["regressor.skops: sha256 mismatch"]
        with pytest.raises(dep.DeploymentError, match="sha256 mismatch"):
            load_deployed(s)
        with pytest.raises(dep.DeploymentError, match="refusing to point"):
            dep.set_current(s, version, reason="test")
    finally:
        path.write_bytes(original)


def test_pointer_survives_a_crash_mid_release(tmp_path, monkeypatch):
    s = Storage(str(tmp_path / "store"))
    v1 = dep.new_version(s)
    dep.write_version(s, v1, {"classifier.skops": b"one"}, {"models": {}})
    dep.set_current(s, v1, reason="first")
    real = Storage.write_bytes

    def crash_on_manifest(self, rel, data):
        if rel.endswith("manifest.json"):
            raise OSError("disk full")
        return real(self, rel, data)

    monkeypatch.setattr(Storage, "write_bytes", crash_on_manifest)
    v2 = "v20991231-235959"
    with pytest.raises(OSError):
        dep.write_version(s, v2, {"classifier.skops": b"two"}, {"models": {}})
    monkeypatch.undo()
    assert dep.read_current(s)["version"] == v1
    assert v2 not in dep.list_versions(s)
    # the parts it had written are removed: nothing of a version that was never complete
    assert not (tmp_path / "store" / "deployments" / "versions" / v2).exists()
    assert (tmp_path / "store" / "deployments" / "versions" / v1 / "manifest.json").exists()
    with pytest.raises(dep.DeploymentError):
        dep.set_current(s, v2, reason="partial")
    assert (
        json.loads((tmp_path / "store" / "deployments" / "current.json").read_text())["version"]
        == v1
    )


def test_floor_blocks_a_first_deployment(tmp_path, isolated_env):
    """Nothing deployed and no churn candidate above the floor: nothing is served, and the
    blocking check on the deployed version stops scoring."""
    config = small_synthetic(isolated_env, tmp_path, min_roc_auc=0.999)
    run = run_graph(config)
    check = run.check("classification_models", "churn_champion_above_floor")
    assert not check.passed and "< floor 1.00" in check.description
    out = run.result.output_for_node("deployed_model_version")
    assert out["version"] is None and not out["promoted"]
    assert "no candidate passes the floor" in out["decision"]["roles"]["classifier"]["reason"]
    # the value model passed its floor, but a version needs a churn model: nothing is
    # deployed, and the decision says so rather than "regressor promoted"
    reason = out["decision"]["reason"]
    assert reason.startswith("nothing deployed: a version needs a churn model"), reason
    assert "regressor ridge would be promoted: nothing deployed yet" in reason
    assert " ridge promoted" not in reason
    assert not out["decision"]["roles"]["regressor"]["promote"]
    served = run.check("deployed_model_version", "served_models_above_floors")
    assert not served.passed and "nothing is deployed" in served.description
    assert "churn_scores" not in run.materialized
    assert dep.read_current(Storage(str(isolated_env / "synthetic"))) is None


def _below_floors(first, *, churn: bool, value: bool):
    """The first run's model-set outputs with their candidates' holdout metrics pushed
    below the floors (the stored model files stay the real ones)."""
    import copy

    cls = copy.deepcopy(first.result.output_for_node("classification_models"))
    reg = copy.deepcopy(first.result.output_for_node("regression_models"))
    for f in cls["files"].values():
        if churn:
            f["metrics"]["roc_auc"] = 0.55
    for f in reg["files"].values():
        if value and f["name"] != "naive_baseline":
            f["metrics"]["r2_gain_vs_naive"] = -0.2
    return cls, reg


def test_refused_challenger_keeps_the_deployed_version(deployed):
    """Every candidate below its floor: the deployed version is kept, role by role, with
    the reason; the pointer does not move."""
    from churn_assets.lib.release import GateSettings, release

    storage, _, first, _ = deployed
    s = Storage(str(storage / "synthetic"))
    before = dep.read_current(s)["version"]
    cls, reg = _below_floors(first, churn=True, value=True)
    out = release(
        s,
        dataset="synthetic",
        classification=cls,
        regression=reg,
        training_set=first.result.output_for_node("training_set"),
        lineage={},
        settings=GateSettings(),
    )
    assert not out["promoted"] and out["version"] == before
    roles = out["decision"]["roles"]
    assert "no candidate passes the floor" in roles["classifier"]["reason"]
    assert "the deployed model stays" in roles["classifier"]["reason"]
    # the value role falls back to the naive forecast, which does not beat the deployed model
    assert roles["regressor"]["candidate"] == "naive_baseline"
    assert not roles["regressor"]["promote"]
    assert dep.read_current(s)["version"] == before


def _copy_model_files(src: Storage, dst: Storage, *results: dict) -> None:
    """The stored model files of model-set outputs, from ``src`` into ``dst``."""
    for result in results:
        for f in result["files"].values():
            dst.write_bytes(f["path"], src.read_bytes(f["path"]))


def test_poor_value_model_never_blocks_the_churn_model(deployed, tmp_path):
    """Nothing deployed, the value candidates lose to naive: the churn model is deployed,
    and the naive forecast serves the value."""
    from churn_assets.lib.release import GateSettings, release

    storage, _, first, _ = deployed
    fresh = Storage(str(tmp_path / "fresh"))
    src = Storage(str(storage / "synthetic"))
    cls, reg = _below_floors(first, churn=False, value=True)
    _copy_model_files(src, fresh, cls, reg)
    out = release(
        fresh,
        dataset="synthetic",
        classification=cls,
        regression=reg,
        training_set=first.result.output_for_node("training_set"),
        lineage={},
        settings=GateSettings(),
    )
    assert out["promoted"]
    manifest = out["manifest"]
    assert manifest["models"]["classifier"]["candidate"] == cls["champion"]
    assert manifest["models"]["regressor"]["candidate"] == "naive_baseline"
    assert "R² gain over naive -0.2000" in str(out["decision"]["roles"]["regressor"])


def test_a_rollback_during_a_deployment_stays_and_the_new_version_is_only_stored(
    deployed, tmp_path
):
    """An operator rolled back (and so pinned) while a retraining run was writing its new
    version: the run then moved the pointer to its version all the same, carrying the pin
    over, so the rollback was lost and a pin named a version not served. Now the rollback
    stays; the run's version is stored, not deployed, and the run says how to deploy it."""
    from churn_assets.lib.release import GateSettings, release

    storage, _, first, _ = deployed
    fresh = Storage(str(tmp_path / "fresh"))
    src = Storage(str(storage / "synthetic"))
    cls = first.result.output_for_node("classification_models")
    reg = first.result.output_for_node("regression_models")
    _copy_model_files(src, fresh, cls, reg)
    served = dep.read_current(src)["version"]  # an earlier version, stored in the copy
    for rel in src.list_files(f"deployments/versions/{served}", "*"):
        fresh.write_bytes(rel, src.read_bytes(rel))
    dep.set_current(fresh, served, reason="first", pinned=None)
    dep.write_version(fresh, "v20000101-000000", {}, {"models": {}})  # rolled back to

    def operator_rolls_back(role, model_uri, candidate, version, threshold):
        if role == "classifier":  # while the run registers its models
            dep.rollback(fresh, "v20000101-000000")
        return {}

    out = release(
        fresh,
        dataset="synthetic",
        classification=_below_floors(first, churn=False, value=False)[0],
        regression=None,
        training_set=first.result.output_for_node("training_set"),
        lineage={},
        settings=GateSettings(promote_ties=True),
        register=operator_rolls_back,
    )
    pointer = dep.read_current(fresh)
    assert pointer["version"] == "v20000101-000000" and pointer["pinned"] == "v20000101-000000"
    assert not out["promoted"] and out["version"] == "v20000101-000000"
    written = out["decision"]["not_deployed"]
    assert written in dep.list_versions(fresh) and written != served
    reason = out["decision"]["reason"]
    assert f"{written} written but not deployed" in reason
    assert f"judged its models against {served}" in reason
    assert f"churn rollback --to {written} --no-pin" in reason
    assert not out["decision"]["roles"]["classifier"]["promote"]
    marks = {r["version"]: r["never_deployed"] for r in dep.version_rows(fresh)}
    assert marks == {written: True, served: False, "v20000101-000000": False}


def test_a_deployment_failing_midway_leaves_the_champion_alias_on_what_is_served(
    deployed, tmp_path, monkeypatch
):
    """A promotion whose version cannot be written (the disk fills up while its files are
    written): the models were registered, but ``champion`` stays where it was (here: on
    nothing), only ``challenger`` names the new registration; no part of the version and
    no temporary file is left, and the error names the file and the full storage."""
    import errno

    from churn_assets.lib.release import GateSettings, release
    from churn_assets.lib.tracking import TrackingConfig, register_promoted

    storage, _, first, _ = deployed
    fresh = Storage(str(tmp_path / "full"))
    src = Storage(str(storage / "synthetic"))
    cls = first.result.output_for_node("classification_models")
    reg = first.result.output_for_node("regression_models")
    _copy_model_files(src, fresh, cls, reg)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from churn_assets.lib.settings import ChurnSettings

    tracking = TrackingConfig.from_settings(ChurnSettings(storage_url=str(storage)), "synthetic")
    name = "fullstore-churn-classifier"  # its own registered models: the module's stay as they are

    def register(role, model_uri, candidate, version, threshold):
        return register_promoted(
            tracking,
            dataset="fullstore",
            role=role,
            model_uri=model_uri,
            candidate=candidate,
            version=version,
            threshold=threshold,
        )

    def full_disk(f):  # what a file system with no room left answers, after a first part
        f.write(b"PAR1")
        raise OSError(errno.ENOSPC, "No space left on device")

    import churn_assets.lib.storage as storage_module

    real = storage_module.write_local_atomically

    def fill_up_at_the_onnx_graphs(path, write):
        return real(path, full_disk if path.endswith(".onnx") else write)

    monkeypatch.setattr(storage_module, "write_local_atomically", fill_up_at_the_onnx_graphs)
    with pytest.raises(OSError, match="the storage is full") as raised:
        release(
            fresh,
            dataset="synthetic",
            classification=cls,
            regression=reg,
            training_set=first.result.output_for_node("training_set"),
            lineage={},
            settings=GateSettings(),
            register=register,
        )
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC and ".onnx" in str(raised.value)
    assert dep.read_current(fresh) is None  # nothing deployed, as before
    versions = tmp_path / "full" / "deployments" / "versions"
    assert not versions.exists() or not any(versions.iterdir())
    assert not [p for p in (tmp_path / "full").rglob("*") if ".tmp-" in p.name]
    client = mlflow_client(storage)
    assert client.get_model_version_by_alias(name, "challenger")
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias(name, "champion")


def test_a_registration_whose_version_was_never_written_is_deleted(deployed, monkeypatch):
    """A retraining terminated between registering its models in MLflow and writing the
    version left that registered model version, with ``challenger`` on it, for good. The
    next deployment run deletes it and ``challenger`` names the newest recorded
    registration again; a run that fails after registering deletes its own at once. What is
    served and ``champion`` never move."""
    import dagster as dg

    import churn_assets.lib.release as release_module
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.lib.settings import ChurnSettings
    from churn_assets.lib.tracking import TrackingConfig, register_promoted
    from churn_assets.resources import ChurnPlatform

    storage, config, _, _ = deployed
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = Storage(str(storage / "synthetic"))
    dep.unpin(s)
    pointer = dep.read_current(s)
    served = dep.read_manifest(s, pointer["version"])["models"]["classifier"]
    tracking = TrackingConfig.from_settings(ChurnSettings(storage_url=str(storage)), "synthetic")
    client = mlflow_client(storage)
    name = "synthetic-churn-classifier"

    def aliases() -> dict[str, str]:
        return {a: str(client.get_model_version_by_alias(name, a).version) for a in ALIASES}

    def register(role, model_uri, candidate, version, threshold, storage_url=None):
        return register_promoted(
            tracking,
            dataset="synthetic",
            role=role,
            model_uri=model_uri,
            candidate=candidate,
            version=version,
            threshold=threshold,
            storage_url=storage_url or s.url(),
        )

    # another platform sharing the registry (a staging storage) deployed a newer version
    staging = register(
        "classifier", served["model_uri"], "ridge", dep.new_version(s), 0.5, "s3://staging/x"
    )
    before = aliases()
    # what the terminated run left: its model registered for a version it never wrote
    orphan = register("classifier", served["model_uri"], "lightgbm", dep.new_version(s), 0.5)
    assert aliases() == {**before, "challenger": orphan["registered_version"]}

    defs = build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("deployed_model_version")}
    )
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance)
    assert result.success and not result.output_for_node("deployed_model_version")["promoted"]
    with pytest.raises(Exception, match="not found"):
        client.get_model_version(name, orphan["registered_version"])
    assert client.get_model_version(name, staging["registered_version"])  # not this storage's
    assert aliases() == before
    said = [e.message for e in instance.all_logs(result.run_id) if "never written" in e.message]
    assert said and f"{name} {orphan['registered_version']};" in said[0]

    def registers_then_fails(storage, *, register, **_):  # storage refusing the version
        register("classifier", served["model_uri"], "lightgbm", dep.new_version(storage), 0.5)
        raise OSError("the storage refused the version's files")

    monkeypatch.setattr(release_module, "release", registers_then_fails)
    failed = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not failed.success
    assert aliases() == before
    versions = client.search_model_versions(f"name='{name}'")
    ours = [v for v in versions if v.tags.get("storage") == s.url()]
    assert all(v.tags.get("deployed_version") in dep.recorded_versions(s) for v in ours)
    assert dep.read_current(s) == pointer


ALIASES = ("challenger", "champion")


def test_retention_job_keeps_the_runs_the_deployed_version_uses(deployed, monkeypatch):
    """The retention job with one model set kept per kind: per kind the newest model-set
    run stays, and so does every older one whose models a kept version serves; the others
    (parent and candidate runs) are deleted, their rows with them (the embedded store is a
    database the platform reaches directly)."""
    import dagster as dg
    from mlflow.entities import ViewType

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    storage, config, first, _ = deployed
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    monkeypatch.setenv("CHURN_RETENTION_MODEL_SETS", "1")
    s = Storage(str(storage / "synthetic"))
    used = {
        m["mlflow_run_id"]
        for v in dep.list_versions(s)
        for m in dep.read_manifest(s, v)["models"].values()
    }
    client = mlflow_client(storage)
    exp = client.get_experiment_by_name("churn-synthetic")

    def all_runs() -> list:
        return client.search_runs(
            [exp.experiment_id],
            run_view_type=ViewType.ALL,
            order_by=["attributes.start_time DESC"],
            max_results=500,
        )

    runs = all_runs()
    children: dict[str, list] = {}
    for r in runs:
        children.setdefault(r.data.tags.get("mlflow.parentRunId", ""), []).append(r)
    parents = [r for r in children[""] if r.data.tags.get("model_set")]
    assert len(parents) >= 4  # both kinds, trained at least twice
    keep, drop = set(), set()
    for kind in ("classification", "regression"):
        mine = [p for p in parents if p.data.tags["model_set"] == kind]
        for i, parent in enumerate(mine):
            kids = children.get(parent.info.run_id, [])
            kept = i == 0 or any(k.info.run_id in used for k in kids)
            (keep if kept else drop).update(r.info.run_id for r in [parent, *kids])

    defs = build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))
    result = defs.resolve_job_def("retention_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    assert not (storage / "synthetic" / "assets" / result.run_id).exists()  # kept in the run
    report = result.output_for_node("retention_op")
    assert report["mlflow"]["deleted_runs"] == len(drop)
    left = {r.info.run_id: r.info.lifecycle_stage for r in all_runs()}
    assert all(left.get(run_id) == "active" for run_id in keep)
    assert not drop & left.keys()  # not even marked deleted: gone from the database
    parent = first.result.output_for_node("classification_models")["mlflow"]["parent_run_id"]
    assert client.get_run(parent).info.lifecycle_stage == "active"  # its models are served
    assert dep.verify_version(s, dep.read_current(s)["version"]) == []


def test_rollback_as_a_materialization_pins_then_unpin_judges_again(deployed, monkeypatch):
    """Config ``rollback_to: previous`` on ``deployed_model_version`` rolls back and pins
    (a materialization, visible in the lineage); ``unpin: true`` turns promotion back on."""
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    storage, config, _, _ = deployed
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    s = Storage(str(storage / "synthetic"))
    v1 = dep.read_current(s)["version"]
    m1 = dep.read_manifest(s, v1)
    v2 = dep.new_version(s)
    artifacts = {n: s.read_bytes(f"deployments/versions/{v1}/{n}") for n in m1["artifacts"]}
    dep.write_version(
        s, v2, artifacts, {k: v for k, v in m1.items() if k not in ("version", "artifacts")}
    )
    dep.set_current(s, v2, reason="a newer version")
    defs = build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("deployed_model_version")}
    )

    def materialize(**cfg):
        return job.execute_in_process(
            run_config={"ops": {"deployed_model_version": {"config": cfg}}},
            instance=dg.DagsterInstance.ephemeral(),
        )

    rolled = materialize(rollback_to="previous")
    out = rolled.output_for_node("deployed_model_version")
    assert out["rolled_back"] and out["version"] == v1
    assert dep.read_current(s)["version"] == v1 and dep.read_current(s)["pinned"] == v1
    both = job.execute_in_process(
        run_config={
            "ops": {"deployed_model_version": {"config": {"unpin": True, "rollback_to": v1}}}
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not both.success and dep.read_current(s)["pinned"] == v1  # refused, nothing moved
    (failure,) = [e for e in both.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "sets both unpin and rollback_to" in failure.event_specific_data.error.to_string()
    judged = materialize(unpin=True)
    out = judged.output_for_node("deployed_model_version")
    assert dep.read_current(s)["pinned"] is None
    assert "pinned" not in out["decision"]["reason"] and out["decision"]["roles"]


def test_a_run_that_trains_refuses_an_unknown_rollback_version_before_training(
    deployed, monkeypatch
):
    """The retraining job's launchpad with ``rollback_to`` mistyped trained for minutes and
    only then was refused; ``training_set`` now refuses it first, naming the known versions.
    A version that exists goes through to the rollback."""
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    storage, config, _, _ = deployed
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    s = Storage(str(storage / "synthetic"))
    current = dep.read_current(s)
    defs = build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("training_set"), dg.AssetKey("deployed_model_version")}
    )

    def run(to: str, **more: bool):
        return job.execute_in_process(
            run_config={"ops": {"deployed_model_version": {"config": {"rollback_to": to, **more}}}},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )

    both = run(current["version"], unpin=True)  # refused after training, before this
    (failure,) = [e for e in both.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "training_set"
    assert "sets both unpin and rollback_to" in failure.event_specific_data.error.to_string()

    typo = run("v2026-bad")
    (failure,) = [e for e in typo.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "training_set"
    message = failure.event_specific_data.error.to_string()
    assert "rolls back to 'v2026-bad': unknown version v2026-bad; known: v" in message
    assert current["version"] in message and "nothing was trained" in message
    assert dep.read_current(s)["version"] == current["version"]
    known = run(current["version"])  # the deployed one: pinned where it is
    assert known.success and dep.read_current(s)["pinned"] == current["version"]
    dep.unpin(s)


def test_a_model_rolled_back_from_is_not_deployed_again_after_unpin(deployed):
    """A version served the champion, the operator rolled back to an older version serving
    another model, then unpinned: judging the same model sets again promoted the model just
    rolled away from, under a new version name. Now that role is kept, and said why."""
    from churn_assets.lib.release import release

    storage, _, first, second = deployed
    s = Storage(str(storage / "synthetic"))
    v1 = dep.read_current(s)["version"]
    m1 = dep.read_manifest(s, v1)
    served = m1["models"]["classifier"]["sha256"]
    run = next(  # the graph run whose churn champion v1 serves (its files are kept)
        r
        for r in (second, first)  # the newest first: retention keeps its files
        if r.result.output_for_node("classification_models")["files"]["champion"]["sha256"]
        == served
    )
    classification = run.result.output_for_node("classification_models")
    champion = classification["files"]["champion"]
    if not s.exists(champion["path"]):  # pruned by the retention test: v1 holds its bytes
        s.write_bytes(champion["path"], s.read_bytes(f"deployments/versions/{v1}/classifier.skops"))
    # the older version serves v1's fallback model (the best simple one) as its churn model
    artifacts = {n: s.read_bytes(f"deployments/versions/{v1}/{n}") for n in m1["artifacts"]}
    artifacts["classifier.skops"] = artifacts[m1["models"]["classifier_fallback"]["file"]]
    fallback = m1["models"]["classifier_fallback"]
    assert fallback["sha256"] != served
    models = {
        **m1["models"],
        "classifier": {
            **m1["models"]["classifier"],
            "sha256": fallback["sha256"],
            "candidate": fallback["candidate"],
        },
    }
    older = dep.new_version(s)
    manifest = {k: v for k, v in m1.items() if k not in ("version", "artifacts")}
    dep.write_version(s, older, artifacts, {**manifest, "models": models})
    dep.rollback(s, older)  # away from v1, whose champion the model sets still hold
    dep.unpin(s)
    try:
        out = release(
            s,
            dataset="synthetic",
            classification=classification,
            regression=None,  # the churn role is the one judged here
            training_set=run.result.output_for_node("training_set"),
            lineage={},
        )
        reason = out["decision"]["roles"]["classifier"]["reason"]
        assert not out["promoted"] and dep.read_current(s)["version"] == older
        assert f"is the model {v1} served, which a rollback moved away from" in reason
    finally:
        dep.set_current(s, v1, reason="as the other tests expect it", pinned=None)


def test_scores_say_which_deployed_features_the_current_table_lacks(deployed, monkeypatch):
    """A config edit dropped an attribute the deployed model uses: churn_scores filled it in
    as missing for every customer without a word. Its metadata and log now name it, and the
    drift report counts a feature gone altogether as drift."""
    import dagster as dg
    import polars as pl

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    storage, config, _, _ = deployed
    monkeypatch.setenv("CHURN_STORAGE_URL", str(storage))
    s = Storage(str(storage / "synthetic"))
    numeric = dep.read_manifest(s, dep.read_current(s)["version"])["features"]["numeric"]
    gone = next(c for c in numeric if c != "customer_id")
    table = storage / "synthetic" / "assets" / "current_features.parquet"
    before = table.read_bytes()
    pl.read_parquet(table).drop(gone).write_parquet(table)
    try:
        defs = build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={dg.AssetKey("churn_scores"), dg.AssetKey("drift_report")}
        )
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
        meta = result.asset_materializations_for_node("churn_scores")[0].metadata
        assert meta["features_missing"].value == [gone]
        drift = result.output_for_node("drift_report")
        assert drift["drifted"] and gone in drift["drifted_columns"]
        assert any("no values at all now in" in r for r in drift["verdict_reasons"])
    finally:
        table.write_bytes(before)
