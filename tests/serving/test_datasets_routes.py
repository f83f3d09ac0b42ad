"""Several data sets served by one sidecar: ``/datasets`` and ``/datasets/{name}/...``.

Two real deployments made by the graph (the session's synthetic one and a small telco one)
are served by real ``churn serve`` processes and called over HTTP.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import BUILTIN_DIR
from churn_assets.lib.storage import Storage
from tests.conftest import real_data_dir
from tests.helpers import run_graph
from tests.integration.test_deployment import FAST_MODELS
from tests.serving.conftest import DATASET, Deployment, sidecar, wait_until

pytestmark = pytest.mark.integration

TELCO = "telco"
#: Rows of the telco file the second data set is trained on (enough for a gated model).
TELCO_CUSTOMERS = 2000


@dataclass(frozen=True)
class Deployed:
    """One data set's deployment under a storage root."""

    root: Path
    name: str
    version: str


def copy_dataset(src_root: Path, name: str, dest_root: Path) -> None:
    """Copy a data set's deployments and current_features table to another root (what a
    release or a storage sync puts there)."""
    src, dest = src_root / name, dest_root / name
    (dest / "assets").mkdir(parents=True)
    shutil.copy2(
        src / "assets" / "current_features.parquet", dest / "assets" / "current_features.parquet"
    )
    shutil.copytree(src / "deployments", dest / "deployments")


