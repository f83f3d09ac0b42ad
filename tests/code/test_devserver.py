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


def test_interrupted_landing_and_retraining_runs_are_retried_by_the_daemon(tmp_path, monkeypatch):
    """With the shipped dagster.yaml, a landing or retraining run that ``churn dev`` marks
    failed (interrupted) is one the daemon's run retries launch again (a landing file was
    never ingested after a killed platform); one failed by its own step, or a run of a job
    that does not ask for retries, is not."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG
    from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

    from churn_assets.interrupted_runs import fail_interrupted_runs
    from churn_assets.jobs import monitoring_job, retraining_job, rollback_deployment_job

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text((repo / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 0

        def add(job, status=dg.DagsterRunStatus.STARTED, tags=None) -> str:
            run = DagsterRun(
                job_name=job.name, status=status, tags={**(job.tags or {}), **(tags or {})}
            )
            return instance.add_run(run).run_id

        landing, retraining, rollback = (
            add(monitoring_job),
            add(retraining_job),
            add(rollback_deployment_job),
        )
        step = add(
            monitoring_job, dg.DagsterRunStatus.FAILURE, {RUN_FAILURE_REASON_TAG: "STEP_FAILURE"}
        )
    assert set(fail_interrupted_runs()) == {landing, retraining, rollback}
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        verdicts = {
            name: should_retry(instance.get_run_by_id(run_id), instance)
            for name, run_id in (
                ("landing", landing),
                ("retraining", retraining),
                ("rollback", rollback),
                ("step", step),
            )
        }
    assert verdicts == {"landing": True, "retraining": True, "rollback": False, "step": False}


def test_a_run_dequeued_while_its_code_server_restarts_waits_for_it(tmp_path, monkeypatch):
    """A code server restarting takes 12-17 s to answer: the daemon's retry of a run the
    restart interrupted was dequeued meanwhile, failed at once ("Could not reach user code
    server") and was never run again. Both shipped instances put such a run back into the
    queue for 2.5 minutes (5 tries, 30 s apart)."""
    import yaml

    from tests.conftest import REPO

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_user_code_failure_retries * queue.user_code_failure_retry_delay >= 120
    assert queue.max_concurrent_runs == 4  # the concurrency section still applies
    production = yaml.safe_load((REPO / "deploy" / "dagster.production.yaml").read_text())
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert production["run_coordinator"] == local["run_coordinator"]


def test_churn_dev_says_what_a_dot_env_file_changes(tmp_path, monkeypatch):
    """Dagster's commands load ``.env`` from their directory over the environment: with
    compose's ``.env`` in the checkout, ``CHURN_RETRAINING_CRON='*/2 * * * *' churn dev``
    kept the hourly cron in Dagster (and the sidecar another data set), unsaid. `churn dev`
    now names each platform variable the file changes."""
    import logging

    from dagster._cli.utils import _inject_local_env_file

    from churn_assets.devserver import env_file_note

    assert env_file_note(tmp_path) is None  # no .env
    (tmp_path / ".env").write_text(
        'CHURN_RETRAINING_CRON="0 * * * *"\nCHURN_DATASET=synthetic\nGRAFANA_ADMIN_USER=admin\n'
    )
    env = {"CHURN_RETRAINING_CRON": "*/2 * * * *", "CHURN_DATASET": "synthetic"}
    note = env_file_note(tmp_path, env)
    assert note is not None and str(tmp_path / ".env") in note
    assert "CHURN_RETRAINING_CRON='0 * * * *' (environment: '*/2 * * * *')" in note
    assert "CHURN_DATASET" not in note and "GRAFANA" not in note  # same value; not ours
    assert env_file_note(tmp_path, {**env, "CHURN_RETRAINING_CRON": "0 * * * *"}) is None

    # what the note says is what Dagster does: the file's value wins in its processes
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHURN_RETRAINING_CRON", "*/2 * * * *")
    with _inject_local_env_file(logging.getLogger("test")):
        assert os.environ["CHURN_RETRAINING_CRON"] == "0 * * * *"


def test_an_unreachable_postgres_is_named_as_the_code_server_starts(tmp_path):
    """The production instance (PostgreSQL) unreachable as compose's code-location starts:
    it said "runs left in progress not checked (DagsterPostgresException: too many retries
    for DB connection)", naming neither the server nor what it answered. It now gives
    PostgreSQL's own error (here: the port that refused the connection)."""
    from tests.conftest import BIN, REPO

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.production.yaml").read_text())
    port = str(free_port())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_USER": "churn",
        "DAGSTER_POSTGRES_PASSWORD": "secret",
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_DB": "dagster",
        "DAGSTER_POSTGRES_PORT": port,
    }
    argv = [str(BIN / "churn"), "fail-interrupted-runs", "--location", "churn_assets", "--"]
    server = [sys.executable, "-c", "print('code server up')"]
    out = subprocess.run(argv + server, env=env, capture_output=True, text=True, timeout=120)

    assert out.returncode == 0 and out.stdout.strip() == "code server up"
    said = next(line for line in out.stderr.splitlines() if "not checked" in line)
    assert f'"127.0.0.1", port {port} failed' in said and "Connection refused" in said
    assert said.endswith("; starting anyway")


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


