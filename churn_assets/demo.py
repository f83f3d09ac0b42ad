"""``churn demo``: materialize the whole graph in-process once and summarise it.

The JSON report (``churn demo --json``) is a stable interface, documented in the README:
``dataset``, ``success``, ``seconds``, ``storage_url``, ``assets`` (per asset: ``rows``,
``seconds``, ``metadata``), ``checks`` (per check: ``passed``, ``description``),
``features`` (``rows``, ``columns``, ``cutoff``, ``churn_rate``, ``mean_total_sales``),
``realized`` (null when ``realized_performance`` did not run; else its ``status`` and, once a
scoring snapshot's horizon has passed, the realized figures per model version next to the
deployment-time ones, see :func:`realized_summary`) and ``error`` (null on success).

``CHURN_DEMO_SIMULATE_HORIZON=1`` (synthetic data set, empty landing zone) simulates time
passing: the generated history lands without its last ``horizon_days``, the graph trains,
deploys and scores at that earlier cut-off, then the rest lands and the landing job
(ingestion → features → drift → realized performance) measures the scores against what the
customers did; the report then also has ``simulation``. On another transaction data set
read from files (e.g. ``online_retail``) the same runs on a copy of its files cut one horizon
before their end, in the run's storage (:func:`run_source_horizon_demo`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from churn_assets.lib.settings import env_flag


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a Dagster metadata value."""
    inner = getattr(value, "value", value)
    if isinstance(inner, int | float | str | bool) or inner is None:
        return inner
    if isinstance(inner, list | dict):
        return inner
    return None


def root_cause_text(error: Any) -> str:
    """``ExceptionType: message`` of the innermost cause of a Dagster error record (a
    failed step wraps the user's exception in Dagster's own ones)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    name = getattr(error, "cls_name", None) or "Error"
    message = (getattr(error, "message", "") or "").strip()
    # SerializableErrorInfo messages start with "ClassName: " (or "module.ClassName: ") already
    head, sep, rest = message.partition(": ")
    if sep and (head == name or head.endswith(f".{name}")):
        message = rest
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if first.endswith(":") and len(lines) > 1:
        # a heading and its list, e.g. Dagster's "1 blocking asset check failed with ERROR
        # severity:" followed by "<asset>: <check>" lines: the list is the information
        first = f"{first} {'; '.join(lines[1:6])}"
    if name == "Failure" and ": " in first:
        return first
    return f"{name}: {first}".strip()


def run_error(result: Any, checks: dict[str, dict[str, Any]]) -> str | None:
    """What failed in a run, for the report's ``error``: each failed step's root cause, then
    each failed check with its description (what the data did wrong), upstream first; None
    on success. A step that failed only because a blocking check did is left to that
    check's own line (its description says why; the step's error only names it)."""
    if result.success:
        return None
    failed_checks = [
        f"check {key} {'warned' if c.get('severity') == 'WARN' else 'failed'}: {c['description']}"
        for key, c in checks.items()
        if c.get("passed") is False
    ]
    failures = []
    for ev in result.all_events:
        if ev.event_type_value != "STEP_FAILURE" or not ev.event_specific_data.error:
            continue
        cause = root_cause_text(ev.event_specific_data.error)
        if failed_checks and cause.startswith(f"{CHECK_FAILED}: "):
            continue
        failures.append(f"{ev.step_key}: {cause}")
    failures += getattr(result, "errors", [])
    return " | ".join(failures + failed_checks) or "run failed"


#: The error a step raises when one of its blocking asset checks failed.
CHECK_FAILED = "DagsterAssetCheckFailedError"


SIMULATE_ENV = "CHURN_DEMO_SIMULATE_HORIZON"


def realized_summary(out: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON report's ``realized``: ``status``, ``message``, ``observed_until``,
    ``pending`` (snapshots whose horizon has not passed) and, when some were evaluated,
    ``verdict``, ``retraining_requested`` and ``by_version`` (per model version, its latest
    evaluated snapshot: ``cutoff``, ``realized`` and ``deployment`` figures, ``deciles``)."""
    if out is None:
        return None
    summary: dict[str, Any] = {
        k: out.get(k) for k in ("status", "message", "horizon_days", "observed_until")
    }
    summary["pending"] = out.get("pending", [])
    if out.get("status") != "ok":
        return summary
    summary["verdict"] = out["verdict"]
    summary["retraining_requested"] = out["retraining_requested"]
    summary["by_version"] = {
        version: {
            "cutoff": e["cutoff"],
            "realized": {k: v for k, v in e["realized"].items() if k != "deciles"},
            "deployment": e["deployment"],
            "deciles": e["realized"]["deciles"],
        }
        for version, e in out["by_version"].items()
    }
    return summary


