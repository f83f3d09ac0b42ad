"""Serving benchmark: what users get from the sidecar, per champion type, against the
framework's ceiling and ``mlflow models serve``, loopback.

``run(seconds)``:

1. **Deployment**, built once and cached in ``$TMPDIR/churn-bench-serving/`` (or the
   storage root in ``$CHURN_BENCH_SERVING_STORAGE``): the asset graph on the default
   10,000-customer synthetic data set with the DEFAULT candidate list, materialized in a
   subprocess. Its champion is the headline row (``default``).
2. **Per champion type** (HistGradientBoosting, random forest, LightGBM, logistic
   regression, the soft-voting ensemble of the three best by validation ROC-AUC): each
   candidate is trained here on the deployment's training set, written as a new version (the
   same release steps: ONNX export and verification) and hot-reloaded into the running
   sidecar; then measured.
3. **Load**: single-record requests at concurrency 16 for ``seconds`` each after a warm-up,
   with ``wrk`` (installed with apt-get when missing and running as root) or an asyncio +
   httpx client: req/s, p50/p99, errors, and the server's CPU time per request (user +
   system of its process, ``/proc``; steadier than req/s on a shared machine). Two kinds per
   type: **id lookups** (``{"customer_id": ...}``, 64 real customers cycled: the row's
   headline numbers and the targets) and **feature records** (``{"features": {...}}`` of the
   same customers: the models run per request; under ``features``).
4. **Ceiling**: a bare FastAPI app under the same uvicorn settings answering a fixed body of
   the size of a sidecar answer (:mod:`benchmarks.bare_fastapi`), loaded with the same
   request bodies (lookup bodies; feature bodies for the feature rows); every row reports its
   ratio to it.
5. **MLflow**: the default champion saved with ``mlflow.sklearn.save_model(skops,
   pyfunc_predict_fn="predict_proba")`` and served by ``mlflow models serve --env-manager
   local`` (one uvicorn worker), single feature records (it has no id lookups).
6. **Batch** (default champion): one request of 1,000 customer-id lookups, one of 1,000
   explicit feature records, the same 1,000 records as a JSON columnar body and as an Arrow
   IPC stream (Arrow answer too; the columns with their types in ``current_features``)
   (median of 5 → records/s), and the same with 10,000; then the throughput (``*_loaded``):
   ``wrk`` with ``BATCH_CONNECTIONS`` connections sending the lookup batch, then the JSON
   columnar batch, then the Arrow batch, back to back for ``BATCH_SECONDS`` each (records/s,
   p50/p99, server CPU per request, and the records the inference log dropped and kept per
   second: beyond what its writer keeps up with, a full buffer drops whole batches). The
   batch targets apply to the throughput (the sequential figures without ``wrk``) of the
   lookups and of the JSON columnar body; the Arrow rows are reported beside them.
7. **Correctness**: per row, 200 feature records answered by the sidecar (as a batch and the
   first 20 one by one) and the same customers by id against the scikit-learn pipeline's
   ``predict_proba`` (``max_abs_diff``).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from churn_serving.arrow_body import ARROW_STREAM

DATASET = "synthetic"
CUSTOMERS = 10_000  # the shipped default data size (`churn seed`)
CONCURRENCY = 16
BATCH_SIZES = (1_000, 10_000)
#: Batch throughput: this many connections send the same batch back to back for this long.
BATCH_CONNECTIONS = 2
BATCH_SECONDS = 5.0
SAMPLE_ROWS = 200
#: Champion types measured one by one (besides the default champion).
CHAMPION_TYPES = (
    "hist_gradient_boosting",
    "random_forest",
    "lightgbm",
    "logistic_regression",
    "ensemble",
)
TARGETS = {
    "ratio_to_bare_fastapi_min": 0.5,
    "ratio_to_bare_fastapi_goal": 0.7,
    "p99_ms_max": 15.0,
    "p99_ms_goal": 10.0,
    "batch_lookup_records_per_s_min": 2e5,
    "batch_lookup_records_per_s_goal": 5e5,
    "batch_feature_records_per_s_min": 1e5,  # columnar body
    "max_abs_diff_max": 1e-6,
}
ADMIN_TOKEN = "bench-serving"


def _log(msg: str) -> None:
    print(f"[bench serving] {msg}", file=sys.stderr, flush=True)


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def arrow_stream(table: Any) -> bytes:
    """A pyarrow table as an Arrow IPC stream (the sidecar's Arrow request body)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


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
    from churn_assets.partitions import run_in_process
    from churn_assets.resources import ChurnPlatform

    platform = ChurnPlatform(dataset=config)
    defs = build_definitions(platform, ChurnIOManager(dataset=config))
    job = defs.resolve_implicit_global_asset_job_def()
    result = run_in_process(job, dg.DagsterInstance.ephemeral(), platform)
    if not result.success:
        raise SystemExit("the asset graph failed")


DEFAULT_MARKER = "default_version.txt"


def deployment() -> Path:
    """A storage root with a deployed version (built on first use, then reused); the version
    the graph deployed is remembered in ``default_version.txt`` beside the storage."""
    import yaml

    from churn_assets.lib import deployment as dep
    from churn_assets.lib.datasets import BUILTIN_DIR
    from churn_assets.lib.storage import Storage

    given = os.environ.get("CHURN_BENCH_SERVING_STORAGE")
    cache = Path(tempfile.gettempdir()) / "churn-bench-serving" / f"{CUSTOMERS}-customers"
    root = Path(given) if given else cache / "storage"
    store = Storage(str(root / DATASET))
    current = dep.read_current(store)
    marker = root / DEFAULT_MARKER
    if current and marker.exists() and not dep.verify_version(store, marker.read_text().strip()):
        return root
    if given:
        raise RuntimeError(f"{given} holds no intact deployment")
    _log(f"building a deployment in {root} (once; a few minutes: every default candidate)")
    shutil.rmtree(root.parent, ignore_errors=True)
    root.mkdir(parents=True)
    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
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
    marker.write_text(dep.read_current(store)["version"])
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


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds so far of a process and its live descendants (Linux
    ``/proc``; ``mlflow models serve`` answers from a child process), else None."""
    if pid is None:
        return None
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                return None
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return total


#: wrk script for one fixed body (read once from a file; wrk reuses the request).
LUA_FIXED = (
    """
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(content_type)s"
%(accept)s
local f = assert(io.open("%(file)s", "rb"))
wrk.body = f:read("*all")
f:close()
"""
    + "done"
    + LUA.split("\ndone", 1)[1]
)


def _run_wrk(
    wrk: str,
    url: str,
    path: str,
    bodies: list[bytes],
    seconds: float,
    workdir: Path,
    connections: int = CONCURRENCY,
    content_type: str = "application/json",
    accept: str | None = None,
) -> dict[str, Any]:
    """``wrk`` for ``seconds`` on ``connections`` connections: ``bodies`` cycled (one body:
    sent as is, read from a file, so that the client does not rebuild big requests, with
    ``content_type`` and, if given, ``accept``)."""
    key = (url, path, len(bodies), bodies[0][:64], content_type, accept)
    script = workdir / f"load-{abs(hash(key))}.lua"
    if len(bodies) == 1:
        body_file = script.with_suffix(".json")
        body_file.write_bytes(bodies[0])
        script.write_text(
            LUA_FIXED
            % {
                "file": str(body_file),
                "content_type": content_type,
                "accept": f'wrk.headers["Accept"] = "{accept}"' if accept else "",
            }
        )
    else:
        lua_bodies = ",".join(f"[==[{b.decode()}]==]" for b in bodies)
        script.write_text(LUA % {"bodies": lua_bodies, "path": path})
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
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


# ------------------------------------------------------------------------ champion types


def train_types(store: Any, manifest: dict[str, Any]) -> dict[str, tuple[Any, float]]:
    """Every champion type trained on the deployment's training set (train split), with its
    max-F1 threshold on validation: ``type → (pipeline, threshold)``. The ensemble is the soft
    vote of the three best base candidates by validation ROC-AUC, as in training."""
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    from churn_assets.lib.feature_sets import to_splits
    from churn_assets.lib.models.classification import (
        BASE_CANDIDATES,
        build_classifier,
        build_ensemble,
    )
    from churn_assets.lib.models.metrics import choose_threshold
    from churn_assets.lib.models.spec import FeatureSpec

    splits = to_splits(store.read_parquet("assets/training_set.parquet"))
    feats = manifest["features"]
    spec = FeatureSpec(list(feats["numeric"]), list(feats["categorical"]))
    train, valid = splits["train"], splits["validation"]
    y_tr = train["churned"].astype(int).to_numpy()
    y_va = valid["churned"].astype(int).to_numpy()
    fitted: dict[str, tuple[Any, float]] = {}
    auc: dict[str, float] = {}
    with threadpool_limits(2):
        for name in BASE_CANDIDATES:
            pipe = build_classifier(name, spec, y_train=y_tr).fit(train, y_tr)
            proba = pipe.predict_proba(valid)[:, 1]
            fitted[name] = (pipe, choose_threshold(y_va, proba))
            auc[name] = float(roc_auc_score(y_va, proba))
        top = sorted(auc, key=lambda n: (-auc[n], n))[:3]
        members = {n: build_classifier(n, spec, y_train=y_tr) for n in top}
        ensemble = build_ensemble(members).fit(train, y_tr)
        proba = ensemble.predict_proba(valid)[:, 1]
        fitted["ensemble"] = (ensemble, choose_threshold(y_va, proba))
    _log(f"trained {len(fitted)} candidates; ensemble of {top}")
    return {t: fitted[t] for t in CHAMPION_TYPES}


def write_type_version(
    store: Any, base_version: str, name: str, pipeline: Any, threshold: float
) -> str:
    """A new version like ``base_version`` whose churn champion is ``pipeline`` (ONNX export
    and verification as in a release), pointed to."""
    import io

    import polars as pl

    from churn_assets.lib import deployment as dep
    from churn_assets.lib.models.persistence import dumps_pipeline
    from churn_assets.lib.onnx_export import export_version

    m = dep.read_manifest(store, base_version)
    folder = dep.version_dir(base_version)
    artifacts = {n: store.read_bytes(f"{folder}/{n}") for n in m["artifacts"]}
    data = dumps_pipeline(pipeline)
    models = {r: dict(e) for r, e in m["models"].items()}
    file = models["classifier"]["file"]
    artifacts[file] = data
    models["classifier"].update(candidate=name, sha256=dep.sha256(data), threshold=threshold)
    reference = pl.read_parquet(io.BytesIO(artifacts["reference.parquet"])).to_pandas()
    onnx, entries = export_version(
        artifacts, models, {"classifier": pipeline}, m["features"], reference, m["feature_schema"]
    )
    artifacts.update(onnx)
    for role, entry in entries.items():
        models[role]["onnx"] = entry
    body = {k: v for k, v in m.items() if k not in ("version", "artifacts")}
    body["models"] = models
    version = dep.new_version(store)
    dep.write_version(store, version, artifacts, body)
    dep.set_current(store, version, reason=f"serving benchmark: {name} champion")
    return version


# -------------------------------------------------------------------------------- run


def ratios(row: dict[str, Any], bare: dict[str, Any]) -> dict[str, float | None]:
    """``ratio_to_bare_fastapi``: req/s over the bare app's; ``cpu_ratio_to_bare_fastapi``:
    the bare app's server CPU per request over the row's (the same ratio for a server bound
    by its own CPU, and steadier when other work on the machine comes and goes between the
    two measurements)."""
    cpu, bare_cpu = row.get("cpu_us_per_request"), bare.get("cpu_us_per_request")
    return {
        "ratio_to_bare_fastapi": round(row["rps"] / bare["rps"], 3),
        "cpu_ratio_to_bare_fastapi": round(bare_cpu / cpu, 3) if cpu and bare_cpu else None,
    }


def _max_abs_diff(
    client: Any, url: str, sample: Any, sample_ids: list[str], expected: np.ndarray
) -> float:
    """Sidecar vs pipeline on the sample: as one batch of feature records, as one batch of
    id lookups of the same customers, and the first 20 feature records one by one."""
    body = {"records": [{"features": r} for r in sample.to_dicts()]}
    r = client.post(url + "/predict", json=body)
    r.raise_for_status()
    got = np.array([p["churn_probability"] for p in r.json()["predictions"]])
    r = client.post(url + "/predict", json={"records": [{"customer_id": i} for i in sample_ids]})
    r.raise_for_status()
    by_id = np.array([p["churn_probability"] for p in r.json()["predictions"]])
    got_diff = max(np.abs(got - expected).max(), np.abs(by_id - expected).max())
    singles = np.array(
        [
            client.post(url + "/predict", json={"records": [{"features": rec}]}).json()[
                "predictions"
            ][0]["churn_probability"]
            for rec in sample.head(20).to_dicts()
        ]
    )
    return float(max(got_diff, np.abs(singles - expected[:20]).max()))


def run(seconds: float = 10.0) -> dict[str, Any]:
    """The sidecar per champion type against the bare-FastAPI ceiling and MLflow.

    Returns a JSON-able dict: ``types`` (one row per champion type, ``default`` first: the
    candidate, ``runtime``, single id lookups' ``rps``, ``p50_ms``, ``p99_ms``, ``errors``,
    ``cpu_us_per_request``, ``ratio_to_bare_fastapi``; ``features``: the same for single
    feature records; ``max_abs_diff``), ``bare_fastapi`` (lookup bodies; ``features``: feature
    bodies) and ``mlflow`` (feature records, default champion), ``batch`` (records/s of id
    lookups, feature records and a columnar body per batch size), ``targets``, ``meets`` and
    ``meets_targets``.
    """
    import httpx

    from churn_assets.lib import deployment as dep
    from churn_assets.lib.models.persistence import ALLOWED_TYPES, loads_pipeline
    from churn_assets.lib.storage import Storage

    load_before = round(os.getloadavg()[0], 2)
    root = deployment()
    store = Storage(str(root / DATASET))
    default_version = (root / DEFAULT_MARKER).read_text().strip()
    dep.set_current(store, default_version, reason="serving benchmark: the default champion")
    manifest = dep.read_manifest(store, default_version)
    champion = loads_pipeline(
        dep.load_pipeline_bytes(store, manifest, manifest["models"]["classifier"]["file"])
    )
    cols = [*manifest["features"]["numeric"], *manifest["features"]["categorical"]]
    table = store.read_parquet("assets/current_features.parquet")
    rows = table.select(cols)
    records = rows.to_dicts()
    ids = table["customer_id"].to_list()
    sample = rows.head(SAMPLE_ROWS)
    sample_ids = ids[:SAMPLE_ROWS]
    sample_frame = sample.to_pandas()
    picks = [records[i] for i in range(0, min(len(records), 64))]
    feature_bodies = [json.dumps({"records": [{"features": r}]}).encode() for r in picks]
    lookup_bodies = [
        json.dumps({"records": [{"customer_id": ids[i]}]}).encode() for i in range(len(picks))
    ]

    work = Path(tempfile.mkdtemp(prefix="churn-bench-serving-"))
    servers: list[Server] = []
    wrk = _wrk()
    generator = "wrk (1 thread, 16 connections, Lua POST bodies)" if wrk else "httpx asyncio"

    def load(server: Server, path: str, bodies: list[bytes], secs: float) -> dict[str, Any]:
        before = _cpu_seconds(server.proc.pid)
        if wrk:
            r = _run_wrk(wrk, server.url, path, bodies, secs, work)
        else:
            r = _run_httpx(server.url, path, bodies, secs)
        after = _cpu_seconds(server.proc.pid)
        if before is not None and after is not None and r["requests"]:
            r["cpu_us_per_request"] = round((after - before) / r["requests"] * 1e6, 1)
        return r

    def measured(server: Server, path: str, bodies: list[bytes]) -> dict[str, Any]:
        load(server, path, bodies, 2)  # warm-up
        return load(server, path, bodies, seconds)

    client = httpx.Client(timeout=120)
    try:
        ours_port, bare_port, mlflow_port = _free_port(), _free_port(), _free_port()
        ours = Server(
            "sidecar",
            [_bin("churn"), "serve", "--host", "127.0.0.1", "--port", str(ours_port)],
            _env(root, CHURN_SERVING_POLL_SECONDS="3600", CHURN_SERVING_ADMIN_TOKEN=ADMIN_TOKEN),
            ours_port,
            work / "sidecar.log",
        )
        servers.append(ours)
        ours.wait("/ready")
        answer = client.post(ours.url + "/predict", content=lookup_bodies[0]).content
        (work / "answer.json").write_bytes(answer)
        bare = Server(
            "bare-fastapi",
            [
                sys.executable,
                "-m",
                "benchmarks.bare_fastapi",
                "--port",
                str(bare_port),
                "--answer",
                str(work / "answer.json"),
            ],
            _env(root),
            bare_port,
            work / "bare.log",
        )
        servers.append(bare)
        bare.wait("/ready")

        # ---- the framework's ceiling, with the bodies of each kind of row
        _log("load: bare FastAPI")
        bare_load = measured(bare, "/predict", lookup_bodies)
        bare_features = measured(bare, "/predict", feature_bodies)
        bare.stop()

        # ---- MLflow on the default champion
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
        mlf.wait("/ping")
        split = {"dataframe_split": {"columns": cols, "data": [list(r) for r in sample.rows()]}}
        mlf_answer = client.post(mlf.url + "/invocations", json=split)
        mlf_answer.raise_for_status()
        mlf_proba = np.asarray(mlf_answer.json()["predictions"], dtype=float)
        mlf_proba = mlf_proba[:, 1] if mlf_proba.ndim == 2 else mlf_proba
        expected = champion.predict_proba(sample_frame)[:, 1]
        mlf_bodies = [
            json.dumps(
                {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols]]}}
            ).encode()
            for r in picks
        ]
        _log("load: mlflow models serve")
        mlflow_load = measured(mlf, "/invocations", mlf_bodies)
        mlflow_load["max_abs_diff"] = float(np.abs(mlf_proba - expected).max())
        mlf.stop()

        def row(name: str) -> dict[str, Any]:
            info = client.get(ours.url + "/model-info").json()["models"]["classifier"]
            r = measured(ours, "/predict", lookup_bodies)
            f = measured(ours, "/predict", feature_bodies)
            return {
                "candidate": info["candidate"],
                "runtime": info["runtime"],
                **r,
                **ratios(r, bare_load),
                "features": {**f, **ratios(f, bare_features)},
            }

        # ---- the default champion: single records, then batches
        types: dict[str, dict[str, Any]] = {}
        _log(f"load: sidecar, default champion {manifest['models']['classifier']['candidate']}")
        types["default"] = row("default")
        types["default"]["max_abs_diff"] = _max_abs_diff(
            client, ours.url, sample, sample_ids, expected
        )

        def timed(body: bytes, repeat: int = 5, media: str = "application/json") -> float:
            times = []
            headers = {"content-type": media, "accept": media}
            client.post(ours.url + "/predict", content=body, headers=headers).raise_for_status()
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = client.post(ours.url + "/predict", content=body, headers=headers)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
            return statistics.median(times)

        _wait_log_drained(client, ours.url)
        batch: dict[str, Any] = {}
        for size in BATCH_SIZES:
            features = json.dumps(
                {"records": [{"features": records[i % len(records)]} for i in range(size)]}
            ).encode()
            columns = json.dumps(
                {"columns": {c: [records[i % len(records)][c] for i in range(size)] for c in cols}}
            ).encode()
            arrow = arrow_stream(rows.to_arrow().take(np.arange(size) % rows.height))
            lookups = json.dumps(
                {"records": [{"customer_id": ids[i % len(ids)]} for i in range(size)]}
            ).encode()
            _log(f"batches of {size:,} records")
            row_b: dict[str, Any] = {
                "lookup_records_per_s": round(size / timed(lookups)),
                "feature_records_per_s": round(size / timed(features)),
                "feature_columns_records_per_s": round(size / timed(columns)),
                "feature_arrow_records_per_s": round(size / timed(arrow, media=ARROW_STREAM)),
                "bytes": {
                    "lookup": len(lookups),
                    "features": len(features),
                    "columns": len(columns),
                    "arrow": len(arrow),
                },
            }
            _wait_log_drained(client, ours.url)
            if wrk:  # throughput: BATCH_CONNECTIONS clients sending the batch back to back
                for kind, body, media in (
                    ("lookup", lookups, "application/json"),
                    ("feature_columns", columns, "application/json"),
                    ("feature_arrow", arrow, ARROW_STREAM),
                ):
                    dropped = _log_dropped(client, ours.url)
                    before = _cpu_seconds(ours.proc.pid)
                    r = _run_wrk(
                        wrk,
                        ours.url,
                        "/predict",
                        [body],
                        BATCH_SECONDS,
                        work,
                        connections=BATCH_CONNECTIONS,
                        content_type=media,
                        accept=media,
                    )
                    after = _cpu_seconds(ours.proc.pid)
                    _wait_log_drained(client, ours.url)
                    dropped = _log_dropped(client, ours.url) - dropped
                    loaded = {
                        "records_per_s": round(r["rps"] * size),
                        "p50_ms": r["p50_ms"],
                        "p99_ms": r["p99_ms"],
                        "errors": r["errors"],
                        "requests": r["requests"],
                        # records the inference log dropped (its buffer was full): the
                        # throughput did not pay for writing them
                        "log_records_dropped": dropped,
                        # records served and logged per second
                        "logged_records_per_s": round(
                            max(0.0, r["rps"] * size * r["seconds"] - dropped) / r["seconds"]
                        ),
                    }
                    if before is not None and after is not None and r["requests"]:
                        loaded["cpu_ms_per_request"] = round(
                            (after - before) / r["requests"] * 1e3, 2
                        )
                    row_b[f"{kind}_loaded"] = loaded
            batch[str(size)] = row_b

        # ---- one row per champion type
        for name, (pipeline, threshold) in train_types(store, manifest).items():
            version = write_type_version(store, default_version, name, pipeline, threshold)
            reload = client.post(
                ours.url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ).json()
            if reload.get("version") != version:
                raise RuntimeError(f"{name}: the sidecar did not load {version}: {reload}")
            _log(f"load: sidecar, {name} champion ({version})")
            types[name] = row(name)
            want = pipeline.predict_proba(sample_frame)[:, 1]
            types[name]["max_abs_diff"] = _max_abs_diff(client, ours.url, sample, sample_ids, want)
            _wait_log_drained(client, ours.url)
        health = client.get(ours.url + "/health").json()
    finally:
        client.close()
        for s in servers:
            s.stop()
        dep.set_current(store, default_version, reason="serving benchmark: restored")
        shutil.rmtree(work, ignore_errors=True)

    load_after = round(os.getloadavg()[0], 2)
    worst_ratio = min(t["ratio_to_bare_fastapi"] for t in types.values())
    worst_p99 = max(t["p99_ms"] for t in types.values())
    worst_diff = max(t["max_abs_diff"] for t in types.values())
    first = batch[str(BATCH_SIZES[0])]
    meets = {
        "ratio_to_bare_fastapi": worst_ratio >= TARGETS["ratio_to_bare_fastapi_min"],
        "p99": worst_p99 <= TARGETS["p99_ms_max"],
        "no_errors": all(t["errors"] == 0 for t in types.values()),
        "batch_lookups": batch_rate(first, "lookup") >= TARGETS["batch_lookup_records_per_s_min"],
        "batch_features": batch_rate(first, "feature_columns")
        >= TARGETS["batch_feature_records_per_s_min"],
        "predictions_match": worst_diff <= TARGETS["max_abs_diff_max"],
    }
    return {
        "types": types,
        "bare_fastapi": {**bare_load, "features": bare_features},
        "mlflow": {
            **mlflow_load,
            **ratios(mlflow_load, bare_features),
            "model": "the default champion's classifier.skops saved with "
            "mlflow.sklearn.save_model (skops, pyfunc_predict_fn=predict_proba)",
        },
        "batch": batch,
        "max_abs_diff": worst_diff,
        "targets": TARGETS,
        "meets": meets,
        "meets_targets": all(meets.values()),
        "load_generator": generator,
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "default_version": default_version,
        "sidecar": {"inference_log": health["inference_log"]},
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_1m": load_before,
            "load_average_1m_after": load_after,
            "python": sys.version.split()[0],
        },
    }


def batch_rate(row: dict[str, Any], kind: str) -> float:
    """Records/s of one batch kind (``lookup`` / ``feature_columns``): the loaded
    throughput when measured (``wrk``), else the sequential one. (How much of it the
    inference log kept is reported beside it: ``logged_records_per_s``.)"""
    loaded = row.get(f"{kind}_loaded")
    if loaded is not None:
        return 0.0 if loaded["errors"] else float(loaded["records_per_s"])
    return float(row[f"{kind}_records_per_s"])


def _log_dropped(client: Any, url: str) -> int:
    """Records the sidecar's inference log has dropped so far."""
    return int(client.get(url + "/health").json()["inference_log"]["records_dropped"])


def _wait_log_drained(client: Any, url: str, timeout: float = 30.0) -> None:
    """Let the inference log write its backlog (not part of the next measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(url + "/health").json()["inference_log"]["buffered_records"] == 0:
            return
        time.sleep(0.5)


def table(result: dict[str, Any]) -> str:
    """The per-type rows as a Markdown table: single id lookups (the targets), then single
    feature records (the models run per request)."""
    lines = [
        "| champion type | candidate | runtime | kind | req/s | p50 ms | p99 ms | errors | "
        "CPU µs/request | ratio to bare FastAPI | CPU ratio | max abs diff |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cells(t: dict[str, Any]) -> str:
        cpu = t.get("cpu_us_per_request")
        cpu_ratio = t.get("cpu_ratio_to_bare_fastapi", 1.0)
        return (
            f"{t['rps']:,.0f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['errors']} | "
            f"{'' if cpu is None else f'{cpu:,.0f}'} | {t.get('ratio_to_bare_fastapi', 1.0):.2f} | "
            f"{'' if cpu_ratio is None else f'{cpu_ratio:.2f}'}"
        )

    for name, t in result["types"].items():
        lines.append(
            f"| {name} | {t['candidate']} | {t['runtime']} | id lookup | {cells(t)} | "
            f"{t['max_abs_diff']:.1e} |"
        )
        lines.append(f"| {name} | | | features | {cells(t['features'])} | |")
    bare = result["bare_fastapi"]
    lines.append(f"| bare_fastapi | | | id lookup body | {cells(bare)} | |")
    lines.append(f"| bare_fastapi | | | features body | {cells(bare['features'])} | |")
    m = result["mlflow"]
    lines.append(f"| mlflow | | scikit-learn | features | {cells(m)} | {m['max_abs_diff']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    out = run(seconds=args.seconds)
    print(json.dumps(out, indent=2))
    print(table(out), file=sys.stderr)
