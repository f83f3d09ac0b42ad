"""``churn dev``: run the local platform's processes and stop them all together.

Starts ``dagster dev`` (webserver on ``--port`` plus the daemon) and the prediction
sidecar (``churn serve``) with ``DAGSTER_HOME``
prepared from the repository's ``dagster.yaml``, each process in its own session so a
Ctrl-C or SIGTERM here stops every child process group cleanly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def prepare_dagster_home(root: Path) -> Path:
    """Create ``$DAGSTER_HOME`` (default ``.churn/dagster_home``) holding our dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".churn" / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    src = root / "dagster.yaml"
    if src.exists():
        shutil.copyfile(src, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    set_pool_limits()
    return home


POOL_LIMITS = {"retraining": 1}


def set_pool_limits() -> None:
    """Write the pool limits into the instance before the daemon starts.

    ``concurrency.pools.default_limit`` in dagster.yaml applies a limit only once the daemon
    has seen the pool, so two retraining runs queued together in the very first pass could
    both start; an explicit limit closes that window.
    """
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def processes(port: int) -> dict[str, list[str]]:
    """The commands ``churn dev`` runs, by name."""
    bindir = Path(sys.executable).parent
    cmds = {
        "dagster": [
            str(bindir / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        # the prediction sidecar (port CHURN_SERVING_PORT, default 8000); it serves once a
        # version is deployed and hot-reloads every new one
        "sidecar": [str(bindir / "churn"), "serve"],
    }
    return cmds


def run_dev(port: int = 3000, root: Path | None = None) -> int:
    """Run every process until one exits or we are interrupted; returns an exit code."""
    root = root or Path.cwd()
    prepare_dagster_home(root)
    children: dict[str, subprocess.Popen] = {}
    for name, cmd in processes(port).items():
        print(f"starting {name}: {' '.join(cmd)}", flush=True)
        children[name] = subprocess.Popen(cmd, cwd=root, start_new_session=True)
    print(
        f"Dagster UI on http://127.0.0.1:{port}, prediction sidecar on "
        f"http://127.0.0.1:{os.environ.get('CHURN_SERVING_PORT', '8000')} — Ctrl-C stops "
        "everything",
        flush=True,
    )

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            for name, p in children.items():
                if p.poll() is not None:
                    print(f"{name} exited with {p.returncode}; stopping the rest", flush=True)
                    code = p.returncode or 1
                    stopping = True
            time.sleep(0.5)
    finally:
        # SIGINT is what both dagster dev and uvicorn treat as a graceful Ctrl-C; escalate to
        # SIGTERM and then SIGKILL for a process group that does not stop in time
        for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            alive = [p for p in children.values() if p.poll() is None]
            if not alive:
                break
            for p in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            deadline = time.monotonic() + grace
            for p in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
        print("stopped", flush=True)
    return code
