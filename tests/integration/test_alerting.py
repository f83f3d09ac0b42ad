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
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.monitoring import build_drift_report
from churn_assets.lib.settings import ChurnSettings
from churn_assets.lib.storage import Storage
from tests.conftest import REPO, free_port
from tests.integration.conftest import DEV_UI_URL, Deployed, Webhook
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


@pytest.mark.timeout(2400)
def test_a_failed_run_in_dagster_dev_posts_to_the_webhook(deployed_dev: Deployed):
    """The shared `churn dev` (webserver, daemon, sidecar; its notifications go to the
    session's webhook, see ``tests/integration/conftest.py``): a rollback to a version that
    does not exist fails, and the daemon's run_failure_notifier posts the run, the step, the
    root cause and a link; the JSON failure record is written too, and the deployed version
    does not move. Timeout 2400 s: the first test to use the shared platform may wait for its
    first deployment."""
    dev = deployed_dev.dev
    assert dev.webhook is not None
    store = Storage(str(dev.storage / "synthetic"))
    before = dep.read_current(store)
    assert before is not None, dev.tail()
    selector = {"repositoryLocationName": "churn_assets", "repositoryName": "__repository__"}

    def ticked(sensor: str) -> bool:
        try:
            data = graphql(dev.port, SENSOR_TICKS, {"selector": {**selector, "sensorName": sensor}})
        except (OSError, AssertionError):
            return False
        state = data["sensorOrError"].get("sensorState") or {}
        return state.get("status") == "RUNNING" and bool(state.get("ticks"))

    # a run status sensor starts with the runs that end after its first tick: both the
    # notifier and the recorder must have ticked before the run fails
    for sensor in ("run_failure_notifier", "run_failure_recorder"):
        wait_until(lambda s=sensor: ticked(s), timeout=120, interval=1)
    unknown = "v19990101-000000"
    run_id = dev.client().submit_job_execution(
        "rollback_deployment_job",
        repository_location_name=selector["repositoryLocationName"],
        repository_name="__repository__",
        run_config={"ops": {"rollback_op": {"config": {"to": unknown}}}},
    )
    assert dev.wait(lambda: dev.finished(run_id), 180, "the rollback run") == "FAILURE"

    def posted() -> dict | None:
        return next((b for b in dev.webhook.bodies if run_id in b.get("text", "")), None)

    try:
        body = wait_until(posted, timeout=150, interval=1)
    except TimeoutError:
        raise AssertionError(f"nothing posted for run {run_id}\n{dev.tail()}") from None
    text = body["text"]
    assert text.startswith(":rotating_light: Dagster run failed: rollback_deployment_job"), text
    assert f"Run: {run_id} (rollback_deployment_job)" in text
    assert "Step: rollback_op" in text and "Asset:" not in text  # an op, not an asset
    assert f"Reason: rollback_op: DeploymentError: unknown version {unknown};" in text, text
    assert f"Open in Dagster: {DEV_UI_URL}/runs/{run_id}" in text
    # the JSON failure record is written too, by its own sensor (default 30 s interval, so
    # up to a tick after the notification on a busy machine)
    record = dev.storage / "synthetic/monitoring/failures" / f"{run_id}.json"
    assert wait_until(record.exists, timeout=120, interval=0.5)
    # nothing moved
    assert dep.read_current(store) == before
