"""The whole asset graph with one process per step and every input and output in S3 (a real
moto_server over HTTP): the shape of dagster-k8s's ``k8s_job_executor``, where steps share
nothing but storage.

The run uses the code location's own default executor (steps forked from a server that
preloaded the code location, as "Materialize all" in the UI runs), on a persistent Dagster
instance. Each step is a separate process, so every table, model and deployment file a step
reads was written to S3 by another process.
"""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest

pytestmark = pytest.mark.integration  # starts moto_server, forks step processes

BUCKET = "churn-steps"
PREFIX = "platform"
#: Small enough for a test, large enough for every default candidate and check.
CUSTOMERS = 1_000
DAYS = 300
TABLES = (
    "raw_customers",
    "raw_transactions",
    "current_features",
    "customer_features",
    "training_set",
    "churn_scores",
)


def graph_job() -> dg.JobDefinition:
    """Every asset of the code location as one job with the location's default executor
    (reconstructable: step processes import this module and call it)."""
    from churn_assets.definitions import defs

    everything = dg.define_asset_job("all_assets", selection=dg.AssetSelection.all())
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[everything])).resolve_job_def(
        "all_assets"
    )


@pytest.fixture
def s3_platform(s3_env, tmp_path, monkeypatch):
    """Synthetic data in an S3 landing zone; storage and landing in S3, MLflow in a local
    SQLite store (a tracking server in a real cluster)."""
    from churn_assets.lib.generator import generate

    s3 = s3_env()
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("CHURN_STORAGE_URL", f"s3://{BUCKET}/{PREFIX}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from churn_assets.lib.settings import ChurnSettings

    landing = f"s3://{BUCKET}/{PREFIX}/landing/synthetic"
    options = ChurnSettings().storage_options(landing)
    generate(
        landing,
        customers=CUSTOMERS,
        days=DAYS,
        seed=5,
        storage_options=options,
    )
    return s3


def test_every_step_runs_in_its_own_process_and_shares_only_s3(s3_platform, tmp_path):
    from churn_assets.lib import deployment as dep
    from churn_assets.lib.settings import ChurnSettings
    from churn_assets.lib.storage import Storage

    home = tmp_path / "dagster_home"
    home.mkdir()
    from churn_assets.partitions import RAW_TRANSACTIONS, register_transaction_files
    from churn_assets.resources import ChurnPlatform

    job = dg.reconstructable(graph_job)
    rest = sorted(set(graph_job().asset_layer.executable_asset_keys) - {RAW_TRANSACTIONS})
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        # as the landing sensor runs it: a run per landing file's partition, then the rest
        files = register_transaction_files(instance, ChurnPlatform())
        assert files
        results = [
            dg.execute_job(
                job,
                instance=instance,
                asset_selection=[RAW_TRANSACTIONS],
                tags={"dagster/partition": key},
            )
            for key in files
        ]
        results.append(dg.execute_job(job, instance=instance, asset_selection=rest))
        events = [e for r in results for e in r.all_events]
        failures = {
            e.step_key: e.event_specific_data.error.to_string()[-6000:]
            for e in events
            if e.is_step_failure
        }
        assert all(r.success for r in results), failures
        starts = {e.step_key: e.pid for e in events if e.event_type_value == "STEP_START"}

    # one process per step, none of them this one
    assert set(TABLES) | {"classification_models", "deployed_model_version"} <= set(starts)
    assert len(set(starts.values())) == len(starts), starts
    assert os.getpid() not in starts.values()

    # every table, the deployment pointer and the version's files are in S3
    keys = {
        o["Key"]
        for page in s3_platform.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    }
    for table in TABLES:
        if table != "raw_transactions":
            assert f"{PREFIX}/synthetic/assets/{table}.parquet" in keys, table
    for key in files:  # one object per partition
        assert f"{PREFIX}/synthetic/assets/raw_transactions/{key}.parquet" in keys, key
    current = json.loads(
        s3_platform.get_object(Bucket=BUCKET, Key=f"{PREFIX}/synthetic/deployments/current.json")[
            "Body"
        ].read()
    )
    version = current["version"]
    settings = ChurnSettings()
    store = Storage(f"s3://{BUCKET}/{PREFIX}/synthetic", settings.storage_options())
    assert dep.verify_version(store, version) == []  # every file there, sha256 intact
    manifest = dep.read_manifest(store, version)
    for role, entry in manifest["models"].items():
        assert entry["onnx"]["verified"] is True, (role, entry["onnx"])
        assert f"{PREFIX}/synthetic/deployments/versions/{version}/{entry['file']}" in keys
