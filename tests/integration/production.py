"""Helpers for the production-stack integration tests: the services of docker-compose.yml
as plain processes on this machine.

* PostgreSQL: the machine's cluster (``pg_ctlcluster``), a role with a password and the
  databases ``dagster_test`` and ``mlflow_test`` (TCP on 127.0.0.1 with scram, as in compose).
* S3: ``moto_server`` on a free loopback port (in place of MinIO), a bucket, snapshots of
  its objects so that a killed server can come back with its data.
* MLflow: ``mlflow server`` on PostgreSQL with artifacts in S3.
* Dagster: a ``DAGSTER_HOME`` holding ``deploy/dagster.production.yaml`` as ``dagster.yaml``,
  so ``DagsterInstance.get()`` is the production instance on PostgreSQL.
* :class:`TcpGate`: a TCP forwarder in front of an endpoint that can refuse connections for a
  while (a network outage that keeps the server and its data).

Every process started here is stopped by its owner (``stop()`` in ``finally`` blocks).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BIN, REPO, free_port, wait_http

INSTANCE_YAML = REPO / "deploy" / "dagster.production.yaml"
ROLE = "churn_test"
DAGSTER_DB = "dagster_test"
MLFLOW_DB = "mlflow_test"
BUCKET = "churn-prod-test"
FAST_MODELS = {
    "classification_candidates": ["logistic_regression", "lightgbm"],
    "regression_candidates": ["naive_baseline", "ridge"],
    "cv_folds": 2,
}


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """The machine's PostgreSQL cluster, administered through the ``postgres`` OS user."""

    version: str
    cluster: str
    port: int
    started_here: bool = False

    def ctl(self, action: str) -> None:
        """``pg_ctlcluster <version> <cluster> <action>`` (start, stop, restart)."""
        subprocess.run(
            ["pg_ctlcluster", self.version, self.cluster, action],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def admin(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the ``postgres`` superuser (peer authentication over the socket)."""
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At"]
            + ["-v", "ON_ERROR_STOP=1", "-p", str(self.port), "-d", db, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {sql!r}: {done.stderr.strip()}")
        return done.stdout

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the server accepts TCP connections on 127.0.0.1."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run(
                ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if done.returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"PostgreSQL on port {self.port} not ready within {timeout} s")


def _clusters() -> list[list[str]]:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.splitlines() if line.strip()]


def ensure_postgres() -> Postgres:
    """The machine's PostgreSQL, started if it is down (installed first when root).

    Skips the calling test when PostgreSQL is absent and cannot be installed, or when this
    process is not root (starting a cluster and peer-authenticating as ``postgres`` need it).
    """
    if os.geteuid() != 0:
        pytest.skip("the production-stack tests administer the machine's PostgreSQL: run as root")
    if shutil.which("pg_lsclusters") is None or not _clusters():
        if shutil.which("apt-get") is None:
            pytest.skip("PostgreSQL is not installed and apt-get is not available")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if done.returncode != 0:
                pytest.skip(f"could not install PostgreSQL ({' '.join(cmd)}): {done.stderr[-500:]}")
    rows = _clusters()
    if not rows:
        pytest.skip("PostgreSQL is installed but has no cluster (pg_lsclusters is empty)")
    version, cluster, port, status = rows[0][:4]
    pg = Postgres(version, cluster, int(port))
    if status != "online":
        pg.ctl("start")
        pg.started_here = True
    pg.wait_ready()
    return pg


def create_databases(pg: Postgres, password: str) -> None:
    """(Re)create the test role with ``password`` and empty ``dagster_test``/``mlflow_test``."""
    exists = pg.admin(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'").strip()
    verb = "ALTER" if exists else "CREATE"
    pg.admin(f"{verb} ROLE {ROLE} WITH LOGIN PASSWORD '{password}'")
    for db in (DAGSTER_DB, MLFLOW_DB):
        pg.admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        pg.admin(f"CREATE DATABASE {db} OWNER {ROLE}")


# ------------------------------------------------------------------------------ processes


class Process:
    """A service process with its output in a log file; stopped by :meth:`stop`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers stop with it
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 20 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        """The end of the log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class MotoServer(Process):
    """``moto_server`` on a fixed loopback port (a restart keeps the endpoint)."""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.port = port or free_port()
        super().__init__(
            "moto",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            dict(os.environ),
            log_dir,
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_http(self.endpoint, timeout=30)


class MlflowServer(Process):
    """``mlflow server`` with a PostgreSQL backend store and S3 artifacts."""

    def __init__(self, backend_uri: str, artifacts: str, env: dict[str, str], log_dir: Path):
        self.port = free_port()
        super().__init__(
            "mlflow",
            [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri]
            + ["--artifacts-destination", artifacts, "--serve-artifacts"]
            + ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env,
            log_dir,
        )

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"mlflow server exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                import urllib.request

                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.5)
        raise TimeoutError(f"mlflow server not healthy within 120 s:\n{self.tail()}")


class TcpGate:
    """A TCP forwarder on a fixed loopback port in front of ``target_port``.

    :meth:`close` drops every open connection and stops listening (clients get "connection
    refused", as when the S3 container is down); :meth:`open` listens again on the same port.
    The server behind it keeps running with its data.
    """

    def __init__(self, target_port: int, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        """Listen on the gate's port and forward every connection."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def close(self) -> None:
        """Stop listening and reset every forwarded connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # closed meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


# ------------------------------------------------------------------------------------ S3


def s3_client(endpoint: str):
    """A boto3 S3 client for ``endpoint`` (credentials from the environment)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def list_keys(s3, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix``."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def snapshot(s3, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket`` (moto keeps its data in memory only)."""
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in list_keys(s3, bucket)}


def restore(s3, bucket: str, objects: dict[str, bytes]) -> None:
    """Create ``bucket`` and put ``objects`` back."""
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


# ------------------------------------------------------------------------------ the stack


@dataclass
class Outcome:
    """One run of the asset graph on the production instance."""

    run_id: str
    success: bool
    events: list[Any]
    result: Any

    def of_type(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.event_type_value == kind]

    def failure_text(self) -> str:
        """Every step failure's message and causes, joined."""
        parts = []
        for ev in self.of_type("STEP_FAILURE"):
            err = ev.event_specific_data.error
            while err is not None:
                parts.append(err.message)
                err = err.cause
        return "\n".join(parts)


@dataclass
class Stack:
    """The services of the production stack running on this machine."""

    pg: Postgres
    password: str
    moto: MotoServer
    mlflow: MlflowServer
    home: Path
    dataset_config: str
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pg_dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.pg.port} dbname={DAGSTER_DB} "
            f"user={ROLE} password={self.password}"
        )

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Rows of ``query`` on the Dagster database (psycopg2 over TCP, like Dagster)."""
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.pg_dsn)) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def s3(self):
        return s3_client(self.moto.endpoint)

    def storage(self):
        """The data set's storage root as the code sees it."""
        from churn_assets.lib.storage import Storage

        return Storage(
            f"s3://{BUCKET}/storage/synthetic",
            {"client_kwargs": {"endpoint_url": self.moto.endpoint}},
        )

    def mlflow_client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.mlflow.uri, self.mlflow.uri)

    def materialize(
        self, selection: list[str] | None = None, run_config: dict | None = None
    ) -> Outcome:
        """Materialize the graph (or ``selection``) in this process on a fresh
        ``DagsterInstance.get()`` (the production instance: PostgreSQL via DAGSTER_HOME).
        The caller has put :attr:`env` into ``os.environ``."""
        import dagster as dg

        from churn_assets.definitions import build_definitions

        assert os.environ.get("DAGSTER_HOME") == str(self.home)
        job = build_definitions().resolve_implicit_global_asset_job_def()
        if selection:
            job = job.get_subset(asset_selection={dg.AssetKey(k) for k in selection})
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                instance=instance, raise_on_error=False, run_config=run_config or {}
            )
            return Outcome(result.run_id, result.success, list(result.all_events), result)