def skip_exit_collection() -> None:
    """Freeze the heap when the interpreter exits (:func:`gc.freeze` as an exit handler): the
    last garbage collection of a process that ran the graph walks every object it loaded,
    4.2-4.5 s of the demo's wall time on 10k customers, for memory the OS takes back anyway.
    Exit handlers registered before this one still run after it."""
    import atexit
    import gc

    atexit.register(gc.freeze)


def freeze_heap() -> None:
    """Take the objects alive now out of the garbage collector's sight (:func:`gc.freeze`)
    between the stages of a graph run: the modules and definitions loaded so far stay until
    the process ends, and every full collection would walk them again (in the 10k demo the
    collections held the GIL for 4-5 s, most of it in full ones)."""
    import gc

    gc.freeze()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``) after a
    collection: ingestion's peak otherwise stays in this process's resident memory while the
    model sets train beside it. A no-op where glibc is not the C library."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _import_skops() -> None:
    """Import skops (model files) first: it lists its trusted types at import by scanning
    every loaded module, ~1 s before Dagster, MLflow and Great Expectations are loaded and
    ~3 s after."""
    import skops.io  # noqa: F401


def _check_tracking_server(settings: Any, dataset: str) -> None:
    """An MLflow server that does not answer is said before anything runs (it was found by
    the first model set, after ingestion and the training set: minutes on large data)."""
    from churn_assets.lib.tracking import TrackingConfig, ensure_experiment

    tracking = TrackingConfig.from_settings(settings, dataset)
    if tracking.tracking_uri.startswith(("http://", "https://")):
        ensure_experiment(tracking)


def refuse_beside_running_platform(storage_url: str) -> None:
    """Raise a :class:`SettingError` when a ``churn dev`` runs on the instance at
    ``DAGSTER_HOME`` (default ``.churn/dagster_home``) with ``storage_url`` as its storage:
    the demo's ephemeral runs would ingest, train and deploy there outside that platform's
    pools, beside its own runs."""
    from churn_assets.devserver import platform_on_storage
    from churn_assets.lib.settings import SettingError

    home = Path(os.environ.get("DAGSTER_HOME") or Path(".churn") / "dagster_home").resolve()
    pid = platform_on_storage(home, storage_url)
    if pid is None:
        return
    raise SettingError(
        f"a running `churn dev` (pid {pid}, instance {home}) uses the storage {storage_url}: "
        "the demo would ingest every landing file, train and deploy there beside that "
        "platform's own runs and outside its pools (lines taken back with `churn "
        "remove-file` return, a version it deploys races its retraining). Nothing was "
        "written. Give the demo a storage of its own (CHURN_STORAGE_URL=$(mktemp -d) churn "
        "demo), or stop `churn dev` first"
    )


def run_demo(
    dataset: str,
    *,
    seed_if_empty: bool = True,
    log: Callable[[str], None] | None = None,
    simulate_horizon: bool | None = None,
) -> dict[str, Any]:
    """Run raw → features (and whatever the graph holds) on ``dataset``; return the report.

    ``simulate_horizon`` (default: ``CHURN_DEMO_SIMULATE_HORIZON``) runs
    :func:`run_horizon_demo` instead when the synthetic landing zone is empty, and
    :func:`run_source_horizon_demo` on another transaction data set whose storage holds no
    deployment or scores yet."""
    skip_exit_collection()
    _import_skops()
    import dagster as dg

    from churn_assets.cli import landing_has_data
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import get_settings, join_url
    from churn_assets.resources import ChurnPlatform

    cfg = load_dataset_config(dataset)
    settings = get_settings()
    refuse_beside_running_platform(settings.resolved_storage_url)
    _check_tracking_server(settings, cfg.name)
    if simulate_horizon is None:
        simulate_horizon = env_flag(SIMULATE_ENV)
    if simulate_horizon and cfg.name != "synthetic":
        refusal = source_simulation_refusal(cfg, settings)
        if refusal is None:
            return run_source_horizon_demo(dataset, log=log)
        if log:
            log(f"{refusal}: no simulation, the graph runs on the data as it is")
    seed_url = None
    if cfg.name == "synthetic" and (seed_if_empty or simulate_horizon):
        url = join_url(settings.resolved_landing_url, "synthetic")
        if not landing_has_data(url, settings.storage_options(url)):
            if simulate_horizon:
                return run_horizon_demo(dataset, log=log)
            seed_url = url
        elif simulate_horizon and log:
            log(f"{url} already has data: no simulation, the graph runs on it as it is")
    if seed_url:
        from churn_assets.lib.generator import generate

        if log:
            log(f"seeding {seed_url} with synthetic data ...")
        generate(seed_url, storage_options=settings.storage_options(seed_url), seed=settings.seed)
    platform = ChurnPlatform(dataset=dataset)
    defs = build_definitions(platform, ChurnIOManager(dataset=dataset))
    if log:
        log(f"materializing the asset graph on data set '{cfg.name}' ...")
    landing = platform.landing_url_for_dataset()
    size = landing_bytes(cfg, landing, platform.landing_storage_options())
    small = size is not None and size <= SMALL_LANDING_BYTES
    result, seconds = _timed(
        lambda: execute_graph(
            defs,
            dg.DagsterInstance.ephemeral(),
            lambda: ModelSetWorker.start(dataset),
            early_worker=small,
            step_by_step=size is not None and not small,
            sequential_sets=size is not None and size > SEQUENTIAL_LANDING_BYTES,
        )
    )
    return _report(cfg, settings, result, seconds, dataset=dataset)


