"""A drifted batch fires an alert end to end, with the real processes.

The platform's drift report (``build_drift_report``) runs on a drifted batch of a real
deployment; the sidecar (``churn serve``) picks the summary up and raises
``churn_drift_detected``; Prometheus (Debian ``prometheus``, the shipped ``prometheus.yml``
and ``alerts.yml``) scrapes it and fires ``ChurnDriftDetected``; Alertmanager (Debian
``prometheus-alertmanager``, the shipped ``alertmanager.yml``) posts it to a webhook served by
this test. Only intervals are shortened (scrape/evaluation 1 s, group wait 1 s) and addresses
moved to free loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.monitoring import build_drift_report
from churn_assets.lib.settings import ChurnSettings
from tests.conftest import REPO, free_port
from tests.integration.production import HttpService, base_env
from tests.serving.conftest import (  # noqa: F401 (the session deployment fixture)
    Deployment,
    copy_deployment,
    deployment,
    sidecar,
    wait_until,
)

pytestmark = pytest.mark.integration


def debian_binary(package: str, binary: str) -> str:
    """``binary`` from a Debian package, installed with apt-get when missing (root only)."""
    path = shutil.which(binary)
    if path:
        return path
    if os.geteuid() != 0:
        pytest.skip(f"{package} is not installed and installing it needs root (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"could not install {package}: {done.stderr[-500:]}")
    return shutil.which(binary) or f"/usr/bin/{binary}"


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


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def get_json(url: str, **params: str) -> Any:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def drift_gauge(sidecar_url: str) -> float | None:
    """The value of churn_drift_detected on the sidecar's /metrics (None while absent)."""
    with urllib.request.urlopen(f"{sidecar_url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("churn_drift_detected{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def drifted(features: pl.DataFrame, numeric: list[str], categorical: list[str]) -> pl.DataFrame:
    """The batch after a shift: numeric features tripled plus a spread, categories collapsed."""
    shifted = [
        (pl.col(c).cast(pl.Float64) * 3 + pl.col(c).cast(pl.Float64).std() * 2).alias(c)
        for c in numeric
        if c in features.columns
    ]
    collapsed = [
        pl.lit(features[c].drop_nulls()[0]).cast(features[c].dtype).alias(c)
        for c in categorical
        if c in features.columns
    ]
    return features.with_columns(shifted + collapsed)


def prometheus_config(tmp: Path, sidecar_port: int, prom_port: int, am_port: int) -> Path:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(REPO / "deploy/prometheus" / f) for f in config["rule_files"]]
    moved = {
        "churn-serving:8000": f"127.0.0.1:{sidecar_port}",
        "localhost:9090": f"127.0.0.1:{prom_port}",
        "alertmanager:9093": f"127.0.0.1:{am_port}",
    }
    for section in config["scrape_configs"] + config["alerting"]["alertmanagers"]:
        static = section["static_configs"][0]
        static["targets"] = [moved[t] for t in static["targets"]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(tmp: Path, webhook_url: str) -> Path:
    config = yaml.safe_load((REPO / "deploy/alertmanager/alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    url_file = tmp / "webhook-url"
    url_file.write_text(webhook_url)  # what compose writes from CHURN_ALERT_WEBHOOK_URL
    for receiver in config["receivers"]:
        for slack in receiver["slack_configs"]:
            slack["api_url_file"] = str(url_file)
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.timeout(240)
def test_a_drifted_batch_fires_the_drift_alert_through_alertmanager(
    deployment: Deployment,  # noqa: F811
    webhook: Webhook,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Session deployment (~30 s, shared with the serving tests when they run in the same
    module set) + processes and the alert path (~20 s)."""
    prometheus = debian_binary("prometheus", "prometheus")
    alertmanager = debian_binary("prometheus-alertmanager", "prometheus-alertmanager")
    d = copy_deployment(deployment, tmp_path / "store")
    storage = d.storage()
    monkeypatch.setenv("CHURN_STORAGE_URL", str(d.root))
    cfg = load_dataset_config("synthetic")
    features = storage.read_parquet("assets/current_features.parquet")
    feats = d.manifest()["features"]

    calm = build_drift_report(storage, cfg, features, ChurnSettings(), "calm-batch")
    assert calm["status"] == "ok" and calm["drifted"] is False, calm.get("drifted_columns")

    prom_port, am_port = free_port(), free_port()
    with sidecar(str(d.root), tmp_path / "logs", poll_seconds=0.5, log_enabled=False) as car:
        sidecar_port = int(car.url.rsplit(":", 1)[1])
        assert wait_until(lambda: drift_gauge(car.url) == 0, timeout=20)
        am = HttpService(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={alertmanager_config(tmp_path, webhook.url)}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # a single instance: no gossip port
            ],
            base_env(),
            tmp_path,
            f"http://127.0.0.1:{am_port}/-/ready",
        )
        prom = HttpService(
            "prometheus",
            [
                prometheus,
                f"--config.file={prometheus_config(tmp_path, sidecar_port, prom_port, am_port)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            base_env(),
            tmp_path,
            f"http://127.0.0.1:{prom_port}/-/ready",
        )
        am.start()
        try:
            prom.start()
            api = f"http://127.0.0.1:{prom_port}/api/v1"

            def scraped(value: str) -> bool:
                result = get_json(f"{api}/query", query="churn_drift_detected")["data"]["result"]
                return bool(result) and result[0]["value"][1] == value

            wait_until(lambda: scraped("0"), timeout=30, interval=0.5)
            rules = get_json(f"{api}/rules", type="alert")["data"]["groups"]
            loaded = {r["name"] for g in rules for r in g["rules"]}
            assert "ChurnDriftDetected" in loaded and "ChurnServingDown" in loaded

            # the drifted batch: the platform's report says drift, the sidecar's gauge follows
            report = build_drift_report(
                storage,
                cfg,
                drifted(features, feats["numeric"], feats["categorical"]),
                ChurnSettings(),
                "drifted-batch",
            )
            assert report["drifted"] is True and report["drifted_columns"]
            assert wait_until(lambda: drift_gauge(car.url) == 1, timeout=20)

            def firing() -> dict | None:
                alerts = get_json(f"{api}/alerts")["data"]["alerts"]
                return next(
                    (
                        a
                        for a in alerts
                        if a["labels"]["alertname"] == "ChurnDriftDetected"
                        and a["state"] == "firing"
                    ),
                    None,
                )

            alert = wait_until(firing, timeout=30, interval=0.5)
            assert alert["labels"]["model_version"] == d.version
            assert alert["labels"]["severity"] == "ticket"

            def delivered() -> dict | None:
                for body in webhook.bodies:
                    for attachment in body.get("attachments", []):
                        if "ChurnDriftDetected" in attachment.get("title", ""):
                            return attachment
                return None

            try:
                message = wait_until(delivered, timeout=30, interval=0.5)
            except TimeoutError:
                raise AssertionError(f"Alertmanager posted nothing:\n{am.tail()}") from None
            assert message["title"] == "[FIRING] ChurnDriftDetected (ticket)"
            assert f"drift against model {d.version}" in message["text"]
            received = get_json(f"http://127.0.0.1:{am_port}/api/v2/alerts")
            assert any(a["labels"]["alertname"] == "ChurnDriftDetected" for a in received)
        finally:
            prom.stop(timeout=15)
            am.stop(timeout=15)


# ------------------------------------------------------- a failed run, from `churn dev`

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { status ticks(limit: 5) { status timestamp } } }
  }
}
"""


def graphql(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        answer = json.loads(r.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


@pytest.mark.timeout(420)
def test_a_failed_run_in_dagster_dev_posts_to_the_webhook(webhook: Webhook, tmp_path: Path):
    """`churn dev` (webserver, daemon, sidecar) with the webhook set and an empty landing zone:
    an ingestion run fails for want of files, and the daemon's run_failure_notifier posts it
    (start-up, the sensor's first tick, the run, the next tick: about a minute on 2 idle
    cores, several when other tests load them; hence the longer timeout)."""
    from dagster_graphql import DagsterGraphQLClient

    port, ui = free_port(), "http://dagster.test:3000"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "CHURN_STORAGE_URL": str(tmp_path / "storage"),
        "CHURN_RETRAINING_CRON": "0 0 1 1 *",  # no scheduled run during the test
        "CHURN_SERVING_PORT": str(free_port()),
        "CHURN_ALERT_WEBHOOK_URL": webhook.url,
        "CHURN_UI_URL": ui,
        "GX_ANALYTICS_ENABLED": "false",
    }
    dev = HttpService(
        "churn-dev",
        [str(REPO / ".venv/bin/churn"), "dev", "--port", str(port), "--no-seed"],
        env,
        tmp_path,
        f"http://127.0.0.1:{port}/server_info",
    )
    dev.spawn()
    try:
        try:
            dev.wait_healthy(timeout=240)  # ~15 s on an idle machine, minutes under load
        except (RuntimeError, TimeoutError) as e:
            exits = [ln for ln in dev.tail(10**6).splitlines() if "exited with" in ln]
            raise AssertionError(f"churn dev did not come up: {exits or e}") from e
        selector = {
            "repositoryLocationName": "churn_assets",
            "repositoryName": "__repository__",
            "sensorName": "run_failure_notifier",
        }

        def ticked() -> bool:
            try:
                data = graphql(port, SENSOR_TICKS, {"selector": selector})
            except (OSError, AssertionError):
                return False
            state = data["sensorOrError"].get("sensorState") or {}
            return state.get("status") == "RUNNING" and bool(state.get("ticks"))

        # a run status sensor starts with the runs that end after its first tick
        wait_until(ticked, timeout=120, interval=1)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution(
            "ingest_and_features",
            repository_location_name=selector["repositoryLocationName"],
            repository_name="__repository__",
        )

        def posted() -> dict | None:
            return next((b for b in webhook.bodies if run_id in b.get("text", "")), None)

        try:
            body = wait_until(posted, timeout=150, interval=1)
        except TimeoutError:
            raise AssertionError(f"nothing posted for run {run_id}\n{dev.tail()}") from None
        text = body["text"]
        assert text.startswith(":rotating_light: Dagster run failed: ingest_and_features")
        assert f"Run: {run_id} (ingest_and_features)" in text
        assert "Step: raw_customers" in text and "Asset: raw_customers" in text
        assert "Reason: raw_customers: " in text
        assert f"Open in Dagster: {ui}/runs/{run_id}" in text
        # the JSON failure record is still written next to the notification
        record = tmp_path / "storage/synthetic/monitoring/failures" / f"{run_id}.json"
        assert wait_until(record.exists, timeout=30, interval=0.5)
    finally:
        dev.stop(timeout=60)
