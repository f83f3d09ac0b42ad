"""The production stack's services as real processes (no Docker here): PostgreSQL, S3
(moto_server in place of MinIO), the MLflow server, the Dagster code server, webserver and
daemon, the serving sidecar and Prometheus, started with docker-compose.yml's commands and
environments (service hosts mapped to this machine, see tests/integration/production.py).

The happy path materializes the whole graph once on the production instance
(deploy/dagster.production.yaml on PostgreSQL) and checks PostgreSQL, S3, MLflow, the
sidecar and Prometheus; then faults, in order: PostgreSQL restarted between runs, the MLflow
server down, S3 down for longer than the retry budget, and a short S3 outage that the
assets' retry policy rides out.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from churn_assets.definitions import build_definitions
from churn_assets.lib import deployment as dep
from churn_assets.retries import STORAGE_RETRY
from tests.conftest import REPO, free_port
from tests.integration.production import (
    BUCKET,
    DAGSTER_DB,
    HttpService,
    Outcome,
    Process,
    Stack,
    TcpGate,
    base_env,
    list_keys,
    production_stack,
    sigterm_default,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """PostgreSQL, moto_server and mlflow server running, data seeded, env applied."""
    mp = pytest.MonkeyPatch()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with production_stack(tmp_path_factory.mktemp("production")) as st:
            for k, v in st.env.items():
                mp.setenv(k, v)
            yield st
    finally:
        mp.undo()
        if previous is not None:  # None: set outside Python, nothing to restore
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def first_run(stack: Stack) -> Outcome:
    """The whole graph materialized once on the production instance."""
    run = stack.materialize()
    assert run.success, run.failure_text()
    return run


@pytest.fixture
def env(stack: Stack, isolated_env, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The stack's environment again (conftest's ``isolated_env`` resets CHURN_* per test)."""
    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    return stack


def _pointer(stack: Stack) -> dict:
    pointer = dep.read_current(stack.storage())
    assert pointer is not None
    return pointer


# ----------------------------------------------------------------------------- happy path


def test_run_and_events_are_in_postgres(env: Stack, first_run: Outcome):
    runs = [r.run_id for r in first_run.result.results]  # a run per landing file, then the rest
    rows = env.sql("SELECT DISTINCT status FROM runs WHERE run_id = ANY(%s)", (runs,))
    assert rows == [("SUCCESS",)]
    keys = env.sql(
        "SELECT DISTINCT asset_key FROM event_logs "
        "WHERE run_id = ANY(%s) AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (runs,),
    )
    graph = build_definitions().resolve_asset_graph().get_all_asset_keys()
    assert {json.loads(k)[0] for (k,) in keys} == {k.to_user_string() for k in graph}
    assert env.sql("SELECT current_database()") == [(DAGSTER_DB,)]


def test_assets_and_deployment_are_in_s3(env: Stack, first_run: Outcome):
    keys = set(list_keys(env.s3(), BUCKET, "storage/synthetic/"))
    for asset in ("raw_customers", "customer_features", "training_set", "churn_scores"):
        assert f"storage/synthetic/assets/{asset}.parquet" in keys
    assert "storage/synthetic/deployments/current.json" in keys
    pointer = _pointer(env)
    manifest = f"storage/synthetic/deployments/versions/{pointer['version']}/manifest.json"
    assert manifest in keys
    assert dep.verify_version(env.storage(), pointer["version"]) == []


def test_mlflow_server_has_runs_aliases_and_s3_artifacts(env: Stack, first_run: Outcome):
    client = env.mlflow_client()
    exp = client.get_experiment_by_name("churn-synthetic")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=200)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    for name in ("synthetic-churn-classifier", "synthetic-clv-regressor"):
        assert client.get_model_version_by_alias(name, "champion")
        assert client.get_model_version_by_alias(name, "challenger")
    # the code gives each experiment an artifact location under the storage root
    assert exp.artifact_location == f"s3://{BUCKET}/storage/mlflow/artifacts/synthetic"
    artifacts = list_keys(env.s3(), BUCKET, "storage/mlflow/artifacts/synthetic/")
    assert any(k.endswith("leaderboard.csv") for k in artifacts)
    assert any(k.endswith(".skops") or k.endswith("MLmodel") for k in artifacts)


