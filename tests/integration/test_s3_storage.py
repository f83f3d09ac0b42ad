"""The whole graph materializes into S3-compatible storage (a real moto_server over HTTP)."""

from __future__ import annotations

import io

import dagster as dg
import polars as pl
import pytest

from tests.data.test_bad_input import CONFIG, CUSTOMERS, TRANSACTIONS, run_graph
from tests.helpers import run_graph as run_all

pytestmark = pytest.mark.integration  # starts moto_server


def test_graph_materializes_into_s3(s3_env, tmp_path, monkeypatch):
    s3 = s3_env()
    s3.create_bucket(Bucket="churn-test")
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://churn-test/platform")
    s3.put_object(
        Bucket="churn-test", Key="platform/landing/mini/customers/a.csv", Body=CUSTOMERS.encode()
    )
    s3.put_object(
        Bucket="churn-test",
        Key="platform/landing/mini/transactions/a.csv",
        Body=TRANSACTIONS.encode(),
    )
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)

    run = run_graph(str(cfg))

    assert run.result.success, run.result
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="churn-test")["Contents"]}
    for asset in ("raw_customers", "customer_features"):
        assert f"platform/mini/assets/{asset}.parquet" in keys
    # one partition per landing file
    assert "platform/mini/assets/raw_transactions/a.csv.parquet" in keys
    body = s3.get_object(Bucket="churn-test", Key="platform/mini/assets/customer_features.parquet")[
        "Body"
    ].read()
    features = pl.read_parquet(io.BytesIO(body))
    assert features["customer_id"].to_list() == ["C1", "C2", "C3", "C4"]
    assert features.filter(pl.col("customer_id") == "C1")["churned"].item() == 0
    assert features.filter(pl.col("customer_id") == "C4")["churned"].item() == 1


def test_quarantine_lands_in_s3(s3_env, tmp_path, monkeypatch):
    s3 = s3_env()
    s3.create_bucket(Bucket="churn-q")
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://churn-q/p")
    s3.put_object(Bucket="churn-q", Key="p/landing/mini/customers/a.csv", Body=CUSTOMERS.encode())
    s3.put_object(
        Bucket="churn-q", Key="p/landing/mini/transactions/a.csv", Body=TRANSACTIONS.encode()
    )
    s3.put_object(Bucket="churn-q", Key="p/landing/mini/transactions/empty.csv", Body=b"")
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)

    run = run_graph(str(cfg))

    assert not run.result.success
    assert "customer_features" not in run.materialized
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="churn-q", Prefix="p/mini/quarantine/")["Contents"]
    ]
    assert any(k.endswith("/files/empty.csv") for k in keys)
    assert any(k.endswith("/files/_reasons.json") for k in keys)


