"""The sidecar's drift and version-staleness gauges, read from what the platform writes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from churn_assets.lib.monitoring import LATEST_SUMMARY
from churn_assets.lib.storage import Storage
from churn_serving.drift_status import SUMMARY, DriftStatus
from churn_serving.metrics import ServingMetrics
from churn_serving.version_status import VersionStatus, version_timestamp


def samples(metrics: ServingMetrics) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) → value of everything /metrics would show."""
    text = metrics.render()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def summary(drifted: bool, created: str, share: float = 0.4) -> dict:
    return {
        "drifted": drifted,
        "share_drifted": share,
        "drifted_columns": ["tenure", "churn_probability"] if drifted else [],
        "prediction_drift": drifted,
        "model_version": "v20260101-120000",
        "created_at": created,
    }


def test_the_platform_and_the_sidecar_agree_on_the_summary_path():
    assert SUMMARY == LATEST_SUMMARY


def test_drift_gauges_follow_the_latest_summary(tmp_path: Path):
    storage = Storage(str(tmp_path / "ds"))
    metrics = ServingMetrics()
    status = DriftStatus(storage, metrics.registry)

    assert status.refresh() is None
    before = samples(metrics)
    assert not any(name.startswith("churn_drift_detected") for name, _ in before)
    assert before[("churn_drift_summary_read_failures_total", ())] == 0

    storage.write_json(SUMMARY, summary(False, "2026-11-29T10:00:00+00:00", share=0.0))
    status.refresh()
    calm = samples(metrics)
    label = (("model_version", "v20260101-120000"),)
    assert calm[("churn_drift_detected", label)] == 0
    assert calm[("churn_drift_share_drifted", ())] == 0

    storage.write_json(SUMMARY, summary(True, "2026-11-29T11:00:00+00:00"))
    status.refresh()
    drifted = samples(metrics)
    assert drifted[("churn_drift_detected", label)] == 1
    assert drifted[("churn_drift_share_drifted", ())] == 0.4
    assert drifted[("churn_drift_drifted_columns", ())] == 2
    assert drifted[("churn_drift_prediction_drift", ())] == 1
    made = dt.datetime(2026, 11, 29, 11, tzinfo=dt.UTC).timestamp()
    assert drifted[("churn_drift_report_timestamp_seconds", ())] == made


def test_a_torn_summary_keeps_the_last_good_one_and_is_counted(tmp_path: Path):
    storage = Storage(str(tmp_path / "ds"))
    metrics = ServingMetrics()
    status = DriftStatus(storage, metrics.registry)
    storage.write_json(SUMMARY, summary(True, "2026-11-29T11:00:00+00:00"))
    status.refresh()
    storage.write_bytes(SUMMARY, b'{"drifted": tr')
    assert status.refresh()["drifted"] is True
    after = samples(metrics)
    assert after[("churn_drift_summary_read_failures_total", ())] == 1
    assert after[("churn_drift_detected", (("model_version", "v20260101-120000"),))] == 1


def test_version_gauges_show_age_and_lag_behind_the_pointer():
    metrics = ServingMetrics()
    status = VersionStatus(metrics.registry)
    assert not any(n.startswith("churn_serving_model_behind") for n, _ in samples(metrics))

    status.update("v20260102-030405", "v20260102-030405")
    now = samples(metrics)
    made = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert now[("churn_serving_model_version_timestamp_seconds", ())] == made
    assert now[("churn_serving_model_behind_pointer", ())] == 0

    status.update("v20260102-030405", "v20260103-000000")  # the new version was refused
    assert samples(metrics)[("churn_serving_model_behind_pointer", ())] == 1
    status.update("v20260102-030405", None)  # storage unreachable: the last lag is kept
    assert samples(metrics)[("churn_serving_model_behind_pointer", ())] == 1
    assert version_timestamp("latest") is None