@pytest.fixture(scope="class")
def sidecar(stack: Stack, first_run: Outcome, tmp_path_factory):
    """The sidecar with the compose command and environment (one per test class)."""
    try:
        import churn_serving.server  # noqa: F401
    except ImportError as e:
        pytest.skip(f"sidecar not available: {e}")
    port = free_port()
    proc = Process(
        "churn-serving",
        stack.compose.command("churn-serving", {"--host": "127.0.0.1", "--port": str(port)}),
        {**base_env(), **stack.compose.env("churn-serving")},
        tmp_path_factory.mktemp("sidecar"),
    )
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/ready", proc)
        yield base, port, proc
    finally:
        proc.stop()


class TestSidecar:
    """The sidecar started with the compose file's command and environment, reading the
    deployed version from S3, and Prometheus scraping it with deploy/prometheus/."""

    def test_predicts_from_s3(self, env: Stack, first_run: Outcome, sidecar):
        base, _, proc = sidecar
        current = first_run.result.output_for_node("current_features")
        customer = str(current["customer_id"][0])
        answer = _post(f"{base}/predict", {"records": [{"customer_id": customer}]})
        text = json.dumps(answer)
        assert customer in text and "churn_probability" in text, answer
        assert _pointer(env)["version"] in text
        health = subprocess.run(
            env.compose.healthcheck("churn-serving", replace={"localhost:8000": base[7:]}),
            capture_output=True,
        )
        assert health.returncode == 0, health.stderr
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'churn_serving_requests_total{endpoint="/predict"' in metrics

    def test_prometheus_scrapes_it_and_the_dashboard_queries_run(
        self, env: Stack, first_run: Outcome, sidecar, tmp_path
    ):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (make test installs it when root)")
        base, port, _ = sidecar
        current = first_run.result.output_for_node("current_features")
        _post(f"{base}/predict", {"records": [{"customer_id": str(current["customer_id"][0])}]})
        prom_port = free_port()
        config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        for job in config["scrape_configs"]:
            targets = job["static_configs"][0]["targets"]
            job["static_configs"][0]["targets"] = [
                t.replace("churn-serving:8000", f"127.0.0.1:{port}").replace(
                    "localhost:9090", f"127.0.0.1:{prom_port}"
                )
                for t in targets
            ]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        prom = HttpService(
            "prometheus",
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            base_env(),
            tmp_path,
            f"http://127.0.0.1:{prom_port}/-/ready",
        )
        prom.start()
        try:
            query = 'churn_serving_requests_total{job="churn-serving",endpoint="/predict"}'
            deadline = time.monotonic() + 60
            while not _prom(api, query)["result"]:
                assert time.monotonic() < deadline, f"no sample of {query}\n{prom.tail()}"
                time.sleep(0.5)
            dashboard = json.loads(
                (REPO / "deploy" / "grafana" / "dashboards" / "churn.json").read_text()
            )
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    _prom(api, target["expr"])  # raises on a PromQL error
            version = _prom(api, "churn_serving_model_version_info")["result"]
            assert version[0]["metric"]["version"] == _pointer(env)["version"]
        finally:
            prom.stop(timeout=10)


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _prom(api: str, query: str) -> dict:
    """A Prometheus instant query's ``data`` (AssertionError naming the query on errors)."""
    url = f"{api}/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{query}: {e.read().decode(errors='replace')}") from e
    assert body["status"] == "success", (query, body)
    return body["data"]