#: Landing data up to this size is small: the model-set worker starts with the graph (its
#: imports run on the core ingestion leaves idle). Larger data is ingested one asset per run,
#: and the worker waits until the features are done, so that neither the worker's libraries
#: nor the outputs a run holds add to the memory peak of ingestion (see :func:`execute_graph`).
SMALL_LANDING_BYTES = 32 * 1024 * 1024

#: Above this size the model sets train one after the other in the demo's process, not side
#: by side: at 1M customers (663 MB of landing files) the two sets together held 13.7 GB,
#: one at a time stays under 12 GB. Up to it (100k customers: 67 MB) the worker trains the
#: second set beside the first, which saves its time.
SEQUENTIAL_LANDING_BYTES = 256 * 1024 * 1024


def landing_bytes(cfg: Any, landing_url: str, storage_options: dict[str, Any]) -> int | None:
    """Bytes of the data set's landing files (``None`` when they cannot be listed)."""
    import fsspec

    from churn_assets.lib.ingest import list_source_files, resolve_source

    total = 0
    try:
        for spec in (cfg.customers, cfg.transactions):
            if spec is None:
                continue
            for url in list_source_files(resolve_source(spec, landing_url), storage_options):
                fs, path = fsspec.core.url_to_fs(url, **storage_options)
                total += int(fs.size(path) or 0)
    except Exception:  # noqa: BLE001 - the raw assets report what is wrong with the files
        return None
    return total


#: The model set that trains in :class:`ModelSetWorker`'s process, side by side with the
#: classification set in the demo's own process.
WORKER_SET = "regression_models"
#: The assets whose outputs the report reads.
REPORTED = [
    "classification_models",
    "regression_models",
    "deployed_model_version",
    "realized_performance",
]
#: The model sets: independent of each other, the longest steps of the graph.
MODEL_SETS: tuple[str, ...] = ("classification_models", WORKER_SET)


class RunSummary:
    """What the report reads from one in-process run (sent back by the worker process)."""

    def __init__(
        self,
        success: bool,
        events: list[Any],
        outputs: dict[str, Any],
        errors: list[str] | None = None,
    ) -> None:
        self.success = success
        self.all_events = events
        self.outputs = outputs
        self.errors = errors or []

    @classmethod
    def of(cls, result: Any, nodes: list[str]) -> RunSummary:
        done = {ev.step_key for ev in result.get_asset_materialization_events()}
        outputs = {n: result.output_for_node(n) for n in nodes if n in done}
        return cls(result.success, list(result.all_events), outputs)

    @classmethod
    def merge(cls, summaries: list[RunSummary]) -> RunSummary:
        """Several runs as one (outputs of the later runs win)."""
        return cls(
            all(s.success for s in summaries),
            [ev for s in summaries for ev in s.all_events],
            {k: v for s in summaries for k, v in s.outputs.items()},
            [e for s in summaries for e in s.errors],
        )

    def get_asset_materialization_events(self) -> list[Any]:
        return [ev for ev in self.all_events if ev.event_type_value == "ASSET_MATERIALIZATION"]

    def output_for_node(self, name: str) -> Any:
        return self.outputs[name]


