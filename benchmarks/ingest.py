"""``churn bench ingest``: a new hourly file on a long history, incrementally.

Setup (cached under ``$TMPDIR/churn-bench-ingest/<customers>-customers``, not measured):
``churn seed``'s generator writes the synthetic data set (``HISTORY_CUSTOMERS`` customers,
≥ 10M transaction lines); lines from noon of the last day on are dropped, so the history
ends at noon. The hourly file holds ``FILE_LINES`` lines drawn (seeded) from the history's
last 30 days, re-timed to 12:00-13:00 of that last day, as new orders. The history is
ingested and reduced to the incremental state (:mod:`churn_assets.lib.incremental`) once.

Measured, each in a fresh subprocess (``python -m benchmarks.ingest --worker ...``):

- ``incremental``: the file through ingestion (read and type, row rules, the Great
  Expectations suite, quarantine, the validated lines written once) and the current features
  (:func:`~churn_assets.lib.incremental.add_batch` on a copy of the history's state);
- ``file_alone``: the same file, the same steps, into an empty state (with the customer rows
  of the file's customers);
- ``next_day`` (extra row): the same file re-timed to the next day, so the cut-off moves and
  every customer is recomputed from the compact parts;
- ``full_rebuild`` (reference): what the graph did before ``raw_transactions`` was
  partitioned by landing file, every landing file
  ingested again and the current features built from every line.

The same through the graph, as the landing sensor runs it (in process,
:func:`churn_assets.partitions.execute_in_process`), after a warm-up run on a small data set:

- ``graph_hourly``: the file lands beside the history, which went through
  ``ingest_features_drift`` once (cached: its partitions and the ``current_features``
  state); only a transaction file changed, so the job is ``transactions_features_drift``:
  the file's ``raw_transactions`` partition, ``current_features``, ``drift_report`` and
  ``realized_performance``;
- ``graph_file_alone``: the same job for the same file into storage that holds the
  customer table alone (``raw_customers`` materialized first, not measured): no history.

Each row also gives ``read_table_seconds``: reading the whole current table afterwards (the
last full recompute with the day's batches applied), which a consumer pays, not the batch.

``ratio`` = ``incremental_seconds`` / ``file_alone_seconds``, and ``graph.ratio`` the same
for the graph rows; each of these four rows is the median of ``REPEATS`` (3) measurements
(``seconds_samples`` lists them). Targets (2 cores), for both: ``ratio`` ≤ 2 and
``incremental_seconds`` ≤ 10.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HISTORY_CUSTOMERS = 210_000  # ~10.4M transaction lines (the generator: ~50 per customer)
FILE_LINES = 50_000
DATASET = "synthetic"
SEED = 42
#: Measurements per ratio row (``file_alone``, ``incremental`` and the graph rows): the median
#: counts.
REPEATS = 3
TARGETS = {"ratio_max": 2.0, "incremental_seconds_max": 10.0, "history_transactions_min": 10e6}


def _log(msg: str) -> None:
    print(f"[bench ingest] {msg}", file=sys.stderr, flush=True)


def _noon(ts: dt.datetime) -> dt.datetime:
    return ts.replace(hour=12, minute=0, second=0, microsecond=0)


def prepare(customers: int = HISTORY_CUSTOMERS) -> Path:
    """The cached setup (see the module doc); returns its directory."""
    import numpy as np
    import polars as pl

    from churn_assets.lib import incremental
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import reference_categories, usable
    from churn_assets.lib.generator import generate
    from churn_assets.lib.ingest import ingest_customers, ingest_transactions
    from churn_assets.lib.storage import Storage

    root = Path(tempfile.gettempdir()) / "churn-bench-ingest" / f"{customers}-customers"
    done = root / "setup.json"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing" / DATASET
    _log(f"generating {customers:,} customers in {landing} (once)")
    generate(str(landing), customers=customers, seed=SEED)
    parts = sorted((landing / "transactions").glob("*.parquet"))
    last = max(pl.scan_parquet(p).select(pl.col("timestamp").max()).collect().item() for p in parts)
    noon = _noon(last)
    history_lines = 0
    samples = []
    rng = np.random.default_rng(SEED)
    for p in parts:  # keep the history before noon of the last day
        frame = pl.read_parquet(p)
        frame = frame.filter(pl.col("timestamp") < noon)
        frame.write_parquet(p, compression="zstd")
        history_lines += frame.height
        recent = frame.filter(pl.col("timestamp") >= noon - dt.timedelta(days=30))
        samples.append(recent)
    pool = pl.concat(samples)
    draw = rng.choice(pool.height, size=FILE_LINES, replace=pool.height < FILE_LINES)
    picks = pool[np.sort(draw).tolist()]
    offsets = np.sort(rng.integers(0, 3600 * 10**6, size=FILE_LINES))
    hourly = picks.with_columns(
        (pl.lit(noon) + pl.Series(offsets).cast(pl.Duration("us"))).alias("timestamp"),
        pl.Series([f"H{i // 3:07d}" for i in range(FILE_LINES)]).alias("invoice_id"),
    ).select(pool.columns)
    hourly_dir = root / "file-landing" / DATASET / "transactions"
    hourly_dir.mkdir(parents=True)
    hourly.write_parquet(hourly_dir / "hour-12.parquet", compression="zstd")
    next_day = hourly.with_columns(pl.col("timestamp") + dt.timedelta(days=1))
    next_dir = root / "next-day-landing" / DATASET / "transactions"
    next_dir.mkdir(parents=True)
    next_day.write_parquet(next_dir / "hour-12.parquet", compression="zstd")

    _log(f"ingesting the history ({history_lines:,} lines) and building its state (once)")
    cfg = load_dataset_config(DATASET)
    customers_table, _ = usable(ingest_customers(cfg, str(landing)).frame)
    lines, _ = usable(ingest_transactions(cfg, str(landing)).frame)
    customers_table.write_parquet(root / "customers.parquet")
    categories = reference_categories(cfg, lines)
    state = Storage(str(root / "state"))
    incremental.add_batch(
        state,
        "history",
        lines,
        customers_table,
        categories,
        horizon_days=cfg.labels.horizon_days,
        naive_lookback_days=cfg.naive_lookback_days,
    )
    done.write_text(
        json.dumps(
            {
                "history_transactions": history_lines,
                "file_transactions": FILE_LINES,
                "categories": list(categories),
                "history_until": noon.isoformat(),
            }
        )
    )
    return root


def _ingest_file(cfg: Any, landing: Path, storage: Any, batch: str) -> tuple[Any, dict]:
    """Read, type, screen and validate one landing file; quarantine its bad rows and write
    the validated lines once. Returns the usable lines and per-phase seconds."""
    from churn_assets.lib.feature_sets import INTERNAL, usable
    from churn_assets.lib.ingest import ingest_transactions
    from churn_assets.lib.quality import validate
    from churn_assets.lib.quarantine import quarantine, screen
    from churn_assets.lib.rules import transaction_rules

    phases: dict[str, float] = {}
    t = time.perf_counter()
    res = ingest_transactions(cfg, str(landing))
    phases["read"] = time.perf_counter() - t
    t = time.perf_counter()
    rules = transaction_rules(cfg)
    frame, bad = screen(res.frame, rules)
    report = validate(frame.drop(list(INTERNAL)), rules, "raw_transactions")
    if not report.blocking_success:
        raise RuntimeError("the hourly file failed a blocking check")
    phases["validate"] = time.perf_counter() - t
    t = time.perf_counter()
    quarantine(storage, res, bad, batch)
    storage.write_parquet(f"raw_transactions/{batch}.parquet", frame)
    phases["write"] = time.perf_counter() - t
    lines, _ = usable(frame)
    return lines, phases


def _warm_up(cfg: Any, root: Path) -> None:
    """What a running code server has done before a file arrives: the libraries imported and
    a first validation run (Great Expectations builds its context and suite classes once per
    process, ~6 s). Not measured."""
    from churn_assets.lib.feature_sets import INTERNAL
    from churn_assets.lib.ingest import ingest_transactions
    from churn_assets.lib.quality import validate
    from churn_assets.lib.quarantine import screen
    from churn_assets.lib.rules import transaction_rules

    rules = transaction_rules(cfg)
    sample = ingest_transactions(cfg, str(root / "file-landing" / DATASET)).frame.head(100)
    validate(screen(sample, rules)[0].drop(list(INTERNAL)), rules, "raw_transactions")


#: The landing sensor's job for a transaction file alone (the hourly row), and for a file
#: with the customer table (the file-alone row: the customers land with it).
GRAPH_JOB = "transactions_features_drift"
FIRST_JOB = "ingest_features_drift"
HOURLY_FILE = "hour-12.parquet"


def _graph_landing(work: Path, root: Path, history: bool) -> Path:
    """A landing zone of symlinks: the customer table, the history's transaction files
    (with ``history``) and the hourly file."""
    landing = work / "landing"
    tx = landing / DATASET / "transactions"
    tx.mkdir(parents=True)
    (landing / DATASET / "customers").symlink_to(root / "landing" / DATASET / "customers")
    if history:
        for part in sorted((root / "landing" / DATASET / "transactions").iterdir()):
            (tx / part.name).symlink_to(part)
    (tx / HOURLY_FILE).symlink_to(root / "file-landing" / DATASET / "transactions" / HOURLY_FILE)
    return landing


def _graph_run(
    landing: Path,
    storage: Path,
    partition_keys: list[str] | None = None,
    job: str = FIRST_JOB,
    selection: list[str] | None = None,
) -> Any:
    """A landing job in this process on ``landing`` into ``storage``; fails loudly."""
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.partitions import run_in_process
    from churn_assets.resources import ChurnPlatform

    platform = ChurnPlatform(dataset=DATASET, storage_url=str(storage), landing_url=str(landing))
    defs = build_definitions(platform, ChurnIOManager(dataset=DATASET, storage_url=str(storage)))
    result = run_in_process(
        defs.get_job_def(job),
        dg.DagsterInstance.ephemeral(),
        platform,
        [dg.AssetKey(k) for k in selection] if selection else None,
        partition_keys=partition_keys,
    )
    if not result.success:
        raise RuntimeError(f"{job} failed on {landing}")
    return result


def prepare_graph(root: Path) -> Path:
    """The history through the landing job once (cached next to the setup): its
    ``raw_transactions`` partitions and the ``current_features`` state."""
    storage = root / "graph-storage"
    done = root / "graph.json"
    if done.exists():
        return storage
    shutil.rmtree(storage, ignore_errors=True)
    landing = root / "graph-landing"
    shutil.rmtree(landing, ignore_errors=True)
    (landing / DATASET / "transactions").mkdir(parents=True)
    (landing / DATASET / "customers").symlink_to(root / "landing" / DATASET / "customers")
    for part in sorted((root / "landing" / DATASET / "transactions").iterdir()):
        (landing / DATASET / "transactions" / part.name).symlink_to(part)
    _log("running the landing job on the history (once)")
    started = time.perf_counter()
    _graph_run(landing, storage)
    done.write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    return storage


def _graph_warm_up(work: Path) -> None:
    """The landing job once on 300 generated customers: imports, the first validation."""
    from churn_assets.lib.generator import generate

    landing = work / "warm-landing"
    generate(str(landing / DATASET), customers=300, seed=SEED)
    _graph_run(landing, work / "warm-storage")


def graph_worker(mode: str, root: Path) -> dict[str, Any]:
    """One graph row (``graph_hourly`` or ``graph_file_alone``); runs in its own process."""
    from benchmarks.measure import peak_rss_mb

    work = Path(tempfile.mkdtemp(prefix=f"churn-bench-ingest-{mode}-"))
    try:
        hourly = mode == "graph_hourly"
        landing = _graph_landing(work, root, history=hourly)
        storage = work / "storage"
        if hourly:  # not measured
            shutil.copytree(root / "graph-storage", storage)
        else:  # the customer table, as after an earlier landing run (not measured)
            _graph_run(landing, storage, selection=["raw_customers"])
        _graph_warm_up(work)
        started = time.perf_counter()
        # as the sensor runs it: only a transaction file changed
        result = _graph_run(landing, storage, [HOURLY_FILE], GRAPH_JOB)
        seconds = time.perf_counter() - started
        steps: dict[str, float] = {}
        for e in result.all_events:
            if e.event_type_value == "STEP_SUCCESS":
                steps[e.step_key] = round(e.event_specific_data.duration_ms / 1000, 3)
        partitions = sorted(
            m.materialization.partition
            for m in result.get_asset_materialization_events()
            if m.materialization.partition
        )
        return {
            "mode": mode,
            "seconds": round(seconds, 3),
            "steps": steps,
            "partitions_ingested": partitions,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def worker(mode: str, root: Path) -> dict[str, Any]:
    """One measurement (see the module doc); runs in its own process."""
    import polars as pl

    from benchmarks.measure import peak_rss_mb
    from churn_assets.lib import incremental
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.storage import Storage

    if mode.startswith("graph_"):
        return graph_worker(mode, root)
    setup = json.loads((root / "setup.json").read_text())
    cfg = load_dataset_config(DATASET)
    categories = tuple(setup["categories"])
    work = Path(tempfile.mkdtemp(prefix=f"churn-bench-ingest-{mode}-"))
    try:
        if mode in ("incremental", "next_day"):
            shutil.copytree(root / "state", work / "state")  # not measured
        out: dict[str, Any] = {"mode": mode}
        _warm_up(cfg, root)
        started = time.perf_counter()
        if mode == "full_rebuild":
            from churn_assets.lib.feature_sets import INTERNAL, features_at, scoring_cutoff, usable
            from churn_assets.lib.ingest import ingest_customers, ingest_transactions
            from churn_assets.lib.quality import validate
            from churn_assets.lib.quarantine import screen
            from churn_assets.lib.rules import transaction_rules

            everything = work / "landing" / DATASET
            everything.mkdir(parents=True)
            for sub in ("customers", "transactions"):
                (everything / sub).symlink_to(root / "landing" / DATASET / sub)
            customers, _ = usable(ingest_customers(cfg, str(everything)).frame)
            history = ingest_transactions(cfg, str(everything)).frame
            hourly = ingest_transactions(cfg, str(root / "file-landing" / DATASET)).frame
            rules = transaction_rules(cfg)
            screened, _ = screen(pl.concat([history, hourly]), rules)
            validate(screened.drop(list(INTERNAL)), rules, "raw_transactions")
            lines, _ = usable(screened)
            table = features_at(
                cfg,
                customers,
                lines,
                scoring_cutoff(lines),
                with_labels=False,
                categories=categories,
            )
            out["customers_total"] = table.height
        else:
            landing = root / ("next-day-landing" if mode == "next_day" else "file-landing")
            storage = Storage(str(work / "storage"))
            lines, phases = _ingest_file(cfg, landing / DATASET, storage, "hour-12")
            t = time.perf_counter()
            customers = pl.read_parquet(root / "customers.parquet")
            if mode == "file_alone":
                ids = lines["customer_id"].unique().implode()
                customers = customers.filter(pl.col("customer_id").is_in(ids))
            update = incremental.add_batch(
                Storage(str(work / "state")),
                "hour-12",
                lines,
                customers,
                categories,
                horizon_days=cfg.labels.horizon_days,
                naive_lookback_days=cfg.naive_lookback_days,
            )
            phases["features"] = time.perf_counter() - t
            out["phases"] = {k: round(v, 3) for k, v in phases.items()}
            out.update(update.to_dict())
        out["seconds"] = round(time.perf_counter() - started, 3)
        if mode != "full_rebuild":  # what a reader of the whole table pays (not in seconds)
            t = time.perf_counter()
            out["read_table_rows"] = incremental.read_table(Storage(str(work / "state"))).height
            out["read_table_seconds"] = round(time.perf_counter() - t, 3)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(mode: str, root: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.ingest", "--worker", mode, "--root", str(root)]
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=str(Path(__file__).parent.parent)
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_of(mode: str, root: Path, repeats: int) -> dict[str, Any]:
    """The row of the median of ``repeats`` measurements of ``mode`` (each in a fresh
    process), with every measurement's seconds in ``seconds_samples``: the ratio rows take
    fractions of a second, and one measurement moved the ratio by half its target."""
    samples = sorted((_measure(mode, root) for _ in range(repeats)), key=lambda r: r["seconds"])
    row = samples[len(samples) // 2]
    row["seconds_samples"] = [r["seconds"] for r in samples]
    return row


def run(customers: int = HISTORY_CUSTOMERS, *, full_reference: bool = True) -> dict[str, Any]:
    """Every measurement (see the module doc) as one JSON-able report."""
    root = prepare(customers)
    prepare_graph(root)
    setup = json.loads((root / "setup.json").read_text())
    load_before = round(os.getloadavg()[0], 2)
    rows = {}
    for mode in ("file_alone", "incremental", "next_day", "graph_file_alone", "graph_hourly"):
        _log(f"measuring {mode}")
        rows[mode] = _median_of(mode, root, 1 if mode == "next_day" else REPEATS)
    if full_reference:
        _log("measuring full_rebuild (every landing file again)")
        rows["full_rebuild"] = _measure("full_rebuild", root)
    inc, alone = rows["incremental"]["seconds"], rows["file_alone"]["seconds"]
    report = {
        "history_transactions": setup["history_transactions"],
        "file_transactions": setup["file_transactions"],
        "incremental_seconds": inc,
        "file_alone_seconds": alone,
        "ratio": round(inc / alone, 3),
        "peak_rss_mb": rows["incremental"]["peak_rss_mb"],
        "rows": rows,
        "targets": TARGETS,
        "load_average_before": load_before,
        "cpus": os.cpu_count(),
    }
    g_inc, g_alone = rows["graph_hourly"]["seconds"], rows["graph_file_alone"]["seconds"]
    report["graph"] = {
        "job": GRAPH_JOB,
        "incremental_seconds": g_inc,
        "file_alone_seconds": g_alone,
        "ratio": round(g_inc / g_alone, 3),
        "peak_rss_mb": rows["graph_hourly"]["peak_rss_mb"],
    }
    if "full_rebuild" in rows:
        report["full_rebuild_over_incremental"] = round(rows["full_rebuild"]["seconds"] / inc, 1)
    report["meets"] = {
        "ratio": report["ratio"] <= TARGETS["ratio_max"],
        "incremental_seconds": inc <= TARGETS["incremental_seconds_max"],
        "graph_ratio": report["graph"]["ratio"] <= TARGETS["ratio_max"],
        "graph_incremental_seconds": g_inc <= TARGETS["incremental_seconds_max"],
        "history_transactions": report["history_transactions"]
        >= TARGETS["history_transactions_min"],
    }
    report["meets_targets"] = all(report["meets"].values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worker",
        choices=[
            "incremental",
            "file_alone",
            "next_day",
            "full_rebuild",
            "graph_hourly",
            "graph_file_alone",
        ],
    )
    parser.add_argument("--root", type=Path)
    parser.add_argument("--customers", type=int, default=HISTORY_CUSTOMERS)
    parser.add_argument("--no-full-reference", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root)))
        return
    print(json.dumps(run(args.customers, full_reference=not args.no_full_reference)))


if __name__ == "__main__":
    main()
