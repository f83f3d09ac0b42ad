"""One real `churn dev` (dagster dev: webserver + daemon, and the sidecar) for the session.

The self-retraining tests and the browser test share it: starting the platform and letting
it deploy its first version costs minutes, so it happens once. It runs the shipped default
configuration (built-in ``synthetic`` data set, repository ``dagster.yaml``) with three test
settings, each for a reason:

- ``CHURN_LANDING_SENSOR_SECONDS=5`` (default 30): the landing sensor notices new files
  sooner, which only shortens waiting;
- ``CHURN_ALERT_WEBHOOK_URL`` (default unset: notifications off): the platform's run and
  check notifications go to a webhook served by the test session, as a team's Slack would
  receive them;
- ``CHURN_RETRAINING_CRON`` set to once a year (default hourly): a schedule tick during the
  session would start a retraining run the tests did not cause and move the deployed version
  under them. The hourly default itself is tested in ``test_schedules_sensors.py``.

The fixture ``platform_dev`` itself lives in ``tests/conftest.py``: the platform starts with
the session's first test whenever a test of the session uses it, so its start-up, ingestion
and first deployment happen while the tests before it run.

The landing zone is seeded with a smaller synthetic set (1,500 customers, 360 days) than
``churn dev`` writes by default (10,000 customers, 540 days), so a retraining run with the
default model set takes about a minute instead of several.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, REPO, free_port, real_data_dir, wait_http

RUNS_BY_TAG = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    ... on Runs { results { runId jobName status startTime endTime } }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($path: [String!]!, $limit: Int!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: $limit) { runId metadataEntries {
      label
      ... on FloatMetadataEntry { floatValue }
      ... on IntMetadataEntry { intValue }
      ... on BoolMetadataEntry { boolValue }
      ... on TextMetadataEntry { text }
      ... on MarkdownMetadataEntry { mdStr } } } } } }
"""


