"""`churn demo --json`, the README's first command without the UI, as a user runs it: shipped
defaults (the synthetic data set seeded at its default 10,000 customers, the default
candidate lists, gate and floors), a local storage root and a SQLite MLflow store."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import BIN, REPO

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_demo_json_runs_the_whole_graph_with_the_defaults(tmp_path: Path):
    """Timeout 900 s: the whole default graph on a busy 2-core machine. The model sets train
    side by side (regression in a second process): both must come back, and no process of
    the demo may outlive it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHURN_")},
        "CHURN_STORAGE_URL": str(tmp_path / "storage"),
        "CHURN_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
    }
    out_path, err_path = tmp_path / "demo.json", tmp_path / "demo.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "churn"), "demo", "--json"], cwd=REPO, env=env, stdout=out, stderr=err
        )
        children: set[tuple[int, float]] = set()  # (pid, start time): pids get reused
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:  # note the demo's child processes while it runs
            with contextlib.suppress(psutil.Error):
                children |= {(c.pid, c.create_time()) for c in parent.children(recursive=True)}
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
    assert proc.returncode == 0, err_path.read_text()[-3000:]
    report = json.loads(out_path.read_text(), parse_constant=_not_json)  # strict JSON
    assert report["success"] is True and report.get("error") is None, report.get("error")
    assert report["dataset"] == "synthetic"
    for kind in ("classification", "regression"):
        assert report["models"][kind]["champion"], report["models"][kind]
    assert report["models"]["classification"]["champion_metrics"]["roc_auc"] > 0.9
    assert report["deployment"]["promoted"] is True  # nothing was deployed before
    for kind, role in (("classification", "churn-classifier"), ("regression", "clv-regressor")):
        assert report["models"][kind]["registered_model"] == f"synthetic-{role}"
        assert report["models"][kind]["registered_version"] == "1"
    storage = tmp_path / "storage"
    assert report["serve"] == f"CHURN_DATASET=synthetic CHURN_STORAGE_URL={storage} churn serve"
    assert {"raw_transactions", "regression_models", "churn_scores", "drift_report"} <= set(
        report["assets"]
    )
    log = err_path.read_text()
    assert " - DEBUG - " not in log and " - INFO - " in log  # the runs' console log at INFO
    assert "Detected uv project" not in log
    assert children, "the regression set trains in a second process"
    # multiprocessing's resource tracker exits once it sees the demo gone: a moment's grace
    deadline = time.monotonic() + 10
    while any(_alive(*c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [_describe(pid) for pid, t in children if _alive(pid, t)]
    assert left == [], f"processes left behind: {left}"


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} in the JSON: not valid JSON for most parsers")


def _alive(pid: int, started: float) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs."""
    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(pid: int) -> str:
    try:
        return f"{pid}: {' '.join(psutil.Process(pid).cmdline())}"
    except psutil.Error:
        return str(pid)
