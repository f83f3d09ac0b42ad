"""Hot reload under load, refused versions, fallback levels, empty start, S3 storage."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import numpy as np
import polars as pl
import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.models.persistence import dumps_pipeline, loads_pipeline
from tests.serving.conftest import (
    DATASET,
    Deployment,
    add_version,
    copy_deployment,
    point_unverified,
    sidecar,
    wait_until,
)

pytestmark = pytest.mark.integration

TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Upper bound of requests per load thread (the load stops earlier, when the test is done).
MAX_REQUESTS_PER_THREAD = 20_000


def metric(text: str, prefix: str) -> float:
    """Sum of the samples whose line starts with ``prefix``."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def features(d: Deployment) -> pl.DataFrame:
    return pl.read_parquet(d.dataset_dir / "assets" / "current_features.parquet")


def test_hot_reload_under_load_has_no_failed_requests(private_deployment, tmp_path):
    d = private_deployment
    v1 = d.version
    feats = features(d)
    body = {
        "records": [
            {"customer_id": feats["customer_id"][3]},
            {"features": feats.drop("customer_id").row(4, named=True)},
        ]
    }
    with sidecar(str(d.root), tmp_path / "logs", admin_token=TOKEN, poll_seconds=0.3) as car:
        stop = threading.Event()
        seen: list[list[tuple[int, str | None]]] = [[] for _ in range(3)]
        errors: list[str] = []

        def hammer(i: int) -> None:
            with car.client() as c:
                for _ in range(MAX_REQUESTS_PER_THREAD):
                    if stop.is_set():
                        return
                    try:
                        r = c.post("/predict", json=body)
                        version = r.json().get("model_version") if r.status_code == 200 else None
                        seen[i].append((r.status_code, version))
                    except Exception as e:  # any transport error is a failed request
                        errors.append(repr(e))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()

        def latest() -> str | None:
            return next((v for s in seen if s for _, v in s[-1:]), None)

        try:
            wait_until(lambda: all(len(s) >= 20 for s in seen) or None, timeout=60)
            v2 = add_version(d)  # the poll thread picks this one up
            wait_until(lambda: all(s and s[-1][1] == v2 for s in seen) or None, timeout=60)
            v3 = add_version(d)
            with car.client() as c:
                forced = c.post("/admin/reload", headers=AUTH)  # may race the poll: both fine
            assert forced.status_code == 200, forced.text
            assert forced.json()["version"] == v3
            assert forced.json()["status"] in ("reloaded", "unchanged")
            wait_until(lambda: all(s and s[-1][1] == v3 for s in seen) or None, timeout=60)
            counts = [len(s) for s in seen]
            more = lambda: all(len(s) >= n + 20 for s, n in zip(seen, counts, strict=True))  # noqa: E731
            wait_until(lambda: more() or None, timeout=60)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert latest() == v3
        assert errors == []
        statuses = {code for s in seen for code, _ in s}
        assert statuses == {200}, statuses
        order = {v1: 0, v2: 1, v3: 2}
        for s in seen:
            ranks = [order[v] for _, v in s]
            assert ranks == sorted(ranks)  # a thread never goes back to an older version
        assert {v for s in seen for _, v in s} == {v1, v2, v3}
        with car.client() as c:
            text = c.get("/metrics").text
            health = c.get("/health").json()
        assert metric(text, 'churn_serving_reloads_total{trigger="poll"}') >= 1
        assert (
            metric(text, 'churn_serving_requests_total{endpoint="/predict",method="POST",status="5')
            == 0
        )
        assert health["version"] == v3 and health["reloads"] >= 3


