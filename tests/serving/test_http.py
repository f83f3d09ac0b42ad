"""The sidecar as a real uvicorn process on a free loopback port, called over HTTP."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from churn_assets.lib.models.persistence import loads_pipeline
from tests.conftest import BIN, REPO, free_port
from tests.serving.conftest import Deployment, copy_deployment, sidecar, wait_until

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def served(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory):
    """One sidecar for the module, on a private copy of the deployment."""
    root = tmp_path_factory.mktemp("http")
    d = copy_deployment(deployment, root / "store")
    with sidecar(
        str(d.root),
        root / "logs",
        admin_token=TOKEN,
        log_flush_seconds=0.5,
        poll_seconds=60,
    ) as car:
        yield d, car


@pytest.fixture(scope="module")
def client(served) -> Any:
    with served[1].client() as c:
        yield c


@pytest.fixture(scope="module")
def reference(deployment: Deployment) -> dict[str, Any]:
    """The deployed pipelines and the latest features, to compute expected answers."""
    s = deployment.storage()
    m = deployment.manifest()
    folder = f"deployments/versions/{deployment.version}"
    pipes = {
        role: loads_pipeline(s.read_bytes(f"{folder}/{m['models'][role]['file']}"))
        for role in ("classifier", "regressor")
    }
    features = pl.read_parquet(deployment.dataset_dir / "assets" / "current_features.parquet")
    return {"manifest": m, "pipelines": pipes, "features": features}


def expected(reference: dict[str, Any], rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    m = reference["manifest"]
    cols = [*m["features"]["numeric"], *m["features"]["categorical"]]
    frame = rows.select(cols).to_pandas()
    proba = reference["pipelines"]["classifier"].predict_proba(frame)[:, 1]
    sales = np.clip(reference["pipelines"]["regressor"].predict(frame), 0, None)
    return proba, sales


def feature_record(reference: dict[str, Any], i: int, **changes: Any) -> dict[str, Any]:
    row = reference["features"].drop("customer_id").row(i, named=True)
    row.update(changes)
    return row


# ------------------------------------------------------------------------- basics


def test_health_ready_model_info_and_schema(served, client, deployment):
    _, car = served
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["version"] == deployment.version
    assert health["last_refusal"] is None and health["degraded_roles"] == {}
    assert health["customers"]["customers"] == 1500
    assert client.get("/ready").json() == {
        "ready": True,
        "version": deployment.version,
        "reason": None,
    }
    info = client.get("/model-info").json()
    assert info["version"] == deployment.version
    manifest = deployment.manifest()
    for role, entry in manifest["models"].items():
        assert entry["onnx"]["serves"] == "onnxruntime", (role, entry["onnx"])
        assert info["models"][role]["runtime"] == "onnxruntime", info["models"][role]
        assert info["models"][role]["verification"]["ok"] is True
        assert entry["onnx"]["sha256"] == manifest["artifacts"][entry["onnx"]["file"]]["sha256"]
    assert (
        info["models"]["classifier"]["sha256"]
        == deployment.manifest()["artifacts"]["classifier.skops"]["sha256"]
    )
    assert info["fallback_levels"] == [
        "champion",
        "fallback_model",
        "business_rules",
        "base_rate",
        "no_value_model",
    ]
    assert info["has_value_model"] is True
    schema = client.get("/predict/schema").json()
    assert schema["max_records"] == 10_000
    age = schema["fields"]["age"]
    assert age["type"] == "numeric" and age["accepted_min"] == 0.0
    width = age["training_max"] - age["training_min"]
    assert age["accepted_max"] == age["training_max"] + 10 * width  # default k = 10
    assert schema["fields"]["plan"]["categories"] == ["annual", "monthly", "two_year"]
    stats = client.get("/fallback-stats").json()
    assert stats["levels"][0] == "champion"


def test_predict_by_customer_id_equals_the_pipelines(client, reference, deployment):
    rows = reference["features"].head(50)
    ids = rows["customer_id"].to_list()
    r = client.post("/predict", json={"records": [{"customer_id": i} for i in ids]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == deployment.version and body["count"] == 50
    preds = body["predictions"]
    assert [p["customer_id"] for p in preds] == ids
    proba, sales = expected(reference, rows)
    got = np.array([p["churn_probability"] for p in preds])
    np.testing.assert_allclose(got, proba, rtol=0, atol=1e-6)
    sales_got = np.array([p["expected_total_sales"] for p in preds])
    assert np.abs(sales_got - sales).max() <= 1e-6 * max(1.0, np.abs(sales).max())
    threshold = reference["manifest"]["models"]["classifier"]["threshold"]
    assert [p["churn_label"] for p in preds] == (proba >= threshold).astype(int).tolist()
    assert {p["fallback_level"] for p in preds} == {"champion"}
    assert all(p["threshold"] == threshold and p["unseen_categories"] == {} for p in preds)


def test_predict_by_features_and_mixed_records(client, reference):
    rows = reference["features"].slice(100, 4)
    records: list[dict[str, Any]] = [
        {"features": feature_record(reference, 100)},
        {"customer_id": rows["customer_id"][1]},
        {"customer_id": "echo-me", "features": feature_record(reference, 102)},
        {"features": feature_record(reference, 103)},
    ]
    r = client.post("/predict", json={"records": records})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["customer_id"] for p in preds] == [None, rows["customer_id"][1], "echo-me", None]
    proba, _ = expected(reference, rows)
    np.testing.assert_allclose([p["churn_probability"] for p in preds], proba, atol=1e-6)
    one = client.post("/predict", json={"records": records[:1]}).json()["predictions"][0]
    assert one["churn_probability"] == preds[0]["churn_probability"]


def test_columnar_bodies_lookups_and_single_records_give_the_same_answers(client, reference):
    rows = reference["features"].slice(300, 40)
    ids = rows["customer_id"].to_list()
    feats = rows.drop("customer_id")
    by_lookup = client.post("/predict", json={"records": [{"customer_id": i} for i in ids]})
    by_records = client.post(
        "/predict",
        json={
            "records": [
                {"customer_id": i, "features": f}
                for i, f in zip(ids, feats.rows(named=True), strict=True)
            ]
        },
    )
    by_columns = client.post(
        "/predict", json={"columns": {"customer_id": ids, **feats.to_dict(as_series=False)}}
    )
    by_id_column = client.post("/predict", json={"columns": {"customer_id": ids}})
    for r in (by_lookup, by_records, by_columns, by_id_column):
        assert r.status_code == 200, r.text

    def answers(r: httpx.Response) -> list[dict[str, Any]]:
        return r.json()["predictions"]

    # lookups come from the answers computed when the table was loaded, feature records and
    # columns from the models per request: the same numbers
    assert answers(by_lookup) == answers(by_records) == answers(by_columns) == answers(by_id_column)
    proba, _ = expected(reference, rows)
    got = [p["churn_probability"] for p in answers(by_columns)]
    np.testing.assert_allclose(got, proba, rtol=0, atol=1e-6)
    for k in (0, 17, 39):  # one record alone, by id and by features, as in the batch
        one_id = client.post("/predict", json={"records": [{"customer_id": ids[k]}]})
        one_feats = client.post(
            "/predict",
            json={"records": [{"customer_id": ids[k], "features": feats.row(k, named=True)}]},
        )
        assert answers(one_id) == answers(one_feats) == [answers(by_lookup)[k]]
    bad = client.post(
        "/predict", json={"columns": {**feats.head(2).to_dict(as_series=False), "age": ["x", 3]}}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "columns", "age", 0]
    health = client.get("/health").json()
    assert health["customers"]["answers"]["precomputed"] is True
    schema = client.get("/predict/schema").json()
    assert "columns" in schema["request"]


def test_an_arrow_stream_is_answered_as_the_json_columns_over_http(client, reference):
    import pyarrow as pa

    from churn_serving.arrow_body import ARROW_STREAM, read_answer

    rows = reference["features"].slice(500, 300)
    table = rows.to_arrow()  # the feature table's own column types
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body = sink.getvalue().to_pybytes()
    by_json = client.post("/predict", json={"columns": rows.to_dict(as_series=False)})
    by_arrow = client.post("/predict", content=body, headers={"content-type": ARROW_STREAM})
    arrow_answer = client.post(
        "/predict", content=body, headers={"content-type": ARROW_STREAM, "accept": ARROW_STREAM}
    )
    assert by_json.status_code == by_arrow.status_code == arrow_answer.status_code == 200
    assert by_arrow.json()["predictions"] == by_json.json()["predictions"]
    assert arrow_answer.headers["content-type"] == ARROW_STREAM
    answers = read_answer(arrow_answer.content)
    proba, sales = expected(reference, rows)
    np.testing.assert_allclose(answers["churn_probability"].to_numpy(), proba, rtol=0, atol=1e-6)
    np.testing.assert_allclose(answers["expected_total_sales"].to_numpy(), sales, rtol=1e-6)
    assert answers["customer_id"].to_pylist() == rows["customer_id"].to_list()
    garbage = client.post("/predict", content=b"not arrow", headers={"content-type": ARROW_STREAM})
    assert garbage.status_code == 422
    assert garbage.json()["detail"][0]["type"] == "arrow_invalid"


def test_unseen_category_is_accepted_and_reported(client, reference):
    rec = feature_record(reference, 5, plan="weekly")
    r = client.post("/predict", json={"records": [{"features": rec}]})
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["unseen_categories"] == {"plan": "weekly"}
    row = reference["features"].slice(5, 1).with_columns(pl.lit("weekly").alias("plan"))
    proba, _ = expected(reference, row)
    assert math.isclose(pred["churn_probability"], float(proba[0]), abs_tol=1e-6)


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"age": "<drop>"}, "age", "missing"),
        ({"favourite_colour": "red"}, "favourite_colour", "unknown_field"),
        ({"age": "forty"}, "age", "wrong_type"),
        ({"plan": {"id": 2}}, "plan", "wrong_type"),
        ({"age": 100_000}, "age", "out_of_range"),
        ({"frequency": -1.0}, "frequency", "out_of_range"),
        ({"recency_days": None}, "recency_days", "null_not_allowed"),
    ],
)
def test_validation_errors_are_422_naming_the_field(client, reference, change, field, kind):
    rec = feature_record(reference, 1)
    for k, v in change.items():
        if v == "<drop>":
            rec.pop(k)
        else:
            rec[k] = v
    r = client.post("/predict", json={"records": [{"customer_id": "C0000001"}, {"features": rec}]})
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["field"] == field and problem["type"] == kind
    assert problem["loc"] == ["body", "records", 1, "features", field]
    assert field in problem["msg"]


def test_malformed_json_and_bad_envelopes_are_422(client):
    r = client.post(
        "/predict", content=b'{"records": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert "JSON decode error" in r.json()["detail"][0]["msg"]
    nan = b'{"records": [{"features": {"age": NaN}}]}'
    r = client.post("/predict", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN and Infinity are not JSON: send null" in r.text
    assert client.post("/predict", content=b"").status_code == 422
    assert client.post("/predict", json={"rows": []}).status_code == 422
    assert client.post("/predict", json={"records": []}).status_code == 422


def test_more_than_max_records_is_413(client):
    records = [{"customer_id": "C0000001"}] * 10_001
    r = client.post("/predict", json={"records": records})
    assert r.status_code == 413
    assert "10001 > 10000" in r.json()["detail"]
    ok = client.post("/predict", json={"records": records[:10_000]})
    assert ok.status_code == 200 and ok.json()["count"] == 10_000


def test_unknown_customer_id_is_404_listing_them(client):
    r = client.post(
        "/predict",
        json={
            "records": [{"customer_id": "C0000001"}, {"customer_id": "nobody"}, {"customer_id": 7}]
        },
    )
    assert r.status_code == 404
    body = r.json()
    assert body["error_count"] == 2
    assert [d["loc"][2] for d in body["detail"]] == [1, 2]
    assert (
        "nobody" in body["detail"][0]["msg"] and body["detail"][0]["type"] == "unknown_customer_id"
    )
    assert body["unknown_positions"] == [1, 2]
    # 150 unknown ids: detail describes 100, unknown_positions holds all, and the rest answers
    records = [{"customer_id": f"gone-{i}" if i % 2 else "C0000001"} for i in range(300)]
    body = client.post("/predict", json={"records": records}).json()
    assert body["error_count"] == 150 and len(body["detail"]) == 100
    assert body["unknown_positions"] == list(range(1, 300, 2))
    kept = [r for i, r in enumerate(records) if i not in set(body["unknown_positions"])]
    assert client.post("/predict", json={"records": kept}).status_code == 200


def test_admin_reload_needs_the_bearer_token(client, deployment):
    r = client.post("/admin/reload")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/admin/reload", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer"}).status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "reloaded" and ok.json()["version"] == deployment.version


def test_metrics_are_exposed(client, deployment):
    client.post("/predict", json={"records": [{"customer_id": "C0000001"}]})
    text = client.get("/metrics").text
    models = deployment.manifest()["models"]
    for needle in (
        'churn_serving_requests_total{endpoint="/predict",method="POST",status="200"}',
        'churn_serving_request_duration_seconds_bucket{endpoint="/predict"',
        'churn_serving_predictions_total{label="0"}',
        'churn_serving_fallbacks_total{level="champion",output="churn_probability"}',
        f'churn_serving_model_version_info{{classifier="{models["classifier"]["candidate"]}",'
        f'regressor="{models["regressor"]["candidate"]}",version="{deployment.version}"}} 1.0',
        'churn_serving_reloads_total{trigger="startup"} 1.0',
        "churn_serving_reload_failures_total",
        "churn_serving_inference_log_records_total",
        'churn_serving_requests_total{endpoint="/predict",method="POST",status="422"}',
    ):
        assert needle in text, needle


def test_inference_log_files_hold_the_predictions(served, client, reference):
    d, _ = served
    ids = reference["features"]["customer_id"].slice(200, 3).to_list()
    r = client.post("/predict", json={"records": [{"customer_id": i} for i in ids]})
    body = r.json()
    request_id = body["request_id"]
    folder = d.dataset_dir / "inference_log"

    def logged() -> pl.DataFrame | None:
        files = sorted(folder.glob("date=*/*.parquet"))
        if not files:
            return None
        frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
        hit = frame.filter(pl.col("request_id") == request_id)
        return hit if hit.height == 3 else None

    rows = wait_until(logged, timeout=30)
    assert rows["customer_id"].to_list() == ids
    assert rows["source"].to_list() == ["lookup"] * 3
    assert rows["churn_level"].to_list() == ["champion"] * 3
    np.testing.assert_allclose(
        rows["churn_probability"].to_numpy(),
        [p["churn_probability"] for p in body["predictions"]],
    )
    assert rows["model_version"].unique().to_list() == [body["model_version"]]
    assert "recency_days" in rows.columns and "plan" in rows.columns
    day = next(folder.glob("date=*")).name
    assert day.startswith("date=20") and len(day) == len("date=YYYY-MM-DD")


# --------------------------------------------------------------- external tools


def test_schemathesis_finds_no_server_errors(served, tmp_path):
    _, car = served
    st = BIN / "st"
    assert st.exists(), "schemathesis CLI missing"
    done = subprocess.run(
        [
            str(st),
            "run",
            f"{car.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--seed",
            "42",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    summary = done.stdout[-3000:]
    assert done.returncode == 0, summary + done.stderr[-2000:]
    assert "passed" in summary


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path or Path("/usr/bin/prometheus").exists():
        return path or "/usr/bin/prometheus"
    if os.geteuid() != 0:
        pytest.skip("prometheus is not installed and installing it needs root (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"could not install prometheus: {done.stderr[-500:]}")
    return shutil.which("prometheus") or "/usr/bin/prometheus"


def test_prometheus_scrapes_the_sidecar(served, client, tmp_path):
    _, car = served
    binary = prometheus_binary()
    client.post("/predict", json={"records": [{"customer_id": "C0000002"}]})
    port = free_port()
    target = car.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: churn-serving
                scrape_interval: 1s
                static_configs:
                  - targets: ["{target}"]
            """
        )
    )
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"

        def scraped() -> float | None:
            try:
                r = httpx.get(api, params={"query": "sum(churn_serving_requests_total)"}, timeout=2)
            except httpx.HTTPError:
                return None
            result = r.json().get("data", {}).get("result", []) if r.status_code == 200 else []
            value = float(result[0]["value"][1]) if result else 0.0
            return value if value > 0 else None

        total = wait_until(scraped, timeout=60, interval=0.5)
        assert total > 0
        up = httpx.get(api, params={"query": 'up{job="churn-serving"}'}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_running_app_imports_neither_dagster_nor_mlflow(served):
    d, _ = served
    code = textwrap.dedent(
        f"""
        import sys
        from churn_serving.app import create_app
        from churn_serving.settings import ServingSettings
        from churn_assets.lib.storage import Storage
        import churn_serving.server
        app = create_app(ServingSettings(log_enabled=False), Storage({str(d.dataset_dir)!r}),
                         background=False)
        result = app.state.manager.reload(trigger="test")
        assert result["status"] == "reloaded", result
        assert app.state.manager.bundle.predictors["classifier"] is not None
        runtimes = {{r: p.runtime for r, p in app.state.manager.bundle.predictors.items() if p}}
        assert set(runtimes.values()) == {{"onnxruntime"}}, runtimes
        print("dagster" in sys.modules, "mlflow" in sys.modules, "sklearn" in sys.modules)
        # what is asked has been answered: leave without the interpreter's teardown, where
        # a native thread pool once aborted the process ("terminate called without an
        # active exception", exit -6) after the line above was printed
        sys.stdout.flush()
        import os
        os._exit(0)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "False False False"


def test_a_looked_up_customer_s_new_category_is_reported(deployment, tmp_path):
    """A customer whose row in current_features holds a category the version never saw:
    an id lookup answered ``unseen_categories: {}`` while the same row sent as a feature
    record said it, and the metric and inference log missed it. Lookups (cached answers
    included) now report it as the record would."""
    d = copy_deployment(deployment, tmp_path / "store")
    table = d.dataset_dir / "assets" / "current_features.parquet"
    frame = pl.read_parquet(table)
    who = frame["customer_id"][0]
    frame.with_columns(
        pl.when(pl.col("customer_id") == who)
        .then(pl.lit("weekly"))
        .otherwise(pl.col("plan"))
        .alias("plan")
    ).write_parquet(table)
    with sidecar(str(d.root), tmp_path / "logs") as car, car.client() as c:
        for _ in range(2):  # the second answer comes from the cached JSON
            r = c.post("/predict", json={"records": [{"customer_id": who}]})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0]["unseen_categories"] == {"plan": "weekly"}
        other = c.post("/predict", json={"records": [{"customer_id": frame["customer_id"][1]}]})
        assert other.json()["predictions"][0]["unseen_categories"] == {}
        text = c.get("/metrics").text
        assert 'churn_serving_unseen_categories_total{feature="plan"} 2.0' in text, text[-3000:]


def _read_all(sock: Any, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_a_request_that_does_not_arrive_in_time_is_closed_with_408(deployment, tmp_path):
    """Slow clients (a header line now and then, a body short of its Content-Length) held
    their connections for as long as they liked: enough of them and the sidecar could
    accept no other. A request now has CHURN_SERVING_REQUEST_READ_SECONDS to arrive whole;
    others are answered meanwhile, a slow request that arrives in time is answered, and how
    long the answer takes is not limited."""
    import socket

    d = copy_deployment(deployment, tmp_path / "store")
    with sidecar(str(d.root), tmp_path / "logs", request_read_seconds=2) as car:
        host, port = "127.0.0.1", int(car.url.rsplit(":", 1)[1])
        trickle = []
        for _ in range(40):  # headers never finished
            s = socket.create_connection((host, port))
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n")
            trickle.append(s)
        silent = socket.create_connection((host, port))  # connects, sends nothing
        body = b'{"records": [{"customer_id": "C0000001"}]}'
        short = socket.create_connection((host, port))  # a body short of its length
        short.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % (len(body) + 100)
            + body
        )
        with car.client() as c:
            assert c.get("/ready").status_code == 200  # answered meanwhile
        slow_but_in_time = socket.create_connection((host, port))
        for piece in (
            b"POST /predict HTTP/1.1\r\nHost: x\r\n",
            b"content-type: application/json\r\n",
        ):
            slow_but_in_time.sendall(piece)
            time.sleep(0.4)
        slow_but_in_time.sendall(
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
        )
        answer = _read_all(slow_but_in_time, 10)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'"churn_probability"' in answer
        for s in (*trickle, silent, short):
            answer = _read_all(s, 10)  # closed by the sidecar, not by the timeout here
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"did not arrive whole within 2 s" in answer
            s.close()
        with car.client() as c:
            assert c.get("/ready").status_code == 200
        log = car.log()
        assert "connection(s) whose request did not arrive whole within 2 s" in log
        assert "CHURN_SERVING_REQUEST_READ_SECONDS" in log