def _supervise(monkeypatch, tmp_path, commands: dict[str, list[str]]) -> None:
    """``run_dev`` on ``commands`` instead of the platform's, on free ports."""
    import churn_assets.devserver as devserver

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHURN_SERVING_PORT", str(free_port()))
    monkeypatch.setattr(devserver, "processes", lambda port, workspace: commands)
    monkeypatch.setattr(devserver, "prepare_workspace", lambda root, home: (Path("w.yaml"), []))
    monkeypatch.setattr(devserver, "set_pool_limits", lambda limits: None)
    monkeypatch.setattr(devserver, "fail_interrupted_runs", list)


@pytest.mark.parametrize("preset", ["", "https://dagster.example.com"])
def test_alert_links_point_at_the_ui_port_unless_set(tmp_path, monkeypatch, preset):
    """``churn dev --port P`` hands its processes CHURN_UI_URL=http://localhost:P, so the
    failure alerts' links open this UI (they named :3000 whatever the port); a URL the
    environment sets is kept."""
    import churn_assets.devserver as devserver

    seen = tmp_path / "ui-url"
    script = f"import os; open({str(seen)!r}, 'w').write(os.environ.get('CHURN_UI_URL', ''))"
    _supervise(monkeypatch, tmp_path, {"dagster": [sys.executable, "-c", script]})
    monkeypatch.setattr(devserver, "MAX_RESTARTS", 0)
    monkeypatch.setenv("CHURN_UI_URL", preset)
    port = free_port()
    devserver.run_dev(port=port, root=tmp_path)
    assert seen.read_text() == (preset or f"http://localhost:{port}")
    assert os.environ["CHURN_UI_URL"] == preset  # this process's environment is left alone


def test_dagster_exiting_is_started_again_then_a_crash_loop_stops_all(
    tmp_path, monkeypatch, capsys
):
    """``dagster dev`` exiting comes back; one that keeps exiting stops everything after
    MAX_RESTARTS, with the reason."""
    import churn_assets.devserver as devserver

    starts = tmp_path / "starts"
    script = f"open({str(starts)!r}, 'a').write('x'); import time; time.sleep(0.3)"
    _supervise(monkeypatch, tmp_path, {"dagster": [sys.executable, "-c", script]})
    code = devserver.run_dev(port=free_port(), root=tmp_path)
    out = capsys.readouterr().out
    assert code == 1
    assert starts.read_text() == "x" * (devserver.MAX_RESTARTS + 1)
    assert out.count("dagster exited with 0; starting it again") == devserver.MAX_RESTARTS
    assert "exited with 0 4 times in 10 minutes; stopping the rest" in out


def test_a_sidecar_that_keeps_exiting_backs_off_and_never_stops_dagster(
    tmp_path, monkeypatch, capsys
):
    """A sidecar in a crash loop (its port taken after the start, a bad setting) is
    started again after pauses of 1, 2, 4 … s (up to 5 minutes) while Dagster and its
    runs go on; it did take the whole platform down after three exits."""
    import signal

    import churn_assets.devserver as devserver

    assert [devserver.sidecar_pause(k) for k in range(10)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300
    ]  # fmt: skip
    starts = tmp_path / "starts"
    sidecar = f"open({str(starts)!r}, 'a').write('x')"
    alive = tmp_path / "dagster-alive"
    dagster = f"import time; open({str(alive)!r}, 'w').write('up'); time.sleep(60)"
    _supervise(
        monkeypatch,
        tmp_path,
        {"dagster": [sys.executable, "-c", dagster], "sidecar": [sys.executable, "-c", sidecar]},
    )
    monkeypatch.setattr(devserver, "sidecar_pause", lambda k: 0.2 * (k + 1))

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if starts.exists() and len(starts.read_text()) >= devserver.MAX_RESTARTS + 3:
                break
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    assert devserver.run_dev(port=free_port(), root=tmp_path) == 0
    out = capsys.readouterr().out
    assert len(starts.read_text()) >= devserver.MAX_RESTARTS + 3
    assert "sidecar exited with 0 (4 time(s) in 10 minutes); starting it again in 1 s" in out
    assert "(Dagster and its runs go on)" in out
    assert "stopping the rest" not in out and alive.exists()