class Webhook:
    """A loopback HTTP server recording every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/churn"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: The Dagster UI address the shared platform's notifications link to.
DEV_UI_URL = "http://dagster.test:3000"


@dataclass
class DevPlatform:
    """A running `churn dev` and where its state lives."""

    port: int
    serving_port: int
    home: Path
    storage: Path
    landing: Path
    log: Path
    proc: subprocess.Popen
    webhook: Webhook | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.client()._execute(query, variables)

    def materializations(self, asset: str, limit: int = 1) -> list[tuple[str, dict[str, Any]]]:
        """The asset's newest materializations as the UI reads them: (run id, {label: value})
        (float, int, bool, text and markdown entries). A prefixed key is written with
        slashes, as the UI shows it (``telco/deployed_model_version``)."""
        found = self.query(MATERIALIZATIONS, {"path": asset.split("/"), "limit": limit})
        return [
            (
                mat["runId"],
                {
                    e["label"]: next((v for k, v in e.items() if k != "label"), None)
                    for e in mat["metadataEntries"]
                },
            )
            for mat in found["assetOrError"]["assetMaterializations"]
        ]

    def runs(self, tag: str, value: str, dataset: str = "synthetic") -> list[dict[str, Any]]:
        """Runs with the tag ``tag=value`` of ``dataset`` (the platform holds two data sets,
        each in its own code location: workspace.yaml)."""
        tags = [{"key": tag, "value": value}, {"key": "churn/dataset", "value": dataset}]
        return self.query(RUNS_BY_TAG, {"tags": tags})["runsOrError"]["results"]

    def finished(self, run_id: str) -> str | None:
        """The run's final status, or None while it is queued or running."""
        status = self.client().get_run_status(run_id).value
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate`` every 2 s until it returns something truthy, or fail with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def dev_environment(
    tmp: Path, storage: Path, serving_port: int, webhook: Webhook | None = None
) -> dict[str, str]:
    """The environment of a `churn dev` under test: no stray CHURN_* settings, own homes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "CHURN_STORAGE_URL": str(storage),
        "CHURN_LANDING_SENSOR_SECONDS": "5",
        "CHURN_LANDING_SETTLE_SECONDS": "2",
        "CHURN_RETRAINING_CRON": "0 0 1 1 *",
        "CHURN_SERVING_PORT": str(serving_port),
        "GX_ANALYTICS_ENABLED": "false",
        # the second data set of workspace.yaml (telco) reads its file from here
        "CHURN_REAL_DATA_DIR": str(real_data_dir()),
    }
    if webhook is not None:
        env |= {"CHURN_ALERT_WEBHOOK_URL": webhook.url, "CHURN_UI_URL": DEV_UI_URL}
    return env


#: The shared platform's data: 1,500 customers over 360 days (seed 7), small enough for a
#: retraining run of the default model sets in well under a minute on 2 cores.
SEED = ("--customers", "1500", "--days", "360", "--seed", "7")
#: Days held back at seeding: the label horizon of the synthetic data set.
HOLD_BACK_DAYS = 90


@contextlib.contextmanager
def running_dev(
    tmp: Path, *, seed: bool = True, webhook: Webhook | None = None
) -> Iterator[DevPlatform]:
    """Start `churn dev --no-seed` in its own session; stop its process group on exit.

    With ``seed``, the landing zone is seeded first as the README's realized-performance
    walk-through does (``churn seed --hold-back-days 90``): a small synthetic history
    without its last 90 days, which ``churn seed --land-held-back`` lands later (see
    :data:`SEED`). Notifications go to ``webhook`` when given."""
    storage = tmp / "storage"
    landing = storage / "landing" / "synthetic"
    port, serving_port = free_port(), free_port()
    env = dev_environment(tmp, storage, serving_port, webhook)
    if seed:
        subprocess.run(
            [str(BIN / "churn"), "seed", *SEED, "--hold-back-days", str(HOLD_BACK_DAYS)],
            env=env,
            check=True,
            capture_output=True,
        )
    log = tmp / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "churn"), "dev", "--port", str(port), "--no-seed"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        dev = DevPlatform(
            port, serving_port, tmp / "dagster_home", storage, landing, log, proc, webhook
        )
        try:
            wait_http(f"{dev.url}/server_info", timeout=300)  # slow on a busy machine
            yield dev
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Deployed:
    """The shared platform after it deployed its first version on its own."""

    dev: DevPlatform
    bootstrap_run: dict[str, Any]
    bootstrap_status: str


@contextlib.contextmanager
def own_tmp(prefix: str) -> Iterator[Path]:
    """A temporary folder outside pytest's ``basetemp``: pytest keeps only the three newest
    base folders per user, so another pytest session of the same user on the machine would
    delete a running platform's instance and storage from under it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def deployed_dev(platform_dev: DevPlatform) -> Deployed:
    """The shared platform once its first retraining run has finished: the landing sensor
    ingests the seeded files, and with nothing deployed the drift sensor starts the first
    retraining run ("bootstrap"). The status is returned, not asserted: tests say what
    they expect of it."""
    dev = platform_dev
    boot = dev.wait(lambda: dev.runs("churn/trigger", "bootstrap"), 400, "the bootstrap run")
    status = dev.wait(lambda: dev.finished(boot[0]["runId"]), 900, "the first deployment")
    return Deployed(dev, boot[0], status)


DRY_RUN = """
mutation DryRun($selector: %(kind)sSelector!) {
  %(kind_lower)sDryRun(selectorData: $selector%(extra)s) {
    __typename
    ... on DryRunInstigationTick { evaluationResult {
      runRequests { runKey } skipReason error { message } } }
    ... on PythonError { message }
  }
}
"""


def dry_run(dev: DevPlatform, kind: str, name: str) -> dict:
    """Evaluate a sensor or schedule of the running code location now, as the UI's "Test"
    button does (nothing is launched): its run requests and skip reason."""
    title = kind.capitalize()
    query = DRY_RUN % {
        "kind": title,
        "kind_lower": kind,
        # a schedule is evaluated at a given time; a sensor from a cursor (none: the latest)
        "extra": f", timestamp: {time.time():f}" if kind == "schedule" else ", cursor: null",
    }
    selector = {
        "repositoryLocationName": "churn_assets",
        "repositoryName": "__repository__",
        f"{kind}Name": name,
    }
    out = dev.query(query, {"selector": selector})[f"{kind}DryRun"]
    assert out["__typename"] == "DryRunInstigationTick", out
    result = out["evaluationResult"]
    assert result["error"] is None, result["error"]
    return result


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """``mlflow server`` on SQLite with served artifacts in ``tmp_path``; its URI."""
    from tests.integration.production import HttpService, base_env

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = HttpService(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        base_env(),
        tmp_path,
        f"{uri}/health",
    )
    server.start()
    try:
        yield uri
    finally:
        server.stop(timeout=10)
