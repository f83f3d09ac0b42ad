"""``churn dev``: run the local platform's processes and stop them all together.

Starts ``dagster dev`` (webserver on ``--port`` plus the daemon) and the prediction
sidecar (``churn serve``) with ``DAGSTER_HOME``
prepared from the repository's ``dagster.yaml``, each process in its own session so a
Ctrl-C or SIGTERM here stops every child process group cleanly. A process that exits on
its own (a killed daemon takes ``dagster dev`` with it) is started again; runs it left in
progress are marked failed first, as they are whenever ``churn dev`` starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from churn_assets.interrupted_runs import fail_interrupted_runs, say_failed
from churn_assets.lib.notify import ui_url_for_port
from churn_serving.server import port_problem

#: The first line of the dagster.yaml ``churn dev`` copies into ``$DAGSTER_HOME``.
COPIED_MARK = "# copied by `churn dev` from the project's dagster.yaml\n"


def prepare_dagster_home(root: Path) -> Path:
    """Create ``$DAGSTER_HOME`` (default ``.churn/dagster_home``) holding our dagster.yaml.
    A dagster.yaml there that ``churn dev`` did not write (an instance's own: PostgreSQL
    storage, its limits) is kept beside it under another name, and said so."""
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".churn" / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    src, dest = root / "dagster.yaml", home / "dagster.yaml"
    if src.exists():
        if dest.exists():
            before = dest.read_text()
            if not before.startswith(COPIED_MARK) and before != src.read_text():
                kept = dest.with_name(f"dagster.yaml.before-churn-dev-{int(time.time())}")
                dest.rename(kept)
                print(
                    f"{dest} was not written by `churn dev`: it is kept as {kept.name}; "
                    f"`churn dev` runs this instance with {src} (SQLite under DAGSTER_HOME)",
                    flush=True,
                )
        dest.write_text(COPIED_MARK + src.read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    return home


#: One retraining and one landing run of a data set at a time (``partitions.INGEST_POOL``:
#: the incremental feature state and sources.json have one writer).
POOL_LIMITS = {"retraining": 1, "ingest": 1}
LOCATIONS_MODULE = "churn_assets.locations"


def workspace_datasets(doc: dict) -> list[str]:
    """The data sets of the extra code locations of a workspace (``churn_assets.locations``
    entries; their attribute names the data set)."""
    names = []
    for entry in doc.get("load_from") or []:
        spec = (entry or {}).get("python_module")
        if isinstance(spec, dict) and spec.get("module_name") == LOCATIONS_MODULE:
            names.append(str(spec.get("attribute")))
    return names


def own_datasets(folder: str | None) -> list[str]:
    """Names of the configs in ``CHURN_DATASETS_DIR`` (``<name>.yaml``), sorted; a
    ``.yml`` file there is named as not read."""
    if not folder or not Path(folder).is_dir():
        return []
    for other in sorted(Path(folder).glob("*.yml")):
        print(
            f"{other} is not read: a data set config is <name>.yaml (rename it {other.stem}.yaml)",
            flush=True,
        )
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def prepare_workspace(root: Path, home: Path) -> tuple[Path, list[str]]:
    """The workspace ``churn dev`` loads and its extra data sets: ``workspace.yaml``, plus a
    code location for every config in ``CHURN_DATASETS_DIR`` it does not list yet (written to
    ``$DAGSTER_HOME/workspace.yaml``). Adding a data set is then adding its YAML file and
    restarting ``churn dev``."""
    import yaml

    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import ChurnSettings

    path = root / "workspace.yaml"
    doc = yaml.safe_load(path.read_text()) if path.exists() else {"load_from": []}
    listed = workspace_datasets(doc)
    try:
        default = load_dataset_config(ChurnSettings().dataset).name
    except Exception:  # the default location reports a broken config itself
        default = None
    added = [
        n
        for n in own_datasets(os.environ.get("CHURN_DATASETS_DIR"))
        if n not in listed and n != default
    ]
    out = home / "workspace.yaml"
    if default in listed:  # served by the default location: a second one would retrain it too
        print(
            f"{default} is the default data set (CHURN_DATASET): the default code location "
            f"serves it, so its own location in {path.name} is left out",
            flush=True,
        )
        doc["load_from"] = [
            e for e in doc["load_from"] if workspace_datasets({"load_from": [e]}) != [default]
        ]
        listed.remove(default)
    elif not added:
        out.unlink(missing_ok=True)  # an earlier start's: `churn backfill` would read it
        return path, listed
    for entry in doc["load_from"]:
        spec = (entry or {}).get("python_module")
        if isinstance(spec, dict):
            spec.setdefault("working_directory", str(root.resolve()))
    for name in added:
        doc["load_from"].append(
            {
                "python_module": {
                    "module_name": LOCATIONS_MODULE,
                    "attribute": name,
                    "location_name": name,
                    "working_directory": str(root.resolve()),
                }
            }
        )
    out.write_text(
        "# written by `churn dev`: workspace.yaml (without the default data set's own "
        "location) plus CHURN_DATASETS_DIR's data sets\n" + yaml.safe_dump(doc, sort_keys=False)
    )
    return out, listed + added


def pool_limits(datasets: list[str]) -> dict[str, int]:
    """The retraining and ingest pools of the default location and of every extra data set:
    limit 1."""
    return POOL_LIMITS | {
        f"{name}/{pool}": n for name in datasets for pool, n in POOL_LIMITS.items()
    }


def set_pool_limits(limits: dict[str, int] | None = None) -> None:
    """Write the pool limits into the instance before the daemon starts.

    ``concurrency.pools.default_limit`` in dagster.yaml applies a limit only once the daemon
    has seen the pool, so runs queued together in the very first pass all started (four
    landing runs of a fresh instance's first batch at once); an explicit limit closes that
    window.
    """
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for pool, limit in (limits or POOL_LIMITS).items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def processes(port: int, workspace: Path | str = "workspace.yaml") -> dict[str, list[str]]:
    """The commands ``churn dev`` runs, by name."""
    bindir = Path(sys.executable).parent
    cmds = {
        "dagster": [
            str(bindir / "dagster"),
            "dev",
            "-w",
            str(workspace),
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


#: ``dagster dev`` exiting on its own is started again, at most this many times in
#: RESTART_WINDOW seconds; then everything stops (a crash loop is not hidden). The sidecar
#: is started again after a pause that doubles with each exit in the window (1 s to
#: MAX_SIDECAR_PAUSE), and never takes Dagster and its runs down with it.
MAX_RESTARTS = 3
RESTART_WINDOW = 600.0
MAX_SIDECAR_PAUSE = 300.0


def _child_setup() -> None:
    """In a child of ``churn dev``, before it runs: Ctrl-C and SIGTERM back to their
    defaults (a ``churn dev`` started in the background, ``nohup make dev &``, has them
    ignored, and children would inherit that: a stop could only kill them), and ask Linux
    to send it SIGINT when ``churn dev`` dies, however it dies (a SIGKILL included), so
    that no platform is left running without the process that holds the instance lock."""
    import ctypes

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):  # not Linux: the lock is still passed down
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGINT)


def _stop_group(p: subprocess.Popen, interrupted: bool = False) -> None:
    """Stop ``p``'s whole process group: SIGINT (what ``dagster dev`` and uvicorn treat as
    Ctrl-C; not again when ``interrupted``: a second one makes ``dagster dev`` leave its
    webserver, daemon and code servers behind), then SIGTERM, then SIGKILL for a group
    that does not stop in time."""
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if sig != signal.SIGINT or not interrupted:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(p.pid, 0)  # anyone of the group left (a code server, a run)?
            except ProcessLookupError:
                return
            p.poll()
            time.sleep(0.2)


#: Held (an exclusive ``flock``) by the ``churn dev`` running on a Dagster instance; the
#: operating system releases it when that process ends, however it ends.
LOCK_FILE = "churn-dev.lock"


def instance_lock(home: Path) -> Any | None:
    """The open lock file of the instance at ``home``, locked for this process; None when
    another process holds it (another ``churn dev`` on the same instance, whose runs in
    progress are alive)."""
    import fcntl

    handle = (home / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


#: The line of the lock file naming the storage root of the platform that holds it.
STORAGE_LINE = "storage "


def record_storage(lock: Any, storage_url: str) -> None:
    """Write the storage root of the platform holding ``lock`` (:func:`instance_lock`) into
    its lock file, for :func:`platform_on_storage`."""
    lock.write(f"{STORAGE_LINE}{storage_url}\n")
    lock.flush()


def platform_on_storage(home: Path, storage_url: str) -> str | None:
    """The process id of the ``churn dev`` running on the instance at ``home`` when it uses
    the storage root ``storage_url`` (as its lock file records it), else None: no lock file,
    nobody holding it, or another storage (or one a release before the record started)."""
    import fcntl

    path = home / LOCK_FILE
    if not path.is_file():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            lines = handle.read().splitlines()
        else:  # nobody holds it: no platform runs there (closing the file lets it go)
            return None
    used = {x[len(STORAGE_LINE) :].rstrip("/") for x in lines if x.startswith(STORAGE_LINE)}
    if storage_url.rstrip("/") not in used:
        return None
    return (lines[0].strip() if lines else "") or "?"


def settings_checked_apart(root: Path) -> tuple[list[str], str | None]:
    """:func:`churn_assets.preflight.settings_problems` and, when there are none, the
    storage root the platform's processes will use, found in a process of its own: the
    check imports Dagster and the libraries its settings live in, which this supervisor
    (the holder of the instance lock and its children's parent) stays without."""
    import json

    code = (
        "import json\nfrom churn_assets.preflight import settings_problems\n"
        "problems, storage = settings_problems(), None\n"
        "if not problems:\n"
        "    from churn_assets.lib.settings import ChurnSettings\n"
        "    storage = ChurnSettings().resolved_storage_url\n"
        "print(json.dumps({'problems': problems, 'storage': storage}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"the settings could not be checked: {last}"], None
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["problems"], found["storage"]


def sidecar_pause(exits_before: int) -> float:
    """Seconds before the sidecar starts again after its ``exits_before + 1``-th exit in
    :data:`RESTART_WINDOW`: 1, 2, 4, … up to :data:`MAX_SIDECAR_PAUSE`."""
    return min(MAX_SIDECAR_PAUSE, 2.0**exits_before)


#: Variables of the platform and its services whose values a ``.env`` file may change.
_PLATFORM_VARIABLES = ("CHURN_", "MLFLOW_", "DAGSTER_", "AWS_")


def env_file_note(root: Path, env: dict[str, str] | None = None) -> str | None:
    """What a ``.env`` file in ``root`` changes, or None. Dagster's commands load it and its
    values replace the environment's in every Dagster process (not in the sidecar): with
    compose's ``.env`` in the checkout, ``CHURN_RETRAINING_CRON=... churn dev`` kept the
    hourly cron and ``CHURN_DATASET=telco`` trained synthetic behind a telco sidecar."""
    from dotenv import dotenv_values

    path = root / ".env"
    if not path.is_file():
        return None
    env = dict(os.environ) if env is None else env
    values = dotenv_values(path)
    changed = sorted(
        key
        for key, value in values.items()
        if value is not None and key.startswith(_PLATFORM_VARIABLES) and env.get(key) != value
    )
    if not changed:
        return None
    shown = ", ".join(
        f"{k}={values[k]!r}" + (f" (environment: {env[k]!r})" if k in env else "")
        for k in changed[:8]
    ) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    return (
        f"note: Dagster's processes read {path} and take these values from it, over the "
        f"environment (the prediction sidecar does not): {shown}. It is docker compose's "
        "file; for the embedded platform, move it away or set the values there."
    )


def run_dev(port: int = 3000, root: Path | None = None) -> int:
    """Run every process until we are interrupted; returns an exit code. Nothing starts
    when a port is taken. ``dagster dev`` exiting on its own is started again (a killed
    daemon restarts it, after its interrupted runs are marked failed), up to
    :data:`MAX_RESTARTS` times in :data:`RESTART_WINDOW` seconds, then everything stops;
    the sidecar is started again after a growing pause (:func:`sidecar_pause`)."""
    root = root or Path.cwd()
    home = prepare_dagster_home(root)
    lock = instance_lock(home)
    if lock is None:
        print(
            f"another `churn dev` is running on the Dagster instance at {home} (it holds "
            f"{home / LOCK_FILE}): stop it first, or give this one its own DAGSTER_HOME and "
            "CHURN_STORAGE_URL. Starting here would mark that platform's runs in progress "
            "failed. A `churn dev` that was killed leaves its processes stopping (they hold "
            "the lock until they have): try again in a minute.",
            flush=True,
        )
        return 1
    from churn_serving.settings import ServingSettings

    wrong, storage = settings_checked_apart(root)
    if wrong:
        print("nothing started: " + "; ".join(wrong), flush=True)
        return 1
    if storage:  # `churn demo` on this storage refuses while this platform runs
        record_storage(lock, storage)
    serving = ServingSettings()
    taken = [
        problem
        for problem in (
            port_problem("127.0.0.1", port, "the Dagster UI", "`churn dev --port <other>`"),
            port_problem(
                serving.host,
                serving.port,
                "the prediction sidecar",
                "CHURN_SERVING_PORT=<other> (and CHURN_SERVING_HOST)",
            ),
        )
        if problem
    ]
    if taken:
        print("nothing started: " + "; ".join(taken), flush=True)
        return 1
    if note := env_file_note(root):
        print(note, flush=True)
    workspace, datasets = prepare_workspace(root, home)
    set_pool_limits(pool_limits(datasets))
    say_failed(fail_interrupted_runs())
    if datasets:
        print(f"data sets beside the default one: {', '.join(datasets)}", flush=True)
    commands = processes(port, workspace)
    child_env = dict(os.environ)
    ui_url_for_port(port, child_env)  # the links in alerts point at this UI

    def start(name: str) -> subprocess.Popen:
        # each child holds the instance lock too (an inherited descriptor of the same lock)
        # and gets SIGINT when churn dev dies: a killed churn dev leaves no platform running
        # that a new one would not see
        return subprocess.Popen(
            commands[name],
            cwd=root,
            env=child_env,
            start_new_session=True,
            pass_fds=(lock.fileno(),),
            preexec_fn=_child_setup,  # noqa: PLW1509 - signals and prctl only, no locks
        )

    children: dict[str, subprocess.Popen] = {}
    for name, cmd in commands.items():
        print(f"starting {name}: {' '.join(cmd)}", flush=True)
        children[name] = start(name)
    print(
        f"Dagster UI on http://127.0.0.1:{port}, prediction sidecar on "
        f"http://{serving.host}:{serving.port} — Ctrl-C stops everything",
        flush=True,
    )

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    restarts: dict[str, list[float]] = {name: [] for name in commands}
    due: dict[str, float] = {}  # a sidecar that exited: when it starts again
    try:
        while not stopping:
            for name, p in list(children.items()):
                if p.poll() is None or stopping:
                    continue
                now = time.monotonic()
                if name in due:
                    if now < due[name]:
                        continue
                    del due[name]
                    print(f"starting {name} again", flush=True)
                    children[name] = start(name)
                    continue
                recent = [t for t in restarts[name] if now - t < RESTART_WINDOW]
                if name == "dagster" and len(recent) >= MAX_RESTARTS:
                    print(
                        f"{name} exited with {p.returncode} {len(recent) + 1} times in "
                        f"{RESTART_WINDOW / 60:.0f} minutes; stopping the rest",
                        flush=True,
                    )
                    code = p.returncode or 1
                    stopping = True
                    break
                _stop_group(p)  # what it left behind (code servers, run workers)
                restarts[name] = [*recent, now]
                if name == "dagster":
                    print(f"{name} exited with {p.returncode}; starting it again", flush=True)
                    say_failed(fail_interrupted_runs())
                    children[name] = start(name)
                    continue
                pause = sidecar_pause(len(recent))
                print(
                    f"{name} exited with {p.returncode} ({len(recent) + 1} time(s) in "
                    f"{RESTART_WINDOW / 60:.0f} minutes); starting it again in {pause:.0f} s "
                    "(Dagster and its runs go on)",
                    flush=True,
                )
                due[name] = now + pause
            time.sleep(0.5)
    finally:
        alive = [p for p in children.values() if p.poll() is None]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGINT)
        for p in alive:
            _stop_group(p, interrupted=True)
        for sig, handler in before.items():
            signal.signal(sig, handler)
        print("stopped", flush=True)
    lock.close()
    return code