def test_nothing_starts_when_a_port_is_taken(tmp_path, monkeypatch, capsys):
    """Port 3000 or 8000 held by another program: ``churn dev`` starts nothing (no landing
    run begun and then interrupted, no UI-less platform) and names the setting to move."""
    import socket

    import churn_assets.devserver as devserver

    started: list = []
    _supervise(monkeypatch, tmp_path, {})
    monkeypatch.setattr(devserver, "processes", lambda *a: started.append(a) or {})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert devserver.run_dev(port=taken, root=tmp_path) == 1
        out = capsys.readouterr().out
        assert f"nothing started: port {taken} on 127.0.0.1 (the Dagster UI) is taken" in out
        assert "`churn dev --port <other>`" in out
        monkeypatch.setenv("CHURN_SERVING_PORT", str(taken))
        assert devserver.run_dev(port=free_port(), root=tmp_path) == 1
        out = capsys.readouterr().out
        assert f"port {taken} on 127.0.0.1 (the prediction sidecar) is taken" in out
        assert "CHURN_SERVING_PORT=<other>" in out
    assert started == []


def test_nothing_starts_on_a_setting_that_cannot_be_used(tmp_path, monkeypatch, capsys):
    """A cron that never fires, a blank interval, a served-drift window of ``abc``, a
    webhook without a scheme: ``churn dev`` starts nothing and names each variable with its
    value. They failed the code location's load (croniter's message), every landing tick,
    the end of a run after the deployment, or the first alert."""
    import churn_assets.devserver as devserver

    started: list = []
    _supervise(monkeypatch, tmp_path, {})
    monkeypatch.setattr(devserver, "processes", lambda *a: started.append(a) or {})
    wrong = {
        "CHURN_RETRAINING_CRON": "0 0 31 2 *",
        "CHURN_LANDING_SENSOR_SECONDS": "abc",
        "CHURN_LANDING_SETTLE_SECONDS": "nan",
        "CHURN_SERVED_DRIFT_WINDOW_DAYS": "abc",
        "CHURN_ALERT_WEBHOOK_URL": "hooks.example.com/x",
        "CHURN_RETENTION_VERSIONS": "0",
        "CHURN_SERVING_LOG_MAX_BUFFER_RECORDS": "100",
    }
    for name, value in wrong.items():
        monkeypatch.setenv(name, value)
    assert devserver.run_dev(port=free_port(), root=tmp_path) == 1
    out = capsys.readouterr().out
    assert out.startswith("nothing started: ")
    for name, value in wrong.items():
        assert f"{name}={value!r}" in out or f"{name}={value} " in out, name
    assert started == []
    for name in wrong:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHURN_LANDING_SENSOR_SECONDS", " ")  # blank: the default
    from churn_assets.preflight import settings_problems

    assert settings_problems() == []