@pytest.fixture(scope="module")
def telco(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """The telco data set (its first TELCO_CUSTOMERS customers) deployed by the graph."""
    source = real_data_dir() / "telco_customer_churn.csv"
    if not source.exists():
        pytest.skip(f"{source} not found (set CHURN_REAL_DATA_DIR)")
    tmp = tmp_path_factory.mktemp("telco-deploy")
    lines = source.read_text().splitlines(keepends=True)[: TELCO_CUSTOMERS + 1]
    (tmp / "telco.csv").write_text("".join(lines))
    cfg = yaml.safe_load((BUILTIN_DIR / "telco.yaml").read_text())
    cfg["customers"]["path"] = str(tmp / "telco.csv")
    cfg["models"] = dict(FAST_MODELS)
    config = tmp / "telco.yaml"
    config.write_text(yaml.safe_dump(cfg))
    storage = tmp / "storage"
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("CHURN_STORAGE_URL", str(storage))
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        run = run_graph(str(config))
        assert run.result.success
        assert run.result.output_for_node("deployed_model_version")["promoted"]
    finally:
        mp.undo()
    version = dep.read_current(Storage(str(storage / TELCO)))["version"]
    return Deployed(storage, TELCO, version)


@pytest.fixture(scope="module")
def both_root(deployment: Deployment, telco: Deployed, tmp_path_factory) -> Path:
    """A storage root holding the synthetic and the telco deployments side by side."""
    root = tmp_path_factory.mktemp("both") / "storage"
    copy_dataset(deployment.root, DATASET, root)
    copy_dataset(telco.root, TELCO, root)
    return root


@pytest.fixture(scope="module")
def car(both_root: Path, tmp_path_factory):
    """A sidecar (default: synthetic) finding both data sets by itself."""
    logs = tmp_path_factory.mktemp("both-logs")
    with sidecar(str(both_root), logs, poll_seconds=0.5, log_flush_seconds=0.5) as running:
        with running.client() as c:
            wait_until(lambda: c.get(f"/datasets/{TELCO}/ready").status_code == 200, timeout=60)
        yield running


def telco_row(n: int) -> dict[str, str]:
    """Row ``n`` of the telco file the second data set was trained on (source columns)."""
    with open(real_data_dir() / "telco_customer_churn.csv", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i == n:
                return row
    raise IndexError(n)


def metric(text: str, prefix: str) -> float:
    """Sum of the samples whose line starts with ``prefix``."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


# ------------------------------------------------------------------ two data sets


def test_both_data_sets_answer_with_their_own_versions(car, deployment, telco):
    with car.client() as c:
        listing = c.get("/datasets")
        assert listing.status_code == 200
        body = listing.json()
        assert body["default"] == DATASET
        by_name = {d["name"]: d for d in body["datasets"]}
        assert [d["name"] for d in body["datasets"]] == [DATASET, TELCO]
        assert by_name[DATASET]["version"] == deployment.version
        assert by_name[DATASET]["default"] is True
        assert by_name[TELCO]["version"] == telco.version
        assert by_name[TELCO]["deployed_version"] == telco.version
        assert by_name[TELCO]["state"] == "ready" and by_name[TELCO]["reason"] is None

        for name, version in ((DATASET, deployment.version), (TELCO, telco.version)):
            ready = c.get(f"/datasets/{name}/ready")
            assert ready.status_code == 200 and ready.json() == {
                "ready": True,
                "version": version,
                "reason": None,
            }
            info = c.get(f"/datasets/{name}/model-info")
            assert info.status_code == 200 and info.json()["version"] == version
            schema = c.get(f"/datasets/{name}/predict/schema")
            assert schema.status_code == 200 and schema.json()["version"] == version
            health = c.get(f"/datasets/{name}/health").json()
            assert health["version"] == version and health["ready"] is True
            assert health["storage"].endswith(f"/{name}"), health["storage"]
        assert c.get("/datasets/nosuch/health").status_code == 404
        telco_features = set(c.get(f"/datasets/{TELCO}/predict/schema").json()["numeric"])
        default_features = set(c.get("/predict/schema").json()["numeric"])
        assert "monthly_charges" in telco_features and telco_features != default_features


def test_default_under_its_name_answers_as_the_unprefixed_routes(car, deployment):
    feats = pl.read_parquet(deployment.dataset_dir / "assets" / "current_features.parquet")
    body = {
        "records": [
            {"customer_id": feats["customer_id"][0]},
            {"customer_id": feats["customer_id"][7]},
            {"features": feats.drop("customer_id").row(3, named=True)},
        ]
    }
    with car.client() as c:
        plain = c.post("/predict", json=body)
        named = c.post(f"/datasets/{DATASET}/predict", json=body)
        assert plain.status_code == named.status_code == 200
        assert named.json()["predictions"] == plain.json()["predictions"]
        assert named.json()["model_version"] == deployment.version
        for route in ("/predict/schema", "/model-info", "/ready"):
            assert c.get(f"/datasets/{DATASET}{route}").json() == c.get(route).json()
        # the same refusals too
        bad = {"records": [{"customer_id": "no-such-customer"}]}
        assert c.post(f"/datasets/{DATASET}/predict", json=bad).json() == (
            c.post("/predict", json=bad).json()
        )
        assert c.post(f"/datasets/{DATASET}/predict", content=b"{").status_code == 422


def test_telco_answers_with_its_own_model_and_source_column_names(car, telco):
    first, other = telco_row(0), telco_row(5)
    features = {
        k: v
        for k, v in other.items()
        if k not in ("customerID", "Churn", "TotalCharges", "tenure", "MonthlyCharges")
    }
    features["tenure"] = int(other["tenure"])
    features["MonthlyCharges"] = float(other["MonthlyCharges"])
    body = {"records": [{"customer_id": first["customerID"]}, {"features": features}]}
    with car.client() as c:
        r = c.post(f"/datasets/{TELCO}/predict", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model_version"] == telco.version and answer["count"] == 2
        assert answer["predictions"][0]["customer_id"] == first["customerID"]
        for p in answer["predictions"]:
            assert 0.0 <= p["churn_probability"] <= 1.0
        # the default data set does not know telco's customers nor its columns
        assert c.post("/predict", json=body).status_code in (404, 422)
        # a telco record missing a required feature is refused by telco's own schema
        del features["Contract"]
        refused = c.post(f"/datasets/{TELCO}/predict", json={"records": [{"features": features}]})
        assert refused.status_code == 422 and "contract" in refused.text.lower()


def test_unknown_or_undeployed_names_answer_404_naming_the_served_ones(car):
    with car.client() as c:
        for path in (
            "/datasets/nope/predict/schema",
            "/datasets/nope/model-info",
            "/datasets/nope/ready",
            "/datasets/online_retail/ready",  # a known config with nothing deployed
            "/datasets/..%2F..%2Fetc%2Fpasswd/model-info",
            "/datasets/synthetic%2F..%2Ftelco/ready",
        ):
            r = c.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["served"] == [DATASET, TELCO], path
            assert "synthetic, telco" in r.json()["detail"], path
        r = c.post("/datasets/nope/predict", json={"records": [{"customer_id": "x"}]})
        assert r.status_code == 404 and r.json()["served"] == [DATASET, TELCO]
        assert "unknown data set 'nope'" in r.json()["detail"]
        r = c.get("/datasets/online_retail/model-info")
        assert "nothing deployed" in r.json()["detail"]
        # a served data set's route with the other method is a 405, not "not served"
        for method, path, allowed in (
            ("GET", f"/datasets/{TELCO}/predict", "POST"),
            ("POST", f"/datasets/{TELCO}/ready", "GET"),
            ("POST", f"/datasets/{TELCO}/model-info", "GET"),
        ):
            r = c.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == allowed, (path, r.text)
            assert f"takes {allowed}, not {method}" in r.json()["detail"]


def test_each_data_set_has_its_own_metrics_and_inference_log(car, both_root, telco):
    body = {"records": [{"customer_id": telco_row(i)["customerID"]} for i in range(3)]}
    with car.client() as c:
        before = c.get("/metrics").text
        r = c.post(f"/datasets/{TELCO}/predict", json=body)
        assert r.status_code == 200
        after = c.get("/metrics").text
    own = 'churn_dataset_serving_predictions_total{dataset="telco"'
    assert metric(after, own) - metric(before, own) == 3
    # the default data set's counters do not count telco's answers
    default = "churn_serving_predictions_total{"
    assert metric(after, default) == metric(before, default)
    assert (
        metric(after, 'churn_dataset_serving_requests_total{dataset="telco",endpoint="/predict"')
        >= 1
    )
    assert metric(
        after, 'churn_serving_requests_total{endpoint="/datasets/{name}/predict",method="POST"'
    ) > metric(
        before, 'churn_serving_requests_total{endpoint="/datasets/{name}/predict",method="POST"'
    )
    (info,) = [
        line
        for line in after.splitlines()
        if line.startswith("churn_dataset_serving_model_version_info{")
    ]
    assert 'dataset="telco"' in info and f'version="{telco.version}"' in info
    assert metric(after, 'churn_dataset_serving_model_loaded{dataset="telco"}') == 1
    assert metric(after, "churn_serving_model_loaded ") == 1

    log_dir = both_root / TELCO / "inference_log"

    asked = {telco_row(i)["customerID"] for i in range(3)}

    def logged() -> list[str] | None:  # this request's records (earlier tests logged row 0)
        files = list(log_dir.rglob("*.parquet"))
        if not files:
            return None
        ids = pl.concat([pl.read_parquet(f) for f in files], how="diagonal")["customer_id"]
        return ids.to_list() if asked <= set(ids.to_list()) else None

    assert wait_until(logged, timeout=30)
    default_logs = list((both_root / DATASET / "inference_log").rglob("*.parquet"))
    for f in default_logs:
        assert telco_row(0)["customerID"] not in pl.read_parquet(f)["customer_id"].to_list()


# ---------------------------------------------------- later deployments, broken ones


def test_a_data_set_deployed_after_start_up_is_served_after_a_poll(deployment, telco, tmp_path):
    root = tmp_path / "storage"
    copy_dataset(deployment.root, DATASET, root)
    with (
        sidecar(str(root), tmp_path / "logs", poll_seconds=0.5) as running,
        running.client() as c,
    ):
        assert [d["name"] for d in c.get("/datasets").json()["datasets"]] == [DATASET]
        r = c.get(f"/datasets/{TELCO}/ready")
        assert r.status_code == 404 and r.json()["served"] == [DATASET]
        copy_dataset(telco.root, TELCO, root)  # the release of a second data set

        def served() -> httpx.Response | None:
            r = c.get(f"/datasets/{TELCO}/ready")
            return r if r.status_code == 200 else None

        ready = wait_until(served, timeout=60)
        assert ready.json()["version"] == telco.version
        listing = c.get("/datasets").json()["datasets"]
        assert [(d["name"], d["version"]) for d in listing] == [
            (DATASET, deployment.version),
            (TELCO, telco.version),
        ]
        r = c.post(
            f"/datasets/{TELCO}/predict",
            json={"records": [{"customer_id": telco_row(0)["customerID"]}]},
        )
        assert r.status_code == 200 and r.json()["model_version"] == telco.version


def test_a_broken_or_undeployed_data_set_answers_503_and_the_others_still_answer(
    deployment, telco, tmp_path
):
    root = tmp_path / "storage"
    copy_dataset(deployment.root, DATASET, root)
    copy_dataset(telco.root, TELCO, root)
    version_dir = root / TELCO / "deployments" / "versions" / telco.version
    manifest: dict[str, Any] = dep.read_manifest(Storage(str(root / TELCO)), telco.version)
    artifact = next(n for n in sorted(manifest["artifacts"]) if n.startswith("classifier"))
    data = (version_dir / artifact).read_bytes()
    (version_dir / artifact).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with (
        sidecar(
            str(root), tmp_path / "logs", poll_seconds=0.5, datasets=f"{TELCO},online_retail"
        ) as running,
        running.client() as c,
    ):

        def refused() -> dict[str, Any] | None:
            listing = {d["name"]: d for d in c.get("/datasets").json()["datasets"]}
            t = listing.get(TELCO)
            return listing if t and t["state"] == "unavailable" else None

        listing = wait_until(refused, timeout=60)
        assert set(listing) == {DATASET, TELCO, "online_retail"}
        assert f"{artifact}: sha256 mismatch" in listing[TELCO]["reason"]
        assert listing[TELCO]["deployed_version"] == telco.version
        assert listing[TELCO]["version"] is None
        assert listing["online_retail"]["state"] == "unavailable"
        assert "nothing deployed" in listing["online_retail"]["reason"]

        body = {"records": [{"customer_id": telco_row(0)["customerID"]}]}
        for name, reason in ((TELCO, "sha256 mismatch"), ("online_retail", "nothing deployed")):
            r = c.post(f"/datasets/{name}/predict", json=body)
            assert r.status_code == 503 and reason in r.json()["detail"], r.text
            for route in ("/ready", "/model-info", "/predict/schema"):
                r = c.get(f"/datasets/{name}{route}")
                assert r.status_code == 503, (name, route, r.text)
                assert reason in r.text
        # the default data set is untouched, under both of its routes
        feats = pl.read_parquet(deployment.dataset_dir / "assets" / "current_features.parquet")
        ok = {"records": [{"customer_id": feats["customer_id"][0]}]}
        for path in ("/predict", f"/datasets/{DATASET}/predict"):
            r = c.post(path, json=ok)
            assert r.status_code == 200 and r.json()["model_version"] == deployment.version
        assert c.get("/ready").status_code == 200
        # telco is not discovered in addition to the list, and nothing else is served
        r = c.get("/datasets/nope/ready")
        assert r.status_code == 404
        assert r.json()["served"] == [DATASET, "online_retail", TELCO]


def test_an_unknown_name_in_the_setting_stops_the_sidecar_with_a_clear_error(deployment, tmp_path):
    root = tmp_path / "storage"
    copy_dataset(deployment.root, DATASET, root)
    with (
        pytest.raises(RuntimeError, match="CHURN_SERVING_DATASETS names unknown data sets"),
        sidecar(str(root), tmp_path / "logs", datasets="telco,../etc"),
    ):
        pass


def test_a_listed_data_set_whose_config_does_not_load_stops_the_sidecar(deployment, tmp_path):
    """A data set named in ``CHURN_SERVING_DATASETS`` whose config is broken: the sidecar
    started anyway, said only a warning, and its routes answered 404 ("no such route");
    it now stops at once, naming the data set and why."""
    root = tmp_path / "storage"
    copy_dataset(deployment.root, DATASET, root)
    own = tmp_path / "datasets"
    own.mkdir()
    (own / "shop.yaml").write_text("name: shop\nmodels: {min_roc_auc: 7}\n")
    with (
        pytest.raises(RuntimeError, match="names data sets that cannot be served: shop: config"),
        sidecar(
            str(root),
            tmp_path / "logs",
            datasets="shop",
            extra_env={"CHURN_DATASETS_DIR": str(own)},
        ),
    ):
        pass


def test_a_current_table_lacking_a_deployed_feature_is_said_in_the_listing(deployment, tmp_path):
    """The current_features table lost a feature the deployed version uses (a config
    edit): the sidecar cannot use it for id lookups, which /datasets reported as plainly
    "ready". The data set stays ready (feature records are answered) with the reason."""
    root = tmp_path / "storage"
    copy_dataset(deployment.root, DATASET, root)
    table = root / DATASET / "assets" / "current_features.parquet"
    gone = dep.read_manifest(deployment.storage(), deployment.version)["features"]["numeric"][0]
    pl.read_parquet(table).drop(gone).write_parquet(table)
    with sidecar(str(root), tmp_path / "logs") as car, car.client() as c:
        (listed,) = c.get("/datasets").json()["datasets"]
        assert listed["state"] == "ready"
        assert listed["reason"].startswith("id lookups: ")
        assert "lacks the deployed feature columns" in listed["reason"] and gone in listed["reason"]