class GraphResult:
    """The in-process runs of one graph execution (Dagster results or :class:`RunSummary`),
    read like one run's result."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results

    @property
    def success(self) -> bool:
        return bool(self.results) and all(r.success for r in self.results)

    @property
    def run_id(self) -> str:
        return self.results[-1].run_id

    def get_asset_check_evaluations(self) -> list[Any]:
        return [e for r in self.results for e in r.get_asset_check_evaluations()]

    @property
    def all_events(self) -> list[Any]:
        return [ev for r in self.results for ev in r.all_events]

    @property
    def errors(self) -> list[str]:
        return [e for r in self.results for e in getattr(r, "errors", [])]

    def get_asset_materialization_events(self) -> list[Any]:
        return [ev for r in self.results for ev in r.get_asset_materialization_events()]

    def output_for_node(self, name: str) -> Any:
        """The node's output in the first run that made it; a table partitioned by landing
        file (one run per partition) as its partitions stacked."""
        made = [
            r
            for r in self.results
            if any(ev.step_key == name for ev in r.get_asset_materialization_events())
        ]
        if not made:
            raise KeyError(f"no step {name!r} materialized")
        if len(made) > 1:
            import polars as pl

            return pl.concat([r.output_for_node(name) for r in made], how="diagonal_relaxed")
        return made[0].output_for_node(name)


class ModelSetWorker:
    """A process that trains :data:`WORKER_SET` while the demo's process trains the other set.

    Started with the graph on small data, else once ingestion and features are done, it
    loads the code location, the model libraries and MLflow (and creates or migrates the
    local MLflow store) while the demo's process ingests or starts the classification set;
    on :meth:`go` it materializes its model set in
    its own in-process run and sends back a :class:`RunSummary`. A process, not a thread:
    the fits hold the GIL for much of their time (HistGradientBoosting grows its trees in
    Python, the preprocessing is pandas), and two sets training in one process took as long
    as one after the other."""

    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, dataset: str) -> ModelSetWorker:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        process = ctx.Process(
            target=_worker_main, args=(dataset, theirs), name="churn-model-set", daemon=True
        )
        process.start()
        theirs.close()
        return cls(process, ours)

    def go(self) -> None:
        """Start the worker's run (a dead worker shows in :meth:`result`)."""
        with contextlib.suppress(OSError):
            self.conn.send("go")

    def result(self) -> RunSummary:
        """The worker's run (a failed one naming the worker when it died without a result)."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return RunSummary(
                False, [], {}, [f"{WORKER_SET}: the model-set process ended without a result"]
            )

    def close(self) -> None:
        """Stop the worker if it is still waiting, and reap it."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send("stop")
        self.conn.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)


def _worker_main(dataset: str, conn: Any) -> None:
    """:class:`ModelSetWorker`'s process."""
    skip_exit_collection()
    _import_skops()
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    platform = ChurnPlatform(dataset=dataset)
    job = build_definitions(platform, ChurnIOManager(dataset=dataset))
    job = job.resolve_implicit_global_asset_job_def()
    try:
        import lightgbm  # noqa: F401
        import mlflow.sklearn  # noqa: F401
        import xgboost  # noqa: F401

        import churn_assets.lib.models.regression  # noqa: F401
        from churn_assets.lib.tracking import TrackingConfig, ensure_experiment

        name = platform.dataset_config().name
        ensure_experiment(TrackingConfig.from_settings(platform.settings(), name))
    except Exception:  # noqa: BLE001 -- the asset meets the same error and reports it
        pass
    with contextlib.suppress(Exception):
        # MLflow maps every installed distribution to its modules (~1.8 s) the first time a
        # model is logged in a process; done here, it runs while the worker waits
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()
    if conn.recv() != "go":
        return
    freeze_heap()
    try:
        result = job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=[dg.AssetKey(WORKER_SET)],
            raise_on_error=False,
            run_config=console_run_config(),
        )
        summary = RunSummary.of(result, [WORKER_SET])
    except Exception as e:  # noqa: BLE001
        summary = RunSummary(False, [], {}, [f"{WORKER_SET}: {type(e).__name__}: {e}"])
    conn.send(summary)
    conn.close()