def test_a_killed_churn_dev_takes_its_platform_down_and_holds_the_lock_till_then(tmp_path):
    """``churn dev`` SIGKILLed: its children (in sessions of their own, so a kill of its
    group misses them) get SIGINT and stop, and they hold the instance lock until they do,
    so no second ``churn dev`` starts beside a platform still running; also when it was
    started in the background with SIGINT ignored."""
    import signal

    from churn_assets import devserver

    home = tmp_path / "home"
    home.mkdir()
    pidfile = tmp_path / "child"
    child = (  # Python's own Ctrl-C handling, only there when SIGINT is not ignored
        "import os, time\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "try:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    time.sleep(1.5)\n"
    )
    runner = tmp_path / "runner.py"
    runner.write_text(
        "import sys\nfrom pathlib import Path\nimport churn_assets.devserver as d\n"
        f"d.processes = lambda port, workspace: {{'dagster': [sys.executable, '-c', {child!r}]}}\n"
        "d.prepare_workspace = lambda root, home: (Path('w.yaml'), [])\n"
        "d.set_pool_limits = lambda limits: None\n"
        "d.fail_interrupted_runs = list\n"
        f"sys.exit(d.run_dev(port={free_port()}, root=Path({str(tmp_path)!r})))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHURN_SERVING_PORT": str(free_port())}
    # started as `nohup make dev &` starts it: SIGINT ignored, which its children inherit
    # unless churn dev gives them the default back
    parent = subprocess.Popen(
        [sys.executable, str(runner)],
        env=env,
        cwd=Path.cwd(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        pid = int(pidfile.read_text())
        parent.kill()
        parent.wait(timeout=10)
        assert devserver.instance_lock(home) is None  # the child still holds it
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the child of a killed churn dev kept running")
        again = devserver.instance_lock(home)
        assert again is not None
        again.close()
    finally:
        if parent.poll() is None:
            parent.kill()


def test_ctrl_c_stops_a_supervised_process_group(tmp_path, monkeypatch):
    """SIGINT to ``churn dev`` stops its children's whole process groups."""
    import churn_assets.devserver as devserver

    pidfile = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    _supervise(monkeypatch, tmp_path, {"dagster": [sys.executable, "-c", script]})
    import signal

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    handler = signal.getsignal(signal.SIGINT)
    assert devserver.run_dev(port=free_port(), root=tmp_path) == 0
    grandchild = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(grandchild, 0)
            time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is back


def test_churn_dev_seeds_in_a_process_of_its_own(tmp_path):
    """`churn dev` seeded the empty landing zone in its own process, which supervises the
    platform for as long as it runs: the generator's libraries and tables stayed there
    (about 287 MB held for days). It now seeds through `churn seed` in a child process: the
    files land, and the supervisor has imported none of numpy, polars or pandas. A seeding
    that fails stops `churn dev` with its error."""
    probe = (
        "import sys\n"
        "from churn_assets import devserver\n"
        "devserver.run_dev = lambda port: print('LOADED', sorted(m for m in "
        "('numpy', 'polars', 'pandas') if m in sys.modules)) or 0\n"
        "from churn_assets.cli import main\n"
        "main(['dev', '--port', '3999'])\n"
    )
    env = {
        **os.environ,
        "CHURN_STORAGE_URL": str(tmp_path / "storage"),
        "CHURN_LANDING_URL": str(tmp_path / "landing"),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout
    assert list((tmp_path / "landing" / "synthetic").rglob("*.parquet")), done.stdout

    (tmp_path / "blocked").write_text("a file where the landing folder should be")
    env["CHURN_LANDING_URL"] = str(tmp_path / "blocked")
    failed = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode != 0 and "LOADED" not in failed.stdout
    assert "Error:" in failed.stderr + failed.stdout, failed.stderr


def test_churn_demo_refuses_the_storage_of_a_running_churn_dev(tmp_path):
    """`churn demo` in the checkout where `churn dev` runs wrote into that platform's
    storage from an ephemeral instance, outside its pools: it ingested every landing file
    again (lines taken back with `churn remove-file` returned), trained and deployed a
    version beside the platform's own retraining. It now refuses, naming the running
    platform and what to do, and writes nothing; on a storage of its own it is not held
    back."""
    from churn_assets import devserver

    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    sleeper = "import time\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    pass\n"
    runner = tmp_path / "runner.py"
    runner.write_text(  # the real supervisor, its platform processes one idle child
        "import sys\nfrom pathlib import Path\nimport churn_assets.devserver as d\n"
        "d.processes = lambda port, workspace: "
        f"{{'dagster': [sys.executable, '-c', {sleeper!r}]}}\n"
        "d.prepare_workspace = lambda root, home: (Path('w.yaml'), [])\n"
        "d.set_pool_limits = lambda limits: None\n"
        "d.fail_interrupted_runs = list\n"
        f"sys.exit(d.run_dev(port={free_port()}, root=Path({str(tmp_path)!r})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env |= {
        "DAGSTER_HOME": str(home),
        "CHURN_STORAGE_URL": str(storage),
        "CHURN_SERVING_PORT": str(free_port()),
        "GX_ANALYTICS_ENABLED": "false",
    }
    dev = subprocess.Popen([sys.executable, str(runner)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while devserver.platform_on_storage(home, str(storage)) is None:
            assert dev.poll() is None, "churn dev stopped"
            assert time.monotonic() < deadline, "churn dev did not take its lock"
            time.sleep(0.2)
        assert devserver.platform_on_storage(home, str(tmp_path / "elsewhere")) is None
        demo = subprocess.run(
            [str(Path(sys.executable).parent / "churn"), "demo"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        dev.terminate()
        dev.wait(timeout=60)
    assert demo.returncode == 1, demo.stdout[-2000:]
    said = " ".join(demo.stderr.split())
    assert f"a running `churn dev` (pid {dev.pid}, instance {home}) uses the storage" in said
    assert "CHURN_STORAGE_URL=$(mktemp -d) churn demo" in said
    assert not storage.exists()  # not seeded, nothing ingested or trained
    assert devserver.platform_on_storage(home, str(storage)) is None  # stopped: free again