def write_instance_home(home: Path) -> Path:
    """A DAGSTER_HOME with the production instance yaml as its ``dagster.yaml``."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    return home


def fast_dataset_config(path: Path) -> str:
    """The synthetic data set config with a fast candidate list; returns its path."""
    from churn_assets.lib.datasets import BUILTIN_DIR

    cfg = yaml.safe_load((BUILTIN_DIR / "synthetic.yaml").read_text())
    cfg["models"] = {**cfg.get("models", {}), **FAST_MODELS}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@contextlib.contextmanager
def production_stack(tmp: Path) -> Iterator[Stack]:
    """Start PostgreSQL (if down), moto_server and mlflow server; write DAGSTER_HOME and the
    data set config; seed the synthetic landing zone into S3. Stops what it started."""
    pg = ensure_postgres()
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    moto: MotoServer | None = None
    mlflow: MlflowServer | None = None
    try:
        password = secrets.token_hex(12)
        create_databases(pg, password)
        moto = MotoServer(log_dir)
        moto.start()
        s3_client(moto.endpoint).create_bucket(Bucket=BUCKET)
        home = write_instance_home(tmp / "dagster_home")
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": moto.endpoint,
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_USER": ROLE,
            "DAGSTER_POSTGRES_PASSWORD": password,
            "DAGSTER_POSTGRES_HOST": "127.0.0.1",
            "DAGSTER_POSTGRES_DB": DAGSTER_DB,
            "DAGSTER_POSTGRES_PORT": str(pg.port),
            "CHURN_ENV": "compose",
            "CHURN_STORAGE_URL": f"s3://{BUCKET}/storage",
            "CHURN_S3_ENDPOINT_URL": moto.endpoint,
            "CHURN_DATASET": fast_dataset_config(tmp / "synthetic.yaml"),
            "GX_ANALYTICS_ENABLED": "false",
            # fail fast when a service is down (the defaults retry for minutes)
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        }
        backend = f"postgresql+psycopg2://{ROLE}:{password}@127.0.0.1:{pg.port}/{MLFLOW_DB}"
        mlflow = MlflowServer(backend, f"s3://{BUCKET}/mlflow", {**os.environ, **env}, log_dir)
        mlflow.start()
        env["MLFLOW_TRACKING_URI"] = mlflow.uri
        from churn_assets.lib.generator import generate

        generate(
            f"s3://{BUCKET}/storage/landing/synthetic",
            customers=1500,
            days=360,
            seed=7,
            storage_options={
                "key": "testing",
                "secret": "testing",
                "client_kwargs": {"endpoint_url": moto.endpoint},
            },
        )
        yield Stack(pg, password, moto, mlflow, home, env["CHURN_DATASET"], log_dir, env)
    finally:
        if mlflow is not None:
            mlflow.stop()
        if moto is not None:
            moto.stop()
        if pg.started_here:
            pg.ctl("stop")
