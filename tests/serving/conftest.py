"""Fixtures for the serving sidecar: one real deployment per session, sidecar processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage
from tests.conftest import BIN, REPO, free_port
from tests.helpers import run_graph
from tests.integration.test_deployment import small_synthetic

DATASET = "synthetic"


@dataclass(frozen=True)
class Deployment:
    """A storage root holding one deployed version (and the MLflow store that made it)."""

    root: Path
    version: str

    @property
    def dataset_dir(self) -> Path:
        return self.root / DATASET

    def storage(self) -> Storage:
        return Storage(str(self.dataset_dir))

    def manifest(self) -> dict[str, Any]:
        return dep.read_manifest(self.storage(), self.version)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """The graph materialized once on a small synthetic data set (the slow part: ~30 s)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("serving-deploy")
    storage = tmp / "storage"
    try:
        mp.setenv("CHURN_STORAGE_URL", str(storage))
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        run = run_graph(small_synthetic(storage, tmp))
        assert run.result.success
        graphs = run.check("deployed_model_version", "served_graphs_match_pipelines")
        assert graphs.passed, graphs.description
    finally:
        mp.undo()
    version = dep.read_current(Storage(str(storage / DATASET)))["version"]
    return Deployment(storage, version)


def copy_deployment(src: Deployment, dest_root: Path) -> Deployment:
    """A private copy (deployments + current_features only) to tamper with."""
    dest = dest_root / DATASET
    shutil.copytree(src.dataset_dir / "deployments", dest / "deployments")
    (dest / "assets").mkdir(parents=True)
    shutil.copy2(
        src.dataset_dir / "assets" / "current_features.parquet",
        dest / "assets" / "current_features.parquet",
    )
    return Deployment(dest_root, src.version)


@pytest.fixture
def private_deployment(deployment: Deployment, tmp_path: Path) -> Deployment:
    """A per-test copy of the session deployment."""
    return copy_deployment(deployment, tmp_path / "store")


def add_version(
    d: Deployment,
    *,
    from_version: str | None = None,
    replace: dict[str, bytes] | None = None,
    manifest_changes: dict[str, Any] | None = None,
    point: bool = True,
) -> str:
    """Write a new version (artifacts copied from ``from_version``, some replaced) and,
    with ``point``, move the pointer to it (verified, like a release)."""
    s = d.storage()
    base = from_version or dep.read_current(s)["version"]
    m = dep.read_manifest(s, base)
    artifacts = {n: s.read_bytes(f"deployments/versions/{base}/{n}") for n in m["artifacts"]}
    artifacts.update(replace or {})
    body = {k: v for k, v in m.items() if k not in ("version", "artifacts")}
    body.update(manifest_changes or {})
    version = dep.new_version(s)
    dep.write_version(s, version, artifacts, body)
    if point:
        dep.set_current(s, version, reason="test")
    return version


def point_unverified(d: Deployment, version: str) -> None:
    """Move the pointer without verification (what a corrupted store looks like)."""
    s = d.storage()
    pointer = dep.read_current(s)
    pointer.update(version=version, manifest=f"versions/{version}/manifest.json")
    pointer["updated_at"] = f"{pointer['updated_at']}-{time.time_ns()}"
    s.write_json(dep.POINTER, pointer)


@dataclass
class Sidecar:
    """A running ``churn serve`` process."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def serving_env(storage_url: str, **serving: Any) -> dict[str, str]:
    """Environment for a sidecar process: storage, data set and CHURN_SERVING_* values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    env.update(
        {
            "CHURN_STORAGE_URL": storage_url,
            "CHURN_DATASET": DATASET,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for k, v in serving.items():
        env[f"CHURN_SERVING_{k.upper()}"] = str(v)
    return env


@contextmanager
def sidecar(
    storage_url: str,
    log_dir: Path,
    *,
    wait_ready: bool = True,
    extra_env: dict[str, str] | None = None,
    **serving: Any,
) -> Iterator[Sidecar]:
    """Start ``churn serve --port P`` on a free loopback port; stop it afterwards."""
    port = free_port()
    env = serving_env(storage_url, **serving)
    env.update(extra_env or {})
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"sidecar-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "churn"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
        )
    car = Sidecar(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for(car, ready=wait_ready)
        yield car
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for(car: Sidecar, *, ready: bool = True, timeout: float = 180.0) -> None:
    """Wait for /health (and /ready with ``ready``) to answer 200."""
    deadline = time.monotonic() + timeout
    path = "/ready" if ready else "/health"
    last: Any = None
    while time.monotonic() < deadline:
        if car.proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {car.proc.returncode}:\n{car.log()}")
        try:
            r = httpx.get(car.url + path, timeout=2.0)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{car.url}{path} not 200 within {timeout} s: {last}\n{car.log()}")


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something other than None / False (returned),
    or time out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
