"""Two data sets side by side in one Dagster instance, on the shared real `churn dev`.

The repository's ``workspace.yaml`` has two code locations: ``churn_assets`` (the default data
set, synthetic) and ``telco`` (``churn_assets.locations``, the IBM Telco snapshot from
``CHURN_REAL_DATA_DIR``). Each ingests, trains and deploys on its own: its landing sensor sees
its files, its drift sensor starts its first retraining. The test reads what a user sees: the
UI's asset graph, the runs, the instance's pools, the storage, the MLflow registry and the
sidecar.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import real_data_dir
from tests.integration.conftest import Deployed

pytestmark = pytest.mark.integration

ASSET_NODES = "{ assetNodes { assetKey { path } groupName repository { location { name } } } }"
RUNS_OF_LOCATIONS = """
{ runsOrError { ... on Runs { results { runId jobName status
  repositoryOrigin { repositoryLocationName } tags { key value } } } } }
"""


@pytest.mark.timeout(2400)
def test_two_datasets_ingest_train_and_serve_side_by_side(deployed_dev: Deployed):
    """Timeout 2400 s: when this test runs alone it waits for the shared platform's first
    deployment, then for telco's."""
    if not (real_data_dir() / "telco_customer_churn.csv").exists():
        pytest.skip(f"the telco data set is not in {real_data_dir()} (CHURN_REAL_DATA_DIR)")
    dev = deployed_dev.dev
    boot = dev.wait(
        lambda: dev.runs("churn/trigger", "bootstrap", dataset="telco"), 600, "telco's bootstrap"
    )
    assert dev.wait(lambda: dev.finished(boot[0]["runId"]), 900, "telco's first deployment") == (
        "SUCCESS"
    )

    # one asset graph per location: the same assets, telco's under its prefix, none shared
    nodes = dev.query(ASSET_NODES)["assetNodes"]
    by_location: dict[str, set[str]] = {}
    for n in nodes:
        by_location.setdefault(n["repository"]["location"]["name"], set()).add(
            "/".join(n["assetKey"]["path"])
        )
    default, telco = by_location["churn_assets"], by_location["telco"]
    assert "deployed_model_version" in default and "raw_transactions" in default
    assert telco == {f"telco/{k}" for k in default}

    # each data set's runs in its own location, tagged with it; both deployed a version
    runs = dev.query(RUNS_OF_LOCATIONS)["runsOrError"]["results"]
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        location = r["repositoryOrigin"]["repositoryLocationName"]
        if "churn/dataset" in tags:
            assert tags["churn/dataset"] == ("telco" if location == "telco" else "synthetic"), r
    telco_jobs = {
        r["jobName"]
        for r in runs
        if r["repositoryOrigin"]["repositoryLocationName"] == "telco" and r["status"] == "SUCCESS"
    }
    assert {"customers_features_drift", "retraining"} <= telco_jobs
    (telco_run, telco_meta) = dev.materializations("telco/deployed_model_version")[0]
    (_, synthetic_meta) = dev.materializations("deployed_model_version")[0]
    assert telco_run == boot[0]["runId"]
    for name, meta in (("telco", telco_meta), ("synthetic", synthetic_meta)):
        pointer = json.loads((dev.storage / name / "deployments" / "current.json").read_text())
        assert pointer["version"] == meta["version"], name

    # storage, landing folder and MLflow names per data set
    assert (dev.storage / "telco" / "assets" / "current_features.parquet").exists()
    assert (dev.storage / "synthetic" / "assets" / "current_features.parquet").exists()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{dev.storage / 'mlflow' / 'mlflow.db'}")
    names = {m.name for m in client.search_registered_models()}
    assert {"telco-churn-classifier", "synthetic-churn-classifier"} <= names

    # one retraining per data set at a time: each data set's own pool, limit 1
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        storage = instance.event_log_storage
        for pool in ("retraining", "telco/retraining", "ingest", "telco/ingest"):
            assert storage.get_concurrency_info(pool).slot_count == 1, pool
        assert instance.get_dynamic_partitions("telco__transaction_files") == []
        assert instance.get_dynamic_partitions("transaction_files")

    # the sidecar serves both: the default at /predict, telco under /datasets/telco/
    base = f"http://127.0.0.1:{dev.serving_port}"
    served = dev.wait(
        lambda: (
            {
                d["name"]: d
                for d in httpx.get(f"{base}/datasets", timeout=10).json()["datasets"]
                if d["state"] == "ready"
            }.keys()
            >= {"synthetic", "telco"}
            and httpx.get(f"{base}/datasets", timeout=10).json()
        ),
        120,
        "the sidecar to serve both data sets",
    )
    versions = {d["name"]: d["version"] for d in served["datasets"]}
    assert versions["telco"] == telco_meta["version"]
    r = httpx.post(
        f"{base}/datasets/telco/predict", json={"records": [{"customer_id": "7590-VHVEG"}]}
    )
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert pred["model_version"] == telco_meta["version"]
    assert 0.0 <= pred["churn_probability"] <= 1.0


@pytest.mark.timeout(2400)
def test_a_date_range_backfill_runs_through_the_daemon(deployed_dev: Deployed):
    """`churn backfill --since --until` against the running platform: one queued run of the
    landing job per landing file with a line in the range, each of its partition, run by the
    daemon to success. Timeout 2400 s: see above."""
    import subprocess

    from tests.conftest import BIN, REPO
    from tests.integration.conftest import dev_environment

    dev = deployed_dev.dev
    env = dev_environment(dev.home.parent, dev.storage, dev.serving_port)
    out = subprocess.run(
        [str(BIN / "churn"), "backfill", "--since", "2000-01-01", "--until", "2100-12-31"]
        + ["--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["launched"] and report["location"] == "churn_assets"
    keys = sorted(f["key"] for f in report["files"])
    assert keys and all(f["lines"] > 0 for f in report["files"])

    def backfill_runs() -> list[dict]:
        found = []
        for r in dev.query(RUNS_OF_LOCATIONS)["runsOrError"]["results"]:
            tags = {t["key"]: t["value"] for t in r["tags"]}
            if "dagster/backfill" in tags:
                found.append(r | {"partition": tags.get("dagster/partition")})
        return found

    runs = dev.wait(
        lambda: (found := backfill_runs()) and len(found) == len(keys) and found,
        300,
        "the backfill's runs",
    )
    assert sorted(r["partition"] for r in runs) == keys
    assert {r["jobName"] for r in runs} == {"ingest_features_drift"}
    for r in runs:
        assert dev.wait(lambda r=r: dev.finished(r["runId"]), 900, "a backfill run") == "SUCCESS"
