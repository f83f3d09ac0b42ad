"""Serving benchmark: the sidecar vs ``mlflow models serve`` on the same champion, loopback.

``run(seconds)``:

1. **Deployment**, built once and cached in ``$TMPDIR/churn-bench-serving/`` (or the
   storage root in ``$CHURN_BENCH_SERVING_STORAGE``): the asset graph on a 2,000-customer
   synthetic data set with a fast candidate list, materialized in a subprocess.
2. **Same model for both**: the deployed champion (``classifier.skops``) is saved with
   ``mlflow.sklearn.save_model(serialization_format="skops", pyfunc_predict_fn=
   "predict_proba")`` so that MLflow answers probabilities too, and served with ``mlflow
   models serve --env-manager local`` (one uvicorn worker, its default). Our sidecar is
   ``churn serve`` (one uvicorn worker). Both run with ``OMP_NUM_THREADS=1``.
3. **Correctness**: a sample of feature rows is sent to both; the answers are compared with
   the scikit-learn pipeline's ``predict_proba`` computed here (``max_abs_diff``).
4. **Throughput and latency**: single-record requests (explicit features, the same rows for
   both; MLflow's ``dataframe_split`` format) at concurrency 16 for ``seconds`` each, after a
   warm-up. Load generator: ``wrk`` with a Lua script (installed with apt-get when missing
   and running as root), else an asyncio + httpx client with 16 workers.
5. **Batch**: one request of 10,000 ``customer_id`` lookups (``batch_records_per_s``, the
   batch use case: scoring known customers) and one of 10,000 explicit feature records
   (``batch_feature_records_per_s``), each the median of 5 → records/s.

Our sidecar answers more per request than MLflow (probability, label, expected sales from
the regressor, fallback levels, inference log) and MLflow only the champion's probability.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATASET = "synthetic"
CUSTOMERS = 2_000
CONCURRENCY = 16
BATCH_RECORDS = 10_000
SAMPLE_ROWS = 200
TARGETS = {"throughput_ratio_min": 5.0, "ours_p99_ms_max": 25.0, "batch_records_per_s_min": 1e5}
FAST_MODELS = {
    "classification_candidates": ["logistic_regression", "lightgbm"],
    "regression_candidates": ["naive_baseline", "ridge"],
    "cv_folds": 2,
}


def _log(msg: str) -> None:
    print(f"[bench serving] {msg}", file=sys.stderr, flush=True)


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- deployment


def _materialize(config: str) -> None:
    """Run the whole asset graph in-process (called in a subprocess by :func:`deployment`)."""
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    defs = build_definitions(ChurnPlatform(dataset=config), ChurnIOManager(dataset=config))
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    if not result.success:
        raise SystemExit("the asset graph failed")


def deployment() -> Path:
    """A storage root with a deployed version (built on first use, then reused)."""
    import yaml

    from churn_assets.lib import deployment as dep
    from churn_assets.lib.datasets import BUILTIN_DIR
    from churn_assets.lib.storage import Storage

    given = os.environ.get("CHURN_BENCH_SERVING_STORAGE")
    root = Path(given) if given else Path(tempfile.gettempdir()) / "churn-bench-serving" / "storage"
    store = Storage(str(root / DATASET))
    current = dep.read_current(store)
    if current and not dep.verify_version(store, current["version"]):
        return root
    if given:
        raise RuntimeError(f"{given} holds no intact deployment")
    _log(f"building a deployment in {root} (once; about a minute)")
    shutil.rmtree(root.parent, ignore_errors=True)
    root.mkdir(parents=True)
    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = {**(cfg.get("models") or {}), **FAST_MODELS}
    config = root.parent / "synthetic.yaml"
    config.write_text(yaml.safe_dump(cfg))
    from churn_assets.lib.generator import generate

    generate(str(root / "landing" / DATASET), customers=CUSTOMERS, days=360, seed=11)
    env = _env(root, OMP_NUM_THREADS="2", GX_ANALYTICS_ENABLED="false")
    code = f"from benchmarks.serving import _materialize; _materialize({str(config)!r})"
    subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=subprocess.DEVNULL,
    )
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    env.update(
        CHURN_STORAGE_URL=str(root),
        CHURN_DATASET=DATASET,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        PYTHONUNBUFFERED="1",
        # `mlflow models serve` starts `uvicorn` from PATH: use this environment's
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    env.update(extra)
    return env


# ------------------------------------------------------------------------------ servers


class Server:
    """A server process on a loopback port."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, log: Path):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait(self, path: str, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ------------------------------------------------------------------------ load generators


