"""``churn dev``'s supervision: runs left in progress by killed processes are marked failed
when it starts, and a process that exits on its own is started again."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest


def test_runs_left_in_progress_are_failed_and_free_their_pool(tmp_path, monkeypatch):
    """A retraining run that was STARTED when the platform died holds the pool's one slot:
    it is marked failed (one being canceled: canceled), with why, and the slot is freed;
    finished and not started runs are left alone."""
    from dagster._core.storage.dagster_run import DagsterRun

    from churn_assets.devserver import fail_interrupted_runs

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("")
    statuses = {
        "started": dg.DagsterRunStatus.STARTED,
        "canceling": dg.DagsterRunStatus.CANCELING,
        "not_started": dg.DagsterRunStatus.NOT_STARTED,
        "done": dg.DagsterRunStatus.SUCCESS,
    }
    with dg.DagsterInstance.get() as instance:
        ids = {}
        for name, status in statuses.items():
            run = instance.add_run(DagsterRun(job_name="retraining", status=status))
            ids[name] = run.run_id
        instance.event_log_storage.set_concurrency_slots("retraining", 1)
        claim = instance.event_log_storage.claim_concurrency_slot(
            "retraining", ids["started"], "deployed_model_version"
        )
        assert claim.is_claimed
    assert sorted(fail_interrupted_runs()) == sorted([ids["started"], ids["canceling"]])
    with dg.DagsterInstance.get() as instance:
        got = {name: instance.get_run_by_id(i).status for name, i in ids.items()}
        assert got == {
            "started": dg.DagsterRunStatus.FAILURE,
            "canceling": dg.DagsterRunStatus.CANCELED,
            "not_started": dg.DagsterRunStatus.NOT_STARTED,
            "done": dg.DagsterRunStatus.SUCCESS,
        }
        info = instance.event_log_storage.get_concurrency_info("retraining")
        assert info.active_slot_count == 0
        failure = instance.all_logs(ids["started"], of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "the platform stopped while this run was in progress" in failure[0].message
    assert fail_interrupted_runs() == []  # nothing left to do


def test_a_process_that_exits_is_started_again_then_a_crash_loop_stops_all(
    tmp_path, monkeypatch, capsys
):
    """The sidecar killed under ``churn dev`` comes back; one that keeps exiting stops
    everything after MAX_RESTARTS, with the reason."""
    import churn_assets.devserver as devserver

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    starts = tmp_path / "starts"
    script = f"open({str(starts)!r}, 'a').write('x'); import time; time.sleep(0.3)"
    monkeypatch.setattr(
        devserver,
        "processes",
        lambda port, workspace: {"sidecar": [sys.executable, "-c", script]},
    )
    monkeypatch.setattr(devserver, "prepare_workspace", lambda root, home: (Path("w.yaml"), []))
    monkeypatch.setattr(devserver, "set_pool_limits", lambda limits: None)
    monkeypatch.setattr(devserver, "fail_interrupted_runs", list)
    code = devserver.run_dev(root=tmp_path)
    out = capsys.readouterr().out
    assert code == 1
    assert starts.read_text() == "x" * (devserver.MAX_RESTARTS + 1)
    assert out.count("sidecar exited with 0; starting it again") == devserver.MAX_RESTARTS
    assert "exited with 0 4 times in 10 minutes; stopping the rest" in out


def test_ctrl_c_stops_a_supervised_process_group(tmp_path, monkeypatch):
    """SIGINT to ``churn dev`` stops its children's whole process groups."""
    import churn_assets.devserver as devserver

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    pidfile = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    monkeypatch.setattr(
        devserver, "processes", lambda port, workspace: {"dagster": [sys.executable, "-c", script]}
    )
    monkeypatch.setattr(devserver, "prepare_workspace", lambda root, home: (Path("w.yaml"), []))
    monkeypatch.setattr(devserver, "set_pool_limits", lambda limits: None)
    monkeypatch.setattr(devserver, "fail_interrupted_runs", list)
    import os
    import signal

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    handler = signal.getsignal(signal.SIGINT)
    assert devserver.run_dev(root=tmp_path) == 0
    grandchild = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(grandchild, 0)
            time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is back
