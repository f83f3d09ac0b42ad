"""Served-traffic drift end to end: a real sidecar answers and logs requests, the
``served_drift_report`` asset reads its inference log, and the sidecar exports the verdict."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import httpx
import polars as pl

from tests.serving.conftest import Deployment, sidecar, wait_until


def gauges(client: httpx.Client) -> dict[str, float]:
    """The ``churn_served_drift_*`` samples of /metrics (labels dropped)."""
    text = client.get("/metrics").text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(churn_served_drift_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M)
    }


def served_report(root: Path) -> tuple[dict, bool]:
    from churn_assets.monitoring.served import served_drift_report
    from churn_assets.resources import ChurnPlatform

    result = dg.materialize(
        [served_drift_report],
        resources={"platform": ChurnPlatform(storage_url=str(root), dataset="synthetic")},
    )
    meta = result.asset_materializations_for_node("served_drift_report")[0].metadata
    (check,) = result.get_asset_check_evaluations()
    return {k: getattr(v, "value", v) for k, v in meta.items()}, check.passed


def logged_records(d: Deployment) -> int:
    files = list((d.dataset_dir / "inference_log").rglob("*.parquet"))
    return sum(pl.read_parquet(f).height for f in files)


def test_shifted_client_traffic_raises_the_served_drift_gauge(
    private_deployment: Deployment, tmp_path: Path
):
    d = private_deployment
    features = pl.read_parquet(d.dataset_dir / "assets" / "current_features.parquet")
    manifest = d.manifest()
    columns = [*manifest["features"]["numeric"], *manifest["features"]["categorical"]]
    with (
        sidecar(str(d.root), tmp_path / "logs", poll_seconds=0.5, log_flush_seconds=0.5) as car,
        car.client() as client,
    ):
        ids = features["customer_id"].to_list()
        for start in range(0, min(len(ids), 1000), 100):
            batch = [{"customer_id": c} for c in ids[start : start + 100]]
            assert client.post("/predict", json={"records": batch}).status_code == 200
        n = min(len(ids), 1000)
        wait_until(lambda: logged_records(d) >= n, timeout=30)
        meta, passed = served_report(d.root)
        assert meta["status"] == "ok" and meta["verdict"] == "no drift" and passed
        assert meta["served_records"] == n
        seen = wait_until(lambda: gauges(client).get("churn_served_drift_records") == n or None)
        assert seen and gauges(client)["churn_served_drift_detected"] == 0.0

        # one client sends its own feature records: every amount, count and age in days
        # 3 times larger, within what the sidecar accepts (shares, rates, trends unchanged)
        fields = client.get("/predict/schema").json()["fields"]
        shifted = features.select(columns).head(2000)
        bounded = ("share", "rate", "trend", "has_")
        shifted = shifted.with_columns(
            (pl.col(c) * 3).clip(upper_bound=fields[c]["accepted_max"])
            for c, t in shifted.schema.items()
            if t == pl.Float64 and not any(b in c for b in bounded)
        )
        records = [{"features": r} for r in shifted.to_dicts()]
        for start in range(0, len(records), 200):
            answer = client.post("/predict", json={"records": records[start : start + 200]})
            assert answer.status_code == 200, answer.text[:500]
        total = n + len(records)
        wait_until(lambda: logged_records(d) >= total, timeout=30)
        meta, passed = served_report(d.root)
        assert meta["verdict"] == "DRIFT" and not passed
        assert "recency_days" in meta["drifted_columns"] and meta["share_drifted"] > 0.3
        wait_until(lambda: gauges(client).get("churn_served_drift_detected") == 1.0 or None)
        assert gauges(client)["churn_served_drift_records"] == total
