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
import re
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

COMPOSE_FILE = REPO / "docker-compose.yml"
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


# ------------------------------------------------------------------------ docker-compose.yml

#: ``$$`` (a literal dollar) or ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}`` ...
COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's variable interpolation of one string (``$$`` → ``$``).

    Raises:
        KeyError: a ``${NAME:?message}`` variable has no value.
    """

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.groups()
        value = values.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("+"):
            return "" if unset else arg
        if not unset:
            return value
        if op is not None and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op is not None and op.endswith("-") else ""

    return COMPOSE_VAR.sub(sub, text)


def _interpolate_all(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, values)
    if isinstance(node, list):
        return [_interpolate_all(v, values) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_all(v, values) for k, v in node.items()}
    return node


def environment(service: dict) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``KEY=value`` list) as a dict of strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def with_options(argv: list[str], options: dict[str, str]) -> list[str]:
    """``argv`` with the value after each flag in ``options`` replaced (flags must exist)."""
    out = list(argv)
    for flag, value in options.items():
        if flag not in out:
            raise ValueError(f"{flag} not in {argv}")
        out[out.index(flag) + 1] = value
    return out


class Compose:
    """docker-compose.yml interpolated with ``values`` (what .env would hold), its commands
    and environments rewritten for plain processes on this machine: ``hosts`` maps the
    service URLs (``http://minio:9000``, ``http://mlflow:5000`` ...) to local ones."""

    def __init__(self, values: dict[str, str], hosts: dict[str, str]):
        raw = yaml.safe_load(COMPOSE_FILE.read_text())
        self.services: dict[str, dict] = _interpolate_all(raw["services"], values)
        self.hosts = hosts

    def _local(self, text: str) -> str:
        for old, new in self.hosts.items():
            text = text.replace(old, new)
        return text

    def env(self, service: str, **overrides: str) -> dict[str, str]:
        """The service's environment with local endpoints, plus ``overrides``."""
        env = {k: self._local(v) for k, v in environment(self.services[service]).items()}
        return {**env, **overrides}

    def command(
        self,
        service: str,
        options: dict[str, str] | None = None,
        replace: dict[str, str] | None = None,
    ) -> list[str]:
        """The service's command with local endpoints, flags set from ``options``, other
        substrings replaced by ``replace`` and the executable taken from this virtualenv."""
        return self._argv(self.services[service]["command"], options, replace)

    def healthcheck(
        self,
        service: str,
        options: dict[str, str] | None = None,
        replace: dict[str, str] | None = None,
    ) -> list[str]:
        """The service's ``CMD`` health check, rewritten like :meth:`command`."""
        test = self.services[service]["healthcheck"]["test"]
        assert test[0] == "CMD", f"{service}: only exec-form health checks run here"
        return self._argv(test[1:], options, replace)

    def _argv(
        self, argv: list[str], options: dict[str, str] | None, replace: dict[str, str] | None
    ) -> list[str]:
        out = []
        for arg in argv:
            arg = self._local(arg)
            for old, new in (replace or {}).items():
                arg = arg.replace(old, new)
            out.append(arg)
        out = with_options(out, options or {})
        return [str(BIN / out[0]) if (BIN / out[0]).exists() else out[0], *out[1:]]


def base_env() -> dict[str, str]:
    """The minimum a process needs besides a compose service's environment."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


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


def drop_databases(pg: Postgres) -> None:
    """Drop the test databases and role."""
    for db in (DAGSTER_DB, MLFLOW_DB):
        pg.admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pg.admin(f"DROP ROLE IF EXISTS {ROLE}")


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

    def stop(self, timeout: float = 20, crash: bool = False) -> None:
        """SIGTERM the process group (children too, even if the leader has exited), SIGKILL
        after ``timeout`` s (at once with ``crash``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if crash else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
            os.killpg(proc.pid, signal.SIGKILL)

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


class HttpService(Process):
    """A process that is up when ``health_url`` answers 200."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, url: str):
        super().__init__(name, cmd, env, log_dir)
        self.health_url = url

    def start(self) -> None:
        """Start the process and wait until it is healthy."""
        self.spawn()
        self.wait_healthy()

    def spawn(self) -> None:
        """Start the process without waiting (MLflow takes a while: migrations, imports)."""
        super().start()

    def wait_healthy(self, timeout: float = 120) -> None:
        """Wait until the health URL answers 200 (fail if the process exits)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.health_url, timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not healthy within {timeout} s:\n{self.tail()}")


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
    """The services of the production stack running on this machine.

    :attr:`env` is the code-location service's environment from docker-compose.yml with
    local endpoints (what the in-process runs use); :attr:`compose` rewrites the other
    services' commands and environments the same way.
    """

    pg: Postgres
    password: str
    moto: MotoServer
    mlflow: HttpService
    mlflow_uri: str
    home: Path
    compose: Compose
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
            {
                "key": "testing",
                "secret": "testing",
                "client_kwargs": {"endpoint_url": self.moto.endpoint},
            },
        )

    def mlflow_client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.mlflow_uri, self.mlflow_uri)

    def materialize(
        self, selection: list[str] | None = None, run_config: dict | None = None
    ) -> Outcome:
        """Materialize the graph (or ``selection``) in this process on a fresh
        ``DagsterInstance.get()`` (the production instance: PostgreSQL via DAGSTER_HOME).
        The caller has put :attr:`env` into ``os.environ``."""
        import dagster as dg

        from churn_assets.definitions import build_definitions
        from churn_assets.partitions import run_in_process

        assert os.environ.get("DAGSTER_HOME") == str(self.home)
        sigterm_default()
        defs = build_definitions()
        job = defs.resolve_implicit_global_asset_job_def()
        with dg.DagsterInstance.get() as instance:
            result = run_in_process(
                job,
                instance,
                defs.resources["platform"],
                [dg.AssetKey(k) for k in selection] if selection else None,
                run_config=run_config or {},
            )
            return Outcome(result.run_id, result.success, list(result.all_events), result)


