"""``churn dev``'s supervision: runs left in progress by killed processes are marked failed
when it starts, and a process that exits on its own is started again."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import free_port


def test_runs_left_in_progress_are_failed_and_free_their_pool(tmp_path, monkeypatch):
    """A retraining run that was STARTED when the platform died holds the pool's one slot:
    it is marked failed (one being canceled: canceled), with why, and the slot is freed;
    finished and not started runs are left alone."""
    from dagster._core.storage.dagster_run import DagsterRun

    from churn_assets.interrupted_runs import fail_interrupted_runs

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


def test_a_code_server_starting_fails_its_own_locations_runs_then_becomes_the_server(tmp_path):
    """Compose's code-location command: ``churn fail-interrupted-runs --location L --
    COMMAND`` fails the runs of location L left in progress (not another location's), then
    execs COMMAND; an instance it cannot open is reported and COMMAND still starts."""
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRun

    from tests.conftest import BIN

    def origin(location: str) -> RemoteJobOrigin:
        where = GrpcServerCodeLocationOrigin(host="code", port=4000, location_name=location)
        return RemoteJobOrigin(RemoteRepositoryOrigin(where, "__repository__"), "retraining")

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    started = dg.DagsterRunStatus.STARTED
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ids = {
            name: instance.add_run(
                DagsterRun(job_name="retraining", status=started, remote_job_origin=where)
            ).run_id
            for name, where in (("mine", origin("churn_assets")), ("telco", origin("telco")))
        }
    argv = [str(BIN / "churn"), "fail-interrupted-runs", "--location", "churn_assets", "--"]
    server = [sys.executable, "-c", "print('code server up')"]
    out = subprocess.run(argv + server, env=env, capture_output=True, text=True, timeout=120)

    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"1 run(s) left in progress when the platform last stopped, marked failed: {ids['mine']}",
        "code server up",
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(ids["mine"]).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(ids["telco"]).status == started
        failure = instance.all_logs(ids["mine"], of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "marked failed when the code server of 'churn_assets' started again" in (
            failure[0].message
        )

    (home / "dagster.yaml").write_text("run_storage:\n  module: no_such_module\n  class: X\n")
    out = subprocess.run(argv + server, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "code server up"
    assert "runs left in progress not checked (" in out.stderr
    assert "starting anyway" in out.stderr


def test_a_second_churn_dev_on_the_same_instance_refuses_to_start(tmp_path, monkeypatch, capsys):
    """Another `churn dev` holds the instance's lock: this one starts nothing and leaves
    that platform's runs in progress alone; once the lock is released it may start."""
    from dagster._core.storage.dagster_run import DagsterRun

    from churn_assets import devserver

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (tmp_path / "dagster.yaml").write_text("")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        live = instance.add_run(
            DagsterRun(job_name="retraining", status=dg.DagsterRunStatus.STARTED)
        ).run_id
    started = []
    monkeypatch.setattr(devserver, "processes", lambda *a: started.append(a) or {})
    other = devserver.instance_lock(home)  # the running platform
    assert other is not None

    assert devserver.run_dev(port=free_port(), root=tmp_path) == 1

    assert "another `churn dev` is running on the Dagster instance" in capsys.readouterr().out
    assert started == []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    other.close()
    again = devserver.instance_lock(home)
    assert again is not None
    again.close()


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