def console_run_config() -> dict[str, Any]:
    """Run config of the demo's in-process runs: Dagster's console log at INFO (what ran,
    warnings, failures) rather than ~200 DEBUG lines per run; ``CHURN_DEBUG=1`` keeps DEBUG."""
    level = "DEBUG" if env_flag("CHURN_DEBUG") else "INFO"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def execute_graph(
    defs: Any,
    instance: Any,
    start_worker: Callable[[], ModelSetWorker],
    *,
    early_worker: bool = False,
    step_by_step: bool = False,
    sequential_sets: bool = False,
) -> GraphResult:
    """Materialize the whole graph on ``instance``, the model sets side by side.

    Three stages: every asset that does not depend on a model set, then the classification
    set here while a worker process (``start_worker``) trains the other, then what depends
    on them (when everything before succeeded). The worker starts after the first stage, so
    its libraries do not add to the memory peak of ingestion and features; with
    ``early_worker`` (small data) it starts before it, and loads while ingestion runs.

    With ``step_by_step`` (large data) the first stage is one run per asset, in dependency
    order, stopping at the first failure: an in-process run holds every output it made until
    it ends, and at 1M customers the raw transactions alone are several GB. With
    ``sequential_sets`` (very large data) no worker starts: each model set is its own run
    here, one after the other, so that the memory of only one set's training is held."""
    import dagster as dg

    from churn_assets.partitions import execute_in_process

    job = defs.resolve_implicit_global_asset_job_def()
    platform = defs.resources["platform"]
    graph = defs.resolve_asset_graph()
    sets = [dg.AssetKey(k) for k in MODEL_SETS]
    after = dg.AssetSelection.assets(*sets).downstream(include_self=False).resolve(graph)
    before = set(graph.get_all_asset_keys()) - after - set(sets)

    def run(keys: Any) -> RunSummary:
        # the summary keeps the outputs the report reads, not the tables: an in-process
        # result holds every output in memory (at 100k customers ~0.5 GB of raw and
        # feature tables) until it is dropped; raw_transactions runs once per landing file
        results = execute_in_process(
            job, instance, platform, sorted(keys), run_config=console_run_config()
        )
        return RunSummary.merge([RunSummary.of(r, REPORTED) for r in results])

    worker = start_worker() if early_worker else None
    try:
        if step_by_step:
            results = []
            for key in [k for k in graph.toposorted_asset_keys if k in before]:
                results.append(run([key]))
                release_free_memory()
                if not results[-1].success:
                    return GraphResult(results)
        else:
            results = [run(before)]
            if not results[0].success:
                return GraphResult(results)
        release_free_memory()
        if sequential_sets:
            for key in sets:
                results.append(run([key]))
                release_free_memory()
        else:
            worker = worker or start_worker()
            worker.go()
            freeze_heap()
            results.append(run([k for k in sets if k.to_user_string() != WORKER_SET]))
            results.append(worker.result())
    finally:
        if worker is not None:
            worker.close()
    freeze_heap()
    if all(r.success for r in results) and after:
        results.append(run(after))
    return GraphResult(results)


def run_horizon_demo(
    dataset: str = "synthetic",
    *,
    log: Callable[[str], None] | None = None,
    customers: int = 10_000,
    days: int = 540,
) -> dict[str, Any]:
    """Simulate time passing on the synthetic data set (empty landing zone): generate the
    history (``CHURN_SEED``), land it without its last ``horizon_days``, run the whole graph
    (it trains, deploys and scores at that cut-off, keeping a snapshot), land the rest and
    run the landing job (ingestion → features → drift → realized performance). Returns the
    first run's report with the realized figures of the second, and ``simulation`` (the
    cut-off, what landed when, and the second run's ``outcomes_run`` report).
    ``customers`` and ``days`` size the history (defaults: those of ``churn seed``)."""
    import shutil
    import tempfile

    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.realized import land_history_holding_back, land_window
    from churn_assets.lib.settings import get_settings, join_url
    from churn_assets.partitions import run_in_process
    from churn_assets.resources import ChurnPlatform

    cfg = load_dataset_config(dataset)
    if cfg.name != "synthetic":
        raise ValueError(f"the horizon simulation generates synthetic data, not '{cfg.name}'")
    settings = get_settings()
    url = join_url(settings.resolved_landing_url, cfg.name)
    opts = settings.storage_options(url)
    horizon = cfg.labels.horizon_days
    defs = build_definitions(ChurnPlatform(dataset=dataset), ChurnIOManager(dataset=dataset))
    instance = dg.DagsterInstance.ephemeral()
    stage = tempfile.mkdtemp(prefix="churn-horizon-")
    try:
        summary, cutoff, before = land_history_holding_back(
            stage,
            url,
            customers=customers,
            days=days,
            seed=settings.seed,
            hold_back_days=horizon,
            storage_options=opts,
        )
        if log:
            log(
                f"landed {summary.start} to {cutoff} (the last {horizon} days held back); "
                "training, deploying and scoring at that cut-off ..."
            )
        first = _timed(
            lambda: run_in_process(
                defs.resolve_implicit_global_asset_job_def(),
                instance,
                defs.resources["platform"],
                run_config=console_run_config(),
            )
        )
        later = land_window(stage, url, start=cutoff, batch_name="batch-0001", storage_options=opts)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if log:
        log(f"landed {cutoff} to {summary.end}: the customers' outcomes; measuring ...")
    second = _timed(lambda: _run_landing_job(defs, instance))
    return _simulation_report(
        cfg,
        settings,
        first,
        second,
        {
            "scored_at_cutoff": cutoff.isoformat(),
            "history": [summary.start.isoformat(), summary.end.isoformat()],
            "landed_first": before,
            "landed_later": later,
        },
    )


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    """``run()``'s result and its wall seconds."""
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def _run_landing_job(defs: Any, instance: Any) -> Any:
    """The landing job (ingestion → features → drift → realized performance), in process,
    as the landing sensor runs it: the landing files not ingested yet, then the rest."""
    from churn_assets.partitions import run_in_process

    return run_in_process(
        defs.get_job_def("ingest_features_drift"),
        instance,
        defs.resources["platform"],
        only_new=True,
        run_config=console_run_config(),
    )