def test_unreachable_s3_is_a_clear_error(tmp_path, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://nowhere/p")
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CHURN_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)
    instance = dg.DagsterInstance.ephemeral()
    run = run_all(str(cfg), selection=["raw_customers"], instance=instance)
    assert not run.result.success
    retries = [e for e in run.result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3  # exponential backoff: 2, 4, 8 s
    # each attempt's log line says what comes next: the last one said "retrying in 16 s"
    # right before the step failed for good
    said = [e.user_message for e in instance.all_logs(run.result.run_id)]
    waits = [m.rsplit("retrying in ", 1)[1] for m in said if "retrying in " in m]
    assert waits == ["2 s", "4 s", "8 s"], said
    assert any("giving up after 4 attempts: the step fails" in m for m in said), said
    failure = next(e for e in run.result.all_events if e.event_type_value == "STEP_FAILURE")
    err = failure.event_specific_data.error
    text = err.message + (err.cause.message if err.cause else "")
    # the error names the endpoint that could not be reached, so the fix is obvious
    assert f'Could not connect to the endpoint URL: "{endpoint}/' in text, text


@pytest.mark.parametrize("where", ["local", "s3"])
def test_fingerprint_changes_with_the_files_and_only_then(where, s3_env, tmp_path):
    """``Storage.fingerprint`` (how the sidecar tells a refused version whose files changed
    from one that did not) on a local directory and on S3: stable while nothing changes;
    changed by a file added, rewritten with another size, or removed; empty for no folder."""
    import os

    from churn_assets.lib.storage import Storage

    if where == "s3":
        s3_env().create_bucket(Bucket="churn-fp")
        store = Storage(
            "s3://churn-fp/root",
            {"client_kwargs": {"endpoint_url": os.environ["CHURN_S3_ENDPOINT_URL"]}},
        )
    else:
        store = Storage(str(tmp_path / "root"))
    assert store.fingerprint("v1") == ()
    store.write_bytes("v1/manifest.json", b"{}")
    first = store.fingerprint("v1")
    assert len(first) == 1 and first[0][0].endswith("v1/manifest.json") and first[0][1] == 2
    assert store.fingerprint("v1") == first  # a second listing of the same files

    store.write_bytes("v1/model.onnx", b"0123")
    added = store.fingerprint("v1")
    assert added != first and len(added) == 2
    store.write_bytes("v1/model.onnx", b"012345")
    rewritten = store.fingerprint("v1")
    assert rewritten != added and sorted(e[1] for e in rewritten) == [2, 6]
    store.delete("v1/model.onnx")
    assert len(store.fingerprint("v1")) == 1


def test_the_landing_listing_sees_files_landed_since_the_last_tick(s3_env, tmp_path, monkeypatch):
    """The landing sensor runs in the long-lived code server, where fsspec keeps S3 folder
    listings: a file landed after the first tick, and a file rewritten under its name (a
    quarantined file fixed and landed again), must show in the next tick's listing."""
    from churn_assets.resources import ChurnPlatform
    from churn_assets.sensors import _landing_listing

    s3 = s3_env()
    s3.create_bucket(Bucket="churn-l")
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://churn-l/p")
    key = "p/landing/mini/transactions/{}.csv"
    s3.put_object(Bucket="churn-l", Key="p/landing/mini/customers/a.csv", Body=CUSTOMERS.encode())
    s3.put_object(Bucket="churn-l", Key=key.format("a"), Body=TRANSACTIONS.encode())
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)
    platform = ChurnPlatform(dataset=str(cfg))

    first = _landing_listing(platform)
    assert sorted(u.rsplit("/", 1)[-1] for u in first) == ["a.csv", "a.csv"]
    s3.put_object(Bucket="churn-l", Key=key.format("b"), Body=TRANSACTIONS.encode())
    s3.put_object(Bucket="churn-l", Key=key.format("a"), Body=(TRANSACTIONS + "\n").encode())

    second = _landing_listing(platform)

    added = [u for u in second if u not in first]
    assert [u.rsplit("/", 1)[-1] for u in added] == ["b.csv"]
    rewritten = next(u for u in second if u.endswith("transactions/a.csv"))
    assert second[rewritten] != first[rewritten]  # a new size: a new run key
    assert second[rewritten].split(":")[0] == str(len(TRANSACTIONS) + 1)


def test_the_landing_sensor_says_a_missing_bucket(s3_env, tmp_path, monkeypatch):
    """Started before its bucket exists (or with a bucket name that is wrong), the landing
    sensor skipped every tick with "no new files among 0 in the landing zone", as if nothing
    had landed yet: files seeded into another bucket were never looked for. Its tick now
    fails naming the missing bucket and the variables to fix; an existing, empty landing
    zone is still "no new files"."""
    from churn_assets.resources import ChurnPlatform
    from churn_assets.sensors import LandingUnreadableError, _landing_listing

    cfg = tmp_path / "mini.yaml"
    cfg.write_text(CONFIG)
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://no-such-bucket/p")
    with pytest.raises(LandingUnreadableError) as missing:
        _landing_listing(ChurnPlatform(dataset=str(cfg)))
    said = str(missing.value)
    assert "has no bucket 'no-such-bucket'" in said and "CHURN_STORAGE_URL" in said

    s3_env().create_bucket(Bucket="empty-landing")
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://empty-landing/p")
    assert _landing_listing(ChurnPlatform(dataset=str(cfg))) == {}


def test_the_sidecar_says_a_missing_bucket_at_once(s3_env, caplog):
    """A storage URL naming a bucket the endpoint does not have read exactly as a first
    start ("waiting for a first deployment", at INFO), and would wait forever: it now says
    the bucket is missing, as a warning. An existing empty bucket is still just waiting."""
    import logging

    from churn_assets.lib.settings import ChurnSettings
    from churn_assets.lib.storage import Storage
    from churn_serving.manager import ModelManager

    s3_env().create_bucket(Bucket="waiting")
    said = {}
    for bucket in ("nobucket", "waiting"):
        settings = ChurnSettings(storage_url=f"s3://{bucket}/storage")
        manager = ModelManager(Storage.from_settings(settings))
        with caplog.at_level(logging.INFO, logger="churn_serving.manager"):
            caplog.clear()
            assert manager.reload(trigger="poll")["status"] == "failed"
        said[bucket] = (manager.last_error["error"], caplog.records[-1].levelno)
    error, level = said["nobucket"]
    assert "the endpoint has no bucket 'nobucket'" in error and level == logging.WARNING
    error, level = said["waiting"]
    assert "no bucket" not in error and level == logging.INFO