def _wait_ready(url: str, proc: Process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.running():
            raise AssertionError(f"sidecar exited:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = e.read().decode(errors="replace")
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready within {timeout} s: {last}\n{proc.tail()}")


def test_compose_dagster_services_run_the_sensor_run(env: Stack, first_run: Outcome, tmp_path):
    """code-location, dagster-webserver and dagster-daemon started with docker-compose.yml's
    commands and environments (endpoints mapped to this machine): a retraining run left
    STARTED by a code-location container that was killed is marked failed as the code
    server starts, its health checks pass, the landing sensor's run is queued, launched by
    the daemon through the code server (DefaultRunLauncher) and succeeds, and the webserver
    reports it."""
    import dagster as dg
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_graphql import DagsterGraphQLClient

    c = env.compose
    grpc_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.grpc.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    ws_path = tmp_path / "workspace.yaml"
    ws_path.write_text(yaml.safe_dump(workspace))
    local = {k: v for k, v in env.env.items() if k.startswith("DAGSTER_")}

    def service_env(name: str) -> dict[str, str]:
        return {**base_env(), **c.env(name, **local)}

    code = Process(
        "code-location",
        c.command("code-location", {"-h": "127.0.0.1", "-p": str(grpc_port)}),
        service_env("code-location"),
        tmp_path,
    )
    web = Process(
        "dagster-webserver",
        c.command(
            "dagster-webserver", {"-h": "127.0.0.1", "-p": str(web_port), "-w": str(ws_path)}
        ),
        service_env("dagster-webserver"),
        tmp_path,
    )
    daemon = Process(
        "dagster-daemon",
        c.command("dagster-daemon", {"-w": str(ws_path)}),
        service_env("dagster-daemon"),
        tmp_path,
    )
    checks = {
        "code-location": c.healthcheck("code-location", {"-p": str(grpc_port)}),
        "dagster-webserver": c.healthcheck(
            "dagster-webserver", replace={"localhost:3000": f"127.0.0.1:{web_port}"}
        ),
        "dagster-daemon": c.healthcheck("dagster-daemon"),
    }
    procs = (code, web, daemon)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(2000)}" for p in procs)

    def healthy(name: str) -> bool:
        done = subprocess.run(checks[name], env=service_env(name), capture_output=True, timeout=60)
        return done.returncode == 0

    def wait(what: str, ok, timeout: float = 180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.running() for p in procs if p.proc), f"a process exited\n{logs()}"
            value = ok()
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"{what}: not within {timeout} s\n{logs()}")

    landing_runs = (
        "SELECT r.run_id, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
        "WHERE t.key = 'churn/trigger' AND t.value = 'landing'"
    )
    location = GrpcServerCodeLocationOrigin(
        host="code-location",
        port=4000,
        location_name=code.cmd[code.cmd.index("--location-name") + 1],
    )
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "retraining")
    with dg.DagsterInstance.get() as instance:
        stranded = instance.add_run(
            DagsterRun(
                job_name="retraining", status=dg.DagsterRunStatus.STARTED, remote_job_origin=origin
            )
        ).run_id
    try:
        code.start()
        wait("code-location health check", lambda: healthy("code-location"))
        assert env.sql("SELECT status FROM runs WHERE run_id = %s", (stranded,)) == [("FAILURE",)]
        web.start()
        daemon.start()
        wait("dagster-webserver health check", lambda: healthy("dagster-webserver"))
        run_id, _ = wait("a landing-sensor run", lambda: next(iter(env.sql(landing_runs)), None))
        done = ("SUCCESS", "FAILURE", "CANCELED")
        status = wait(
            "the landing-sensor run ending",
            lambda: next((s for r, s in env.sql(landing_runs) if r == run_id and s in done), None),
            timeout=240,
        )
        assert status == "SUCCESS", logs()
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
        assert client.get_run_status(run_id).value == "SUCCESS"
        wait("dagster-daemon liveness check", lambda: healthy("dagster-daemon"), timeout=120)
    finally:
        for p in reversed(procs):
            p.stop(timeout=15)


# ---------------------------------------------------------------------------------- faults


def test_postgres_restart_between_runs(env: Stack, first_run: Outcome):
    import dagster as dg

    with dg.DagsterInstance.get() as long_lived:  # like the webserver's and daemon's
        assert long_lived.get_run_by_id(first_run.run_id).is_success
        env.pg.ctl("restart")
        env.pg.wait_ready()
        run = env.materialize(["current_features"])
        assert run.success, run.failure_text()
        assert env.sql("SELECT status FROM runs WHERE run_id = %s", (run.run_id,)) == [("SUCCESS",)]
        # an instance opened before the restart reconnects too
        assert long_lived.get_run_by_id(run.run_id).is_success