def _simulation_report(
    cfg: Any,
    settings: Any,
    first: tuple[Any, float],
    second: tuple[Any, float],
    simulation: dict[str, Any],
) -> dict[str, Any]:
    """The report of a simulated horizon: the first run's report (trained, deployed and
    scored at the earlier cut-off) with the second run's ``realized`` figures, and
    ``simulation`` (what landed when, and the second run as ``outcomes_run``)."""
    report = _report(cfg, settings, *first)
    later_report = _report(cfg, settings, *second)
    report["success"] = first[0].success and second[0].success
    report["seconds"] = round(first[1] + second[1], 2)
    report["realized"] = later_report["realized"]
    report["error"] = report["error"] or later_report["error"]
    report["simulation"] = {
        **simulation,
        "outcomes_run": {
            k: later_report[k] for k in ("success", "seconds", "assets", "checks", "error")
        },
    }
    return report


def source_simulation_refusal(cfg: Any, settings: Any) -> str | None:
    """Why a horizon cannot be simulated on the file-based data set ``cfg``, or None: it
    needs transaction labels, and storage without a deployment or scoring snapshots of the
    data set (a model deployed before might have been trained on the very outcomes the
    simulation measures, and the gate could keep it over the simulation's model)."""
    from churn_assets.lib import deployment as dep
    from churn_assets.lib import realized as rz
    from churn_assets.lib.settings import join_url
    from churn_assets.lib.storage import Storage

    if cfg.transactions is None or cfg.labels.source != "transactions":
        return f"data set '{cfg.name}' takes its labels from columns: no horizon to wait for"
    url = join_url(settings.resolved_storage_url, cfg.name)
    storage = Storage(url, settings.storage_options(url))
    if dep.read_current(storage) is not None or rz.list_snapshots(storage):
        return f"{url} already holds a deployment or scores of '{cfg.name}'"
    return None