def test_tampered_version_is_refused_and_the_old_one_keeps_serving(private_deployment, tmp_path):
    d = private_deployment
    v1 = d.version
    with sidecar(str(d.root), tmp_path / "logs", admin_token=TOKEN, poll_seconds=0.3) as car:
        client = car.client()
        bad = add_version(d, point=False)
        path = d.dataset_dir / "deployments" / "versions" / bad / "classifier.skops"
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        point_unverified(d, bad)

        def refused() -> dict[str, Any] | None:
            h = client.get("/health").json()
            return h if (h["last_refusal"] or {}).get("version") == bad else None

        health = wait_until(refused, timeout=30)
        assert "classifier.skops: sha256 mismatch" in health["last_refusal"]["error"]
        assert health["status"] == "ok" and health["version"] == v1
        r = client.post("/predict", json={"records": [{"customer_id": "C0000001"}]})
        assert r.status_code == 200 and r.json()["model_version"] == v1

        polled = metric(client.get("/metrics").text, "churn_serving_reload_failures_total")
        assert polled == 1
        forced = client.post("/admin/reload", headers=AUTH)
        assert forced.status_code == 409
        assert forced.json()["status"] == "refused" and forced.json()["serving_version"] == v1
        text = client.get("/metrics").text
        assert metric(text, 'churn_serving_reload_failures_total{reason="integrity"}') == 2
        assert client.get("/ready").status_code == 200

        missing = add_version(d, point=False)
        (d.dataset_dir / "deployments" / "versions" / missing / "reference.parquet").unlink()
        point_unverified(d, missing)
        health = wait_until(
            lambda: (h := client.get("/health").json())["last_refusal"]["version"] == missing and h,
            timeout=30,
        )
        assert "reference.parquet: missing" in health["last_refusal"]["error"]
        failures = metric(client.get("/metrics").text, "churn_serving_reload_failures_total")
        time.sleep(1.5)  # five polls: the same files are not verified again
        assert metric(client.get("/metrics").text, "churn_serving_reload_failures_total") == (
            failures
        )

        # the file arrives late (a copy or sync still under way): polling alone picks it up
        versions = d.dataset_dir / "deployments" / "versions"
        shutil.copy2(versions / v1 / "reference.parquet", versions / missing / "reference.parquet")
        wait_until(lambda: client.get("/health").json()["version"] == missing or None, timeout=30)

        good = add_version(d, from_version=v1)
        wait_until(lambda: client.get("/health").json()["version"] == good or None, timeout=30)
        r = client.post("/predict", json={"records": [{"customer_id": "C0000001"}]})
        assert r.json()["model_version"] == good
        client.close()


def broken(pipeline_bytes: bytes) -> bytes:
    """The same pipeline, now expecting a column that does not exist (fails at predict)."""
    pipe = loads_pipeline(pipeline_bytes)
    cleaner = pipe.steps[0][1]
    cleaner.numeric = [*cleaner.numeric, "column_that_does_not_exist"]
    return dumps_pipeline(pipe)


def test_broken_models_fall_back_level_by_level(private_deployment, tmp_path):
    d = private_deployment
    s = d.storage()
    folder = f"deployments/versions/{d.version}"
    clf, fallback = (
        s.read_bytes(f"{folder}/{n}.skops") for n in ("classifier", "classifier_fallback")
    )
    manifest = d.manifest()
    # the champion answers as its (broken) pipeline: its graph is marked as not verified
    models = manifest["models"]
    as_pipeline = {**models["classifier"], "onnx": {"verified": False, "reason": "test"}}
    v_champion_broken = add_version(
        d,
        replace={"classifier.skops": broken(clf)},
        manifest_changes={"models": {**models, "classifier": as_pipeline}},
    )
    feats = features(d)
    ids = feats["customer_id"].head(20).to_list()
    body = {"records": [{"customer_id": i} for i in ids]}
    with sidecar(str(d.root), tmp_path / "logs", admin_token=TOKEN, poll_seconds=60) as car:
        client = car.client()
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert r.json()["model_version"] == v_champion_broken
        assert {p["fallback_levels"]["churn_probability"] for p in preds} == {"fallback_model"}
        assert {p["fallback_levels"]["expected_total_sales"] for p in preds} == {"champion"}
        assert {p["fallback_level"] for p in preds} == {"fallback_model"}
        fb_threshold = manifest["models"]["classifier_fallback"]["threshold"]
        assert {p["threshold"] for p in preds} == {fb_threshold}
        cols = [*manifest["features"]["numeric"], *manifest["features"]["categorical"]]
        frame = feats.head(20).select(cols).to_pandas()
        expected = loads_pipeline(fallback).predict_proba(frame)[:, 1]
        np.testing.assert_allclose([p["churn_probability"] for p in preds], expected, atol=1e-6)

        stats = client.get("/fallback-stats").json()
        assert stats["model_errors"]["classifier"]["count"] >= 1
        assert "column_that_does_not_exist" in stats["model_errors"]["classifier"]["last_error"]
        assert stats["by_output"]["churn_probability"]["fallback_model"] == 20
        info = client.get("/model-info").json()
        assert info["models"]["classifier"]["runtime"] == "scikit-learn"
        assert info["models"]["classifier"]["runtime_reason"] == "test"
        assert info["models"]["classifier_fallback"]["runtime"] == "onnxruntime"
        text = client.get("/metrics").text
        assert (
            metric(text, 'churn_serving_fallbacks_total{level="fallback_model",output="churn_')
            == 20
        )
        assert metric(text, 'churn_serving_model_errors_total{role="classifier"}') >= 1

        fallback_as_pipeline = {**models["classifier_fallback"], "onnx": as_pipeline["onnx"]}
        v_both_broken = add_version(
            d,
            replace={
                "classifier.skops": broken(clf),
                "classifier_fallback.skops": broken(fallback),
            },
            manifest_changes={
                "models": {
                    **models,
                    "classifier": as_pipeline,
                    "classifier_fallback": fallback_as_pipeline,
                }
            },
        )
        assert client.post("/admin/reload", headers=AUTH).json()["version"] == v_both_broken
        preds = client.post("/predict", json=body).json()["predictions"]
        assert {p["fallback_levels"]["churn_probability"] for p in preds} == {"business_rules"}
        rules = manifest["business_rules"]
        x = feats.head(20)[rules["feature"]].to_numpy()
        want = np.where(
            x > rules["threshold"],
            rules["churn_probability_above"],
            rules["churn_probability_at_or_below"],
        )
        assert [p["churn_probability"] for p in preds] == want.tolist()
        client.close()


