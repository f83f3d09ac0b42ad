"""The Prometheus alert rules and the Alertmanager config: valid, unit-tested, and about
metrics the sidecar really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
#: every concern the rules must cover → the alert that covers it
REQUIRED = {
    "error rate": "ChurnServingHighErrorRate",
    "p99 latency": "ChurnServingHighLatencyP99",
    "no model loaded": "ChurnServingNoModelLoaded",
    "version stale": "ChurnServingModelVersionStale",
    "version behind the pointer": "ChurnServingModelBehindDeployment",
    "fallback rate": "ChurnServingHighFallbackRate",
    "reload failures": "ChurnServingReloadFailures",
    "drift": "ChurnDriftDetected",
    "drift of the served traffic": "ChurnServedTrafficDrift",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs its Debian package when root)")
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_promtool_checks_the_rules():
    done = run(tool("promtool"), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass():
    done = run(tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path):
    """A drift rule that no longer fires (and a softer error threshold) fail the unit tests."""
    text = RULES.read_text()
    broken = text.replace("churn_drift_detected == 1", "churn_drift_detected == 2").replace(
        "> 0.05", "> 0.5"
    )
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = run(tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "alertname: ChurnDriftDetected" in done.stdout + done.stderr
    assert "alertname: ChurnServingHighErrorRate" in done.stdout + done.stderr


def test_every_concern_has_an_alert_and_every_alert_a_firing_unit_test():
    defined = rules()
    assert set(REQUIRED.values()) <= set(defined)
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(defined) <= fired, f"no firing test for {sorted(set(defined) - fired)}"
    for name, rule in defined.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every sample name the sidecar's /metrics can show, with drift and version gauges set."""
    from churn_assets.lib.storage import Storage
    from churn_serving.drift_status import SERVED_PREFIX, SERVED_SUMMARY, SUMMARY, DriftStatus
    from churn_serving.metrics import ServingMetrics
    from churn_serving.version_status import VersionStatus

    metrics = ServingMetrics()
    storage = Storage(str(tmp_path))
    for path in (SUMMARY, SERVED_SUMMARY):
        storage.write_json(
            path,
            {
                "drifted": True,
                "share_drifted": 0.5,
                "drifted_columns": ["a"],
                "model_version": "v20260101-000000",
                "created_at": "2026-01-01T00:00:00+00:00",
            },
        )
    DriftStatus(storage, metrics.registry).refresh()
    DriftStatus(storage, metrics.registry, summary=SERVED_SUMMARY, prefix=SERVED_PREFIX).refresh()
    VersionStatus(metrics.registry).update("v20260101-000000", "v20260101-000000")
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
    return names


def test_rules_name_metrics_the_sidecar_exports(tmp_path: Path):
    used = {
        m for rule in rules().values() for m in re.findall(r"\b(churn_[a-z0-9_]+)", rule["expr"])
    }
    missing = used - exported_metric_names(tmp_path)
    assert not missing, f"the rules use metrics nobody exports: {sorted(missing)}"


def test_prometheus_loads_the_rules_and_sends_to_the_alertmanager_service():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    host, port = target.split(":")
    assert host in compose and f"127.0.0.1:{port}:{port}" in compose[host]["ports"]
    mounts = compose["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert (
        "./deploy/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
        in compose[host]["volumes"]
    )
    done = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0 and "1 rule files found" in done.stdout, done.stdout


def test_alertmanager_config_is_valid_and_posts_to_the_webhook_file():
    done = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(ALERTMANAGER.read_text())
    (receiver,) = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    slack = receiver["slack_configs"][0]
    command = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["alertmanager"][
        "command"
    ][0]
    # compose writes CHURN_ALERT_WEBHOOK_URL to the file the config reads
    assert f'"$$CHURN_ALERT_WEBHOOK_URL" > {slack["api_url_file"]}' in command
    assert slack["send_resolved"] is True