def run_source_horizon_demo(
    dataset: str, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Simulate time passing on a transaction data set read from files (e.g.
    ``online_retail``, or a user's own config), without touching its files.

    The source is copied into ``<storage>/<data set>/horizon-simulation/`` cut at the
    latest cut-off whose whole horizon the data covers (``last day + 1 - horizon_days``: the
    scores are then measured on a full horizon of real outcomes, and the model trains on as
    much history as that allows); a derived config reads the copy and trains at the
    configured cut-off when its labels end by then, else one horizon earlier
    (:func:`~churn_assets.lib.realized.simulation_cutoffs`). The whole graph runs on the
    copy (trains, deploys, scores at the cut-off and keeps the snapshot), the held-back rows
    land, and the landing job (ingestion → features → drift → realized performance)
    measures the scores. Neither the training labels nor any feature come from the horizon
    the scores are measured on: those transactions are not in storage until the model is
    deployed and the snapshot written. Returns the report of :func:`_simulation_report`."""
    import shutil
    import tempfile
    from pathlib import Path

    import dagster as dg
    import yaml

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.lib import realized as rz
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import get_settings, join_url
    from churn_assets.resources import ChurnPlatform

    cfg = load_dataset_config(dataset)
    settings = get_settings()
    stage = join_url(settings.resolved_storage_url, cfg.name, rz.SIMULATION_DIR)
    stage_opts = settings.storage_options(stage)
    split = rz.split_sources(
        cfg,
        join_url(settings.resolved_landing_url, cfg.name),
        stage,
        storage_options=settings.storage_options(settings.resolved_landing_url),
        stage_options=stage_opts,
    )
    horizon = cfg.labels.horizon_days
    tmp = Path(tempfile.mkdtemp(prefix="churn-horizon-"))
    try:
        derived = tmp / f"{cfg.name}.yaml"
        derived.write_text(yaml.safe_dump(split.config, sort_keys=False))
        path = str(derived)
        defs = build_definitions(ChurnPlatform(dataset=path), ChurnIOManager(dataset=path))
        instance = dg.DagsterInstance.ephemeral()
        if log:
            log(
                f"landed {split.history[0]} to {split.cutoff} of '{cfg.name}' into {stage} "
                f"(the last {horizon} days held back); training at {split.training_cutoff}, "
                "deploying and scoring at the cut-off ..."
            )
        first = _timed(lambda: execute_graph(defs, instance, lambda: ModelSetWorker.start(path)))
        later = rz.land_held_back(split, stage_opts)
        if log:
            log(f"landed {split.cutoff} to {split.history[1]}: the outcomes; measuring ...")
        second = _timed(lambda: _run_landing_job(defs, instance))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _simulation_report(
        cfg,
        settings,
        first,
        second,
        {
            "scored_at_cutoff": split.cutoff.isoformat(),
            "trained_at_cutoff": split.training_cutoff.isoformat(),
            "history": [split.history[0].isoformat(), split.history[1].isoformat()],
            "source_copy": split.landing_url,
            "landed_first": split.landed_first,
            "landed_later": split.held_back,
            "landed_files": later,
        },
    )


def _added_up(before: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a partitioned table so far, with one more partition's: counts add
    up, lists (source files, files moved to quarantine) join, the rest is the latest's."""
    out = {**before, **meta}
    for k, v in meta.items():
        old = before.get(k)
        lists = isinstance(v, list) and isinstance(old, list)
        counts = type(v) is int and type(old) is int and k.endswith(("rows", "files", "row_count"))
        if lists or counts:
            out[k] = old + v
    return out


def _report(
    cfg: Any, settings: Any, result: Any, seconds: float, dataset: str | None = None
) -> dict[str, Any]:
    """The JSON report of one in-process run of the graph (or a job of it) of ``dataset``
    (a name or config path; default the config's name)."""
    from churn_assets.lib.settings import join_url

    assets: dict[str, dict[str, Any]] = {}
    durations: dict[str, float] = {}
    for ev in result.all_events:
        if ev.event_type_value == "STEP_SUCCESS" and ev.step_key:
            durations[ev.step_key] = ev.event_specific_data.duration_ms / 1000.0
    for mat in result.get_asset_materialization_events():
        m = mat.materialization
        key = m.asset_key.to_user_string()
        meta = {k: _plain(v) for k, v in m.metadata.items() if k != "preview"}
        meta = {k: v for k, v in meta.items() if v is not None}
        entry = {
            "rows": meta.get("dagster/row_count"),
            "seconds": durations.get(mat.step_key),
            "metadata": meta,
        }
        if m.partition is not None:  # a partitioned table: its partitions add up
            before = assets.get(key, {"rows": 0, "seconds": 0.0, "partitions": 0, "metadata": {}})
            entry["rows"] = (before["rows"] or 0) + (entry["rows"] or 0)
            entry["seconds"] = (before["seconds"] or 0.0) + (entry["seconds"] or 0.0)
            entry["partitions"] = before["partitions"] + 1
            entry["metadata"] = _added_up(before["metadata"], meta)
        assets[key] = entry
    checks: dict[str, dict[str, Any]] = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION":
            e = ev.event_specific_data
            name = f"{e.asset_key.to_user_string()}:{e.check_name}"
            text = f"{e.partition}: {e.description}" if e.partition else e.description
            if name in checks and e.partition:  # per partition: any failure fails it
                was = checks[name]
                if not e.passed and was["passed"]:
                    checks[name] = {**was, "passed": False, "description": text}
                elif e.passed == was["passed"] and not e.passed:
                    was["description"] = f"{was['description']}; {text}"
                continue
            checks[name] = {"passed": e.passed, "description": text}
            if not e.passed:  # a passed check's severity is Dagster's default, not its own
                checks[name]["severity"] = getattr(e.severity, "value", None)
    error = run_error(result, checks)
    feats = assets.get("customer_features", {}).get("metadata", {})
    models: dict[str, Any] = {}
    for kind, key in (
        ("classification", "classification_models"),
        ("regression", "regression_models"),
    ):
        if key in assets:
            out = result.output_for_node(key)
            if not out.get("applicable", True):
                models[kind] = {"applicable": False, "reason": out["reason"]}
                continue
            models[kind] = {
                k: out[k]
                for k in (
                    "champion",
                    "best_simple",
                    "primary_metric",
                    "champion_metrics",
                    "champion_cv",
                    "threshold",
                    "leaderboard",
                    "selection",
                )
                if k in out
            }
            models[kind]["mlflow_parent_run_id"] = out["mlflow"]["parent_run_id"]
    deployment = None
    if "deployed_model_version" in assets:
        deployment = result.output_for_node("deployed_model_version")
        for kind, role in (("classification", "classifier"), ("regression", "regressor")):
            registered = (deployment.get("registered") or {}).get(role)
            if registered and kind in models:
                models[kind].update(registered)
    realized = None
    if "realized_performance" in assets:
        realized = realized_summary(result.output_for_node("realized_performance"))
    return {
        "dataset": cfg.name,
        "success": result.success,
        "seconds": round(seconds, 2),
        "storage_url": join_url(settings.resolved_storage_url, cfg.name),
        "pid": os.getpid(),
        "assets": assets,
        "checks": checks,
        "features": {
            "rows": feats.get("dagster/row_count"),
            "columns": feats.get("feature_count"),
            "cutoff": feats.get("cutoff"),
            "churn_rate": feats.get("churn_rate"),
            "mean_total_sales": feats.get("mean_total_sales"),
        },
        "models": models,
        "deployment": deployment,
        "serve": _serve_command(dataset or cfg.name)
        if deployment and deployment.get("version")
        else None,
        "realized": realized,
        "error": error,
    }


def _serve_command(dataset: str) -> str:
    """The command that serves ``dataset``'s deployed version over HTTP (the sidecar)."""
    import shlex

    env = [f"CHURN_DATASET={shlex.quote(dataset)}"]
    if os.environ.get("CHURN_STORAGE_URL"):
        env.append(f"CHURN_STORAGE_URL={shlex.quote(os.environ['CHURN_STORAGE_URL'])}")
    return " ".join([*env, "churn", "serve"])


def format_report(report: dict[str, Any]) -> str:
    """A readable multi-line summary of a demo report."""
    lines = [
        f"data set   {report['dataset']}  ({'ok' if report['success'] else 'FAILED'}, "
        f"{report['seconds']:.1f} s)",
        f"storage    {report['storage_url']}",
        "",
        f"{'asset':<24}{'rows':>10}{'seconds':>10}",
    ]
    for key, a in report["assets"].items():
        secs = f"{a['seconds']:.2f}" if a["seconds"] is not None else "-"
        rows = f"{a['rows']:,}" if a["rows"] is not None else "-"
        lines.append(f"{key:<24}{rows:>10}{secs:>10}")
    lines.append("")
    failed = {k: c for k, c in report["checks"].items() if not c["passed"]}
    lines.append(f"checks     {len(report['checks']) - len(failed)}/{len(report['checks'])} passed")
    for k, c in failed.items():
        lines.append(f"  FAILED {k}: {c['description']}")
    f = report["features"]
    if f.get("rows"):
        lines.append(
            f"features   {f['rows']:,} customers x {f['columns']} features, cut-off {f['cutoff']}, "
            f"churn rate {f['churn_rate']:.1%}"
        )
    for kind, m in report.get("models", {}).items():
        if not m.get("applicable", True):
            lines.append(f"{kind:<15}{m['reason']}")
            continue
        metric = m["primary_metric"]
        lines.append(
            f"{kind:<15}champion {m['champion']} (holdout {metric} "
            f"{m['champion_metrics'][metric]:.4f}), {len(m['leaderboard'])} candidates"
        )
    d = report.get("deployment")
    if d:
        verb = "promoted" if d["promoted"] else "kept"
        lines.append(f"deployment {verb} {d['version']}: {d['decision']['reason']}")
    if report.get("serve"):
        lines.append(f"serve      {report['serve']}   (then POST /predict; docs/serving.md)")
    r = report.get("realized")
    if r:
        lines.append(f"realized   {r['status']}: {r['message']}")
        for version, e in (r.get("by_version") or {}).items():
            got, then = e["realized"], e["deployment"]
            pairs = [
                f"{k} {got[k]:.4f} (deployed {then[k]:.4f})"
                for k in ("roc_auc", "pr_auc", "brier", "value_r2")
                if got.get(k) is not None and then.get(k) is not None
            ]
            lines.append(f"  {version} at {e['cutoff']}: " + ", ".join(pairs))
    if report["error"]:
        lines.append(f"error      {report['error']}")
    return "\n".join(lines)