def _wrk() -> str | None:
    path = shutil.which("wrk")
    if path:
        return path
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        _log("installing wrk with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
    return shutil.which("wrk")


LUA = """
local bodies = {%(bodies)s}
local counter = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  counter = counter + 1
  return wrk.format("POST", "%(path)s", headers, bodies[(counter %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, " ..
    "\\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p90_us\\": %%d, \\"p99_us\\": %%d, \\"max_us\\": %%d}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _run_wrk(
    wrk: str, url: str, path: str, bodies: list[bytes], seconds: float, workdir: Path
) -> dict[str, Any]:
    script = workdir / f"load-{abs(hash(url + path))}.lua"
    lua_bodies = ",".join(f"[==[{b.decode()}]==]" for b in bodies)
    script.write_text(LUA % {"bodies": lua_bodies, "path": path})
    cmd = [
        wrk,
        "-t1",
        f"-c{CONCURRENCY}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url + path,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line.removeprefix("WRKJSON "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    duration = r["duration_us"] / 1e6
    return {
        "rps": round((r["requests"] - errors) / duration, 1),
        "requests": r["requests"],
        "errors": errors,
        "p50_ms": round(r["p50_us"] / 1e3, 3),
        "p90_ms": round(r["p90_us"] / 1e3, 3),
        "p99_ms": round(r["p99_us"] / 1e3, 3),
        "max_ms": round(r["max_us"] / 1e3, 3),
        "seconds": round(duration, 2),
    }


def _run_httpx(url: str, path: str, bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """16 asyncio workers, each sending one request at a time (closed loop)."""
    import httpx

    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
            start = time.perf_counter()
            end = start + seconds

            async def worker(k: int) -> None:
                nonlocal errors
                i = k
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    r = await client.post(path, content=bodies[i % len(bodies)], headers=headers)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1
                    i += CONCURRENCY

            await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
            return latencies, errors, time.perf_counter() - start

    latencies, errors, elapsed = asyncio.run(main())
    ms = np.asarray(latencies) * 1e3
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies) + errors,
        "errors": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "seconds": round(elapsed, 2),
    }


# -------------------------------------------------------------------------------- run


def run(seconds: float = 10.0) -> dict[str, Any]:
    """Benchmark our sidecar against ``mlflow models serve`` (same champion, loopback).

    Returns a JSON-able dict: ``throughput_ratio`` (ours / MLflow), ``ours`` and ``mlflow``
    (``rps``, ``p50_ms``, ``p99_ms``, ...), ``batch_records_per_s`` (one request of 10,000
    customer ids), ``batch_feature_records_per_s`` (10,000 explicit feature records),
    ``max_abs_diff`` (vs the scikit-learn pipeline), ``targets`` and ``meets_targets``.
    """
    import httpx

    from churn_assets.lib import deployment as dep
    from churn_assets.lib.models.persistence import ALLOWED_TYPES, loads_pipeline
    from churn_assets.lib.storage import Storage

    root = deployment()
    store = Storage(str(root / DATASET))
    version = dep.read_current(store)["version"]
    manifest = dep.read_manifest(store, version)
    champion_bytes = dep.load_pipeline_bytes(
        store, manifest, manifest["models"]["classifier"]["file"]
    )
    champion = loads_pipeline(champion_bytes)
    cols = [*manifest["features"]["numeric"], *manifest["features"]["categorical"]]
    table = store.read_parquet("assets/current_features.parquet")
    rows = table.select(cols)
    records = rows.to_dicts()
    ids = table["customer_id"].to_list()
    sample = rows.head(SAMPLE_ROWS)
    expected = champion.predict_proba(sample.to_pandas())[:, 1]

    work = Path(tempfile.mkdtemp(prefix="churn-bench-serving-"))
    servers: list[Server] = []
    try:
        import mlflow.sklearn

        model_dir = work / "mlflow-model"
        mlflow.sklearn.save_model(
            champion,
            str(model_dir),
            serialization_format="skops",
            skops_trusted_types=sorted(ALLOWED_TYPES),
            pyfunc_predict_fn="predict_proba",
            pip_requirements=["scikit-learn", "skops", "lightgbm", "churn-platform"],
        )
        ours_port, mlflow_port = _free_port(), _free_port()
        ours = Server(
            "sidecar",
            [_bin("churn"), "serve", "--host", "127.0.0.1", "--port", str(ours_port)],
            _env(root, CHURN_SERVING_POLL_SECONDS="3600"),
            ours_port,
            work / "sidecar.log",
        )
        servers.append(ours)
        mlf = Server(
            "mlflow",
            [
                _bin("mlflow"),
                "models",
                "serve",
                "-m",
                str(model_dir),
                "--env-manager",
                "local",
                "-p",
                str(mlflow_port),
                "-h",
                "127.0.0.1",
            ],
            _env(root),
            mlflow_port,
            work / "mlflow.log",
        )
        servers.append(mlf)
        ours.wait("/ready")
        mlf.wait("/ping")
        _log(f"sidecar on {ours.url}, mlflow on {mlf.url}; version {version}")

        # ---- correctness on a sample
        client = httpx.Client(timeout=120)
        ours_batch = client.post(
            ours.url + "/predict", json={"records": [{"features": r} for r in sample.to_dicts()]}
        )
        ours_batch.raise_for_status()
        got = np.array([p["churn_probability"] for p in ours_batch.json()["predictions"]])
        singles = np.array(
            [
                client.post(ours.url + "/predict", json={"records": [{"features": r}]}).json()[
                    "predictions"
                ][0]["churn_probability"]
                for r in sample.head(20).to_dicts()
            ]
        )
        split = {"dataframe_split": {"columns": cols, "data": [list(r) for r in sample.rows()]}}
        mlf_answer = client.post(mlf.url + "/invocations", json=split)
        mlf_answer.raise_for_status()
        mlf_proba = np.asarray(mlf_answer.json()["predictions"], dtype=float)
        mlf_proba = mlf_proba[:, 1] if mlf_proba.ndim == 2 else mlf_proba
        max_abs_diff = float(
            max(np.abs(got - expected).max(), np.abs(singles - expected[:20]).max())
        )
        mlflow_max_abs_diff = float(np.abs(mlf_proba - expected).max())

        # ---- single-record load
        picks = [records[i] for i in range(0, min(len(records), 64))]
        ours_bodies = [json.dumps({"records": [{"features": r}]}).encode() for r in picks]
        mlf_bodies = [
            json.dumps(
                {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols]]}}
            ).encode()
            for r in picks
        ]
        wrk = _wrk()
        generator = "wrk (1 thread, 16 connections, Lua POST bodies)" if wrk else "httpx asyncio"

        def load(server: Server, path: str, bodies: list[bytes], secs: float) -> dict[str, Any]:
            if wrk:
                return _run_wrk(wrk, server.url, path, bodies, secs, work)
            return _run_httpx(server.url, path, bodies, secs)

        _log("warm-up")
        load(ours, "/predict", ours_bodies, 2)
        load(mlf, "/invocations", mlf_bodies, 2)
        _log(f"load: ours for {seconds} s")
        ours_load = load(ours, "/predict", ours_bodies, seconds)
        _log(f"load: mlflow for {seconds} s")
        mlflow_load = load(mlf, "/invocations", mlf_bodies, seconds)

        # ---- batch of 10,000
        def timed(body: bytes, repeat: int = 5) -> float:
            times = []
            headers = {"content-type": "application/json"}
            client.post(ours.url + "/predict", content=body, headers=headers).raise_for_status()
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = client.post(ours.url + "/predict", content=body, headers=headers)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
            return statistics.median(times)

        feature_body = json.dumps(
            {"records": [{"features": records[i % len(records)]} for i in range(BATCH_RECORDS)]}
        ).encode()
        lookup_body = json.dumps(
            {"records": [{"customer_id": ids[i % len(ids)]} for i in range(BATCH_RECORDS)]}
        ).encode()
        # let the inference log write the load phase's backlog first (it is not batch work)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if client.get(ours.url + "/health").json()["inference_log"]["buffered_records"] == 0:
                break
            time.sleep(0.5)
        _log("batch of 10,000 records")
        batch_features_s = timed(feature_body)
        batch_lookup_s = timed(lookup_body)
        # reference: the scikit-learn pipelines themselves on the same 10,000 rows, here
        frame = rows[[i % len(records) for i in range(BATCH_RECORDS)]].to_pandas()
        regressor = loads_pipeline(
            dep.load_pipeline_bytes(store, manifest, manifest["models"]["regressor"]["file"])
        )
        pipeline_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            champion.predict_proba(frame)
            regressor.predict(frame)
            pipeline_times.append(time.perf_counter() - t0)
        health = client.get(ours.url + "/health").json()
        info = client.get(ours.url + "/model-info").json()
        client.close()
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)

    ratio = ours_load["rps"] / mlflow_load["rps"] if mlflow_load["rps"] else float("inf")
    feature_rps = BATCH_RECORDS / batch_features_s
    batch_rps = BATCH_RECORDS / batch_lookup_s
    meets = {
        "throughput_ratio": ratio >= TARGETS["throughput_ratio_min"],
        "ours_p99": ours_load["p99_ms"] <= TARGETS["ours_p99_ms_max"],
        "batch": batch_rps >= TARGETS["batch_records_per_s_min"],
        "predictions_match": max_abs_diff <= 1e-6,
        "no_errors": ours_load["errors"] == 0,
    }
    return {
        "throughput_ratio": round(ratio, 2),
        "ours": ours_load,
        "mlflow": mlflow_load,
        "batch_records_per_s": round(batch_rps),
        "batch_seconds": round(batch_lookup_s, 4),
        "batch_feature_records_per_s": round(feature_rps),
        "batch_feature_seconds": round(batch_features_s, 4),
        "batch_bytes": {"features": len(feature_body), "lookup": len(lookup_body)},
        "sklearn_pipelines_records_per_s": round(BATCH_RECORDS / min(pipeline_times)),
        "max_abs_diff": max_abs_diff,
        "mlflow_max_abs_diff": mlflow_max_abs_diff,
        "targets": TARGETS,
        "meets": meets,
        "meets_targets": all(meets.values()),
        "load_generator": generator,
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "model": {
            "version": version,
            "classifier": manifest["models"]["classifier"]["candidate"],
            "regressor": manifest["models"]["regressor"]["candidate"],
            "fast_path": info["models"]["classifier"]["fast_path"],
            "mlflow_model": "the same classifier.skops saved with mlflow.sklearn.save_model "
            "(skops, pyfunc_predict_fn=predict_proba)",
        },
        "sidecar": {"json": health.get("json"), "inference_log": health["inference_log"]},
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
        },
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(run(seconds=args.seconds), indent=2))