def test_starts_without_a_deployment_then_picks_it_up(deployment, tmp_path):
    root = tmp_path / "empty-store"
    root.mkdir()
    with sidecar(str(root), tmp_path / "logs", wait_ready=False, poll_seconds=0.3) as car:
        client = car.client()
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["version"] is None
        assert "nothing deployed" in health.json()["last_error"]["error"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert client.post("/predict", json={"records": [{"customer_id": "C1"}]}).status_code == 503
        assert client.get("/model-info").status_code == 503
        # no CHURN_SERVING_ADMIN_TOKEN: the admin endpoints do not exist
        assert client.post("/admin/reload", headers=AUTH).status_code == 404

        copy_deployment(deployment, root)
        wait_until(lambda: client.get("/ready").status_code == 200 or None, timeout=60)
        wait_until(
            lambda: (
                client.post("/predict", json={"records": [{"customer_id": "C0000001"}]}).status_code
                == 200
                or None
            ),
            timeout=60,
        )
        client.close()


def test_serves_from_s3_storage(deployment, s3_env, moto_server, tmp_path):
    bucket = "churn-serving"
    s3 = s3_env()
    s3.create_bucket(Bucket=bucket)
    src = deployment.dataset_dir
    files = [*(src / "deployments").rglob("*"), src / "assets" / "current_features.parquet"]
    for f in files:
        if f.is_file():
            key = f"store/{DATASET}/{f.relative_to(src).as_posix()}"
            s3.put_object(Bucket=bucket, Key=key, Body=f.read_bytes())
    with sidecar(
        f"s3://{bucket}/store",
        tmp_path / "logs",
        extra_env={"CHURN_S3_ENDPOINT_URL": moto_server},
        log_flush_seconds=0.3,
        poll_seconds=60,
    ) as car:
        client = car.client()
        health = client.get("/health").json()
        assert health["version"] == deployment.version
        assert health["storage"] == f"s3://{bucket}/store/{DATASET}"
        r = client.post("/predict", json={"records": [{"customer_id": "C0000001"}]})
        assert r.status_code == 200 and r.json()["model_version"] == deployment.version

        def logged() -> list[str] | None:
            listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"store/{DATASET}/inference_log/")
            keys = [o["Key"] for o in listing.get("Contents", [])]
            return keys or None

        keys = wait_until(logged, timeout=30)
        assert keys[0].endswith(".parquet") and "/inference_log/date=" in keys[0]
        client.close()