def test_a_missing_bucket_or_an_endpoint_without_scheme_ends_in_one_line(s3_env, monkeypatch):
    """`churn seed` into a bucket the endpoint lacks, or with an endpoint written without
    its scheme: tracebacks (FileNotFoundError, "Invalid endpoint") naming no setting. One
    line each now, naming the variable to fix."""
    from click.testing import CliRunner

    from churn_assets.cli import main

    monkeypatch.delenv("CHURN_DEBUG", raising=False)
    monkeypatch.delenv("CHURN_LANDING_URL", raising=False)
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://nobucket/storage")
    seed = ["seed", "--customers", "100", "--days", "120"]
    missing = CliRunner().invoke(main, seed)
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert "create the bucket, or fix CHURN_STORAGE_URL (s3://nobucket/storage)" in missing.output
    monkeypatch.setenv("CHURN_S3_ENDPOINT_URL", "127.0.0.1:5999")
    bare = CliRunner().invoke(main, seed)
    assert bare.exit_code == 1 and "Traceback" not in bare.output
    assert "set CHURN_S3_ENDPOINT_URL (127.0.0.1:5999) to a URL with its scheme" in bare.output


@pytest.fixture
def s3_checking_keys(monkeypatch: pytest.MonkeyPatch):
    """A moto_server that checks credentials (``INITIAL_NO_AUTH_ACTION_COUNT=0``: every
    request is authenticated against its IAM, where no key exists), with a platform pointed
    at it by a wrong key."""
    import os
    import subprocess

    from tests.conftest import BIN, free_port, wait_http

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint)
        for name, value in {
            "AWS_ACCESS_KEY_ID": "wrongkey",
            "AWS_SECRET_ACCESS_KEY": "wrongsecret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "CHURN_S3_ENDPOINT_URL": endpoint,
            "CHURN_STORAGE_URL": "s3://churn/platform",
            "CHURN_LANDING_URL": "s3://churn/landing",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("CHURN_DEBUG", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wrong_s3_credentials_are_named_as_such(s3_checking_keys):
    """A wrong access key: S3 refuses every request, and s3fs turns the refusal into a bare
    ``PermissionError`` -- "Forbidden" for a HEAD request. `churn seed` said "a folder of the
    platform cannot be created or written there; check the paths", `churn demo --json`
    "PermissionError: Forbidden", the sidecar "cannot read current.json: Forbidden" and a
    failed step "ClientError: ... Forbidden". Each now says the storage refused the
    credentials and names the variables to check."""
    import json

    import s3fs
    from click.testing import CliRunner

    from churn_assets.cli import main
    from churn_assets.lib.settings import ChurnSettings
    from churn_assets.lib.storage import Storage
    from churn_assets.retries import fail_fast_unless_transient
    from churn_serving.manager import ModelManager

    refused = f"the S3 storage at {s3_checking_keys} refused the request"
    seed = CliRunner().invoke(main, ["seed", "--customers", "100", "--days", "120"])
    assert seed.exit_code == 1 and "Traceback" not in seed.output
    assert refused in seed.output and "AWS_ACCESS_KEY_ID" in seed.output
    assert "cannot be created or written" not in seed.output

    demo = CliRunner().invoke(main, ["demo", "--json", "--no-seed"])
    report = json.loads(demo.output.strip().splitlines()[-1])
    assert report["success"] is False and refused in report["error"], report

    manager = ModelManager(Storage.from_settings(ChurnSettings()))
    manager.reload(trigger="poll")
    assert "cannot read current.json" in manager.last_error["error"]
    assert refused in manager.last_error["error"]

    fs = s3fs.S3FileSystem(endpoint_url=s3_checking_keys)
    with pytest.raises(dg.Failure) as failed, fail_fast_unless_transient():
        fs.exists("churn/platform/anything")
    assert (
        refused in failed.value.description and "AWS_SECRET_ACCESS_KEY" in failed.value.description
    )