def sigterm_default() -> None:
    """Give SIGTERM its default action again (main thread only; elsewhere a no-op).

    An in-process run starts Dagster's compute-log ``tail -F`` processes and stops them with
    SIGTERM, waiting up to 30 s for each. They inherit an ignored SIGTERM, and in the full
    suite this process has been seen with SIGTERM ignored (its origin is not known yet): the
    tails then outlived the run and each run's end waited a minute."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
    """Start PostgreSQL (if down), moto_server and the compose file's mlflow command; write
    DAGSTER_HOME and the data set config; seed the synthetic landing zone into S3. The
    environment is docker-compose.yml's, with .env values made up here and the service
    hosts mapped to local endpoints. Stops what it started."""
    pg = ensure_postgres()
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    moto: MotoServer | None = None
    mlflow: HttpService | None = None
    try:
        password = secrets.token_hex(12)
        create_databases(pg, password)
        moto = MotoServer(log_dir)
        moto.start()
        s3_client(moto.endpoint).create_bucket(Bucket=BUCKET)
        home = write_instance_home(tmp / "dagster_home")
        mlflow_port = free_port()
        mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
        dotenv = {  # what .env holds in compose
            "POSTGRES_USER": ROLE,
            "POSTGRES_PASSWORD": password,
            "CHURN_BUCKET": BUCKET,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "CHURN_DATASET": fast_dataset_config(tmp / "synthetic.yaml"),
            # far from any test run: no scheduled retraining run while the daemon is up
            "CHURN_RETRAINING_CRON": "0 3 1 1 *",
            "MINIO_ROOT_USER": "unused",
            "MINIO_ROOT_PASSWORD": "unused",
            "GRAFANA_ADMIN_USER": "unused",
            "GRAFANA_ADMIN_PASSWORD": "unused",
        }
        compose = Compose(
            dotenv,
            {
                "http://minio:9000": moto.endpoint,
                "http://mlflow:5000": mlflow_uri,
                "@postgres:5432/mlflow": f"@127.0.0.1:{pg.port}/{MLFLOW_DB}",
            },
        )
        mlflow = HttpService(
            "mlflow",
            compose.command(
                "mlflow", {"--host": "127.0.0.1", "--port": str(mlflow_port), "--workers": "1"}
            ),
            {**base_env(), **compose.env("mlflow")},
            log_dir,
            f"{mlflow_uri}/health",
        )
        mlflow.spawn()
        env = compose.env(
            "code-location",
            DAGSTER_HOME=str(home),
            DAGSTER_POSTGRES_HOST="127.0.0.1",
            DAGSTER_POSTGRES_DB=DAGSTER_DB,
            DAGSTER_POSTGRES_PORT=str(pg.port),
        )
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
        mlflow.wait_healthy()
        yield Stack(pg, password, moto, mlflow, mlflow_uri, home, compose, log_dir, env)
    finally:
        if mlflow is not None:
            mlflow.stop(timeout=5)
        if moto is not None:
            moto.stop(timeout=5)
        with contextlib.suppress(Exception):  # leave the cluster as it was found
            drop_databases(pg)
        if pg.started_here:
            pg.ctl("stop")