def test_a_sidecar_started_on_a_damaged_version_serves_the_one_before(private_deployment, tmp_path):
    """The deployed version's model file is damaged after deployment and the sidecar
    restarts: instead of 503 to everything it serves the newest intact version of the
    pointer's history, says so in /health, and takes the deployed one once it is repaired."""
    d = private_deployment
    v1 = d.version
    v2 = add_version(d, from_version=v1)  # deployed: v1 goes into the pointer's history
    path = d.dataset_dir / "deployments" / "versions" / v2 / "classifier.skops"
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with sidecar(str(d.root), tmp_path / "logs", poll_seconds=0.3) as car, car.client() as c:
        health = wait_until(lambda: (h := c.get("/health").json())["version"] and h, timeout=60)
        assert health["version"] == v1
        assert health["last_refusal"]["version"] == v2
        assert "classifier.skops: sha256 mismatch" in health["last_refusal"]["error"]
        assert c.get("/ready").status_code == 200
        r = c.post("/predict", json={"records": [{"customer_id": "C0000001"}]})
        assert r.status_code == 200 and r.json()["model_version"] == v1
        path.write_bytes(good)  # repaired: the deployed version is served
        wait_until(lambda: c.get("/health").json()["version"] == v2 or None, timeout=30)
        # a pointer that is not an object: said in /health, the version keeps serving
        (d.dataset_dir / "deployments" / "current.json").write_text("[]")
        health = wait_until(lambda: (h := c.get("/health").json())["last_error"] and h, timeout=30)
        assert "is not a JSON object (a list)" in health["last_error"]["error"]
        assert health["version"] == v2 and c.get("/ready").status_code == 200
        dep.set_current(d.storage(), v2, reason="repaired")  # and the error is gone
        wait_until(lambda: c.get("/health").json()["last_error"] is None or None, timeout=30)
        # from the last reload too: it said the failure long after the pointer read again
        last = wait_until(
            lambda: (r := c.get("/health").json()["last_reload"])["status"] != "failed" and r,
            timeout=30,
        )
        assert last["status"] == "unchanged" and last["version"] == v2, last


def test_a_sidecar_started_on_a_truncated_manifest_serves_the_one_before(
    private_deployment, tmp_path
):
    """The deployed version's manifest cut short (a disk filled up, a copy interrupted) and
    the sidecar restarts: it serves the version before, as for a model file that fails its
    sha256, instead of nothing ("not valid JSON" was an error no fallback caught)."""
    d = private_deployment
    v1 = d.version
    v2 = add_version(d, from_version=v1)
    manifest = d.dataset_dir / "deployments" / "versions" / v2 / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    with sidecar(str(d.root), tmp_path / "logs", poll_seconds=0.3) as car, car.client() as c:
        health = wait_until(lambda: (h := c.get("/health").json())["version"] and h, timeout=60)
        assert health["version"] == v1
        assert health["last_refusal"]["version"] == v2
        assert "manifest.json is not valid JSON (damaged?)" in health["last_refusal"]["error"]
        r = c.post("/predict", json={"records": [{"customer_id": "C0000001"}]})
        assert r.status_code == 200 and r.json()["model_version"] == v1


def test_a_pointer_gone_while_serving_keeps_the_version_and_says_so(deployment, tmp_path, caplog):
    """current.json deleted under a running sidecar (storage moved or wiped): the served
    version stays, and the reload error (a warning in the log) says the pointer is gone."""
    import logging

    from churn_assets.lib.storage import Storage
    from churn_serving.manager import ModelManager

    d = copy_deployment(deployment, tmp_path / "store")
    manager = ModelManager(Storage(str(d.dataset_dir)))
    assert manager.reload(trigger="poll")["status"] == "reloaded"
    (d.dataset_dir / dep.POINTER).unlink()
    with caplog.at_level(logging.INFO, logger="churn_serving.manager"):
        result = manager.reload(trigger="poll")
    assert result["status"] == "failed" and result["serving_version"] == d.version
    assert f"is gone from {d.dataset_dir}: still serving {d.version}" in result["error"]
    assert [r.levelno for r in caplog.records if "is gone" in r.getMessage()] == [logging.WARNING]