def test_mlflow_down_fails_with_clear_error_and_keeps_pointer(
    env: Stack, first_run: Outcome, monkeypatch: pytest.MonkeyPatch
):
    """The MLflow server down: every attempt names the tracking URI, the run fails after the
    retry policy, and the pointer stays. The tracking URI points at a closed gate in front
    of the server (connection refused, as when the mlflow container is down; the server
    itself keeps running, so no restart follows). The client's own HTTP retries, two with
    backoff by default, about 12 s per attempt, are cut to none to keep the test short."""
    before = _pointer(env)
    gate = TcpGate(int(env.mlflow_uri.rsplit(":", 1)[1]))  # closed: nothing listens
    for key in ("MLFLOW_TRACKING_URI", "CHURN_MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, gate.endpoint)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = env.materialize(["classification_models"])
    assert not run.success
    text = run.failure_text()
    assert f"MLflow tracking at {gate.endpoint} is unreachable" in text, text
    # the retry policy tried again before giving up
    assert len(run.of_type("STEP_UP_FOR_RETRY")) == STORAGE_RETRY.max_retries
    assert _pointer(env) == before
    assert env.mlflow_client().get_experiment_by_name("churn-synthetic") is not None


def test_s3_down_fails_clearly_and_pointer_stays_complete(
    env: Stack, first_run: Outcome, monkeypatch: pytest.MonkeyPatch
):
    """S3 down for longer than the retry policy waits (about 22 s): every attempt fails
    naming the endpoint, the run fails, and the pointer still names a complete version;
    with S3 back a run succeeds. S3 is a closed gate in front of moto_server (connection
    refused, as when the MinIO container is down; the data stays, so nothing is restored
    after). botocore's own retries, about 5 s per request by default, are cut to one
    attempt to keep the test short."""
    before = _pointer(env)
    gate = TcpGate(env.moto.port)  # closed: S3 refuses connections, its data stays
    try:
        with monkeypatch.context() as outage:
            outage.setenv("CHURN_S3_ENDPOINT_URL", gate.endpoint)
            outage.setenv("MLFLOW_S3_ENDPOINT_URL", gate.endpoint)
            outage.setenv("AWS_MAX_ATTEMPTS", "1")
            _fresh_s3_clients()
            run = env.materialize(["deployed_model_version", "churn_scores"])
    finally:
        _fresh_s3_clients()  # S3 is back: clients with the real endpoint again
    assert not run.success
    assert len(run.of_type("STEP_UP_FOR_RETRY")) == STORAGE_RETRY.max_retries
    text = run.failure_text()
    assert f'Could not connect to the endpoint URL: "{gate.endpoint}/' in text, text
    current = _pointer(env)
    assert current == before
    assert dep.verify_version(env.storage(), current["version"]) == []
    again = env.materialize(["deployed_model_version", "churn_scores"])
    assert again.success, again.failure_text()
    current = _pointer(env)
    assert dep.verify_version(env.storage(), current["version"]) == []


def _fresh_s3_clients() -> None:
    """Drop fsspec's cached S3 file systems (their botocore config is read at creation)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def test_short_s3_outage_is_retried(env: Stack, first_run: Outcome, monkeypatch):
    """S3 refuses connections when the run starts and is back after the first failed
    attempt: the assets' retry policy rides the outage out. (botocore's own retries are cut
    to one attempt, as in the test above, so the first attempt fails in seconds.)"""
    gate = TcpGate(env.moto.port)
    monkeypatch.setenv("CHURN_S3_ENDPOINT_URL", gate.endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", gate.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    _fresh_s3_clients()
    (last_event,) = env.sql("SELECT coalesce(max(id), 0) FROM event_logs")[0]
    outcome: list[Outcome | BaseException] = []

    def run() -> None:
        try:
            outcome.append(env.materialize(["deployed_model_version", "churn_scores"]))
        except BaseException as e:  # reported by the main thread
            outcome.append(e)

    sigterm_default()  # the run below is in a thread, where it cannot be set (see there)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()  # the gate is closed: every S3 request is refused
    try:
        deadline = time.monotonic() + 120
        while not env.sql(
            "SELECT 1 FROM event_logs WHERE id > %s AND dagster_event_type = 'STEP_UP_FOR_RETRY'",
            (last_event,),
        ):
            assert worker.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.2)
        gate.open()  # S3 is back after the first failed attempt
        worker.join(timeout=180)
    finally:
        gate.close()
        monkeypatch.delenv("AWS_MAX_ATTEMPTS")
        _fresh_s3_clients()
    assert not worker.is_alive()
    result = outcome[0]
    assert isinstance(result, Outcome), result
    assert result.success, result.failure_text()
    assert result.of_type("STEP_RESTARTED")
    assert dep.verify_version(env.storage(), _pointer(env)["version"]) == []
