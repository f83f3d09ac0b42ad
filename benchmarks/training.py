"""Training cost of the model sets: the staged procedure vs the exhaustive one, same data.

``run(customers=N)`` generates N synthetic customers, materializes the graph up to
``training_set`` in a temporary storage directory (not timed against the targets), keeps
that training set as ``$TMPDIR/churn-bench-training/<N>-customers/training_set.parquet``
(the report's ``training_set``, to pass back with ``--training-set``), then trains each
model set with each procedure in a fresh subprocess (so a peak RSS belongs to one
procedure) and reports wall and CPU seconds, peak RSS, per-phase and per-candidate seconds
and the champion's holdout metrics side by side. A bad argument or a failed step ends in a
:class:`BenchmarkError` naming the cause.

    python -m benchmarks.training --customers 10000 --json
    python -m benchmarks.training --training-set path/to/training_set.parquet --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

KINDS = ("classification", "regression")
PROCEDURES = ("staged", "exhaustive")
#: Targets on 2 cores (see the benchmark README): champion ROC-AUC within this of the
#: exhaustive procedure's.
ROC_AUC_TOLERANCE = 0.005
#: Fewest synthetic customers: the training set needs 10 churned and 10 retained customers
#: (about 40 generated customers); 100 leaves a margin.
MIN_CUSTOMERS = 100
#: The label column each model set trains on.
LABELS = {"classification": "churned", "regression": "total_sales"}
SPLITS = ("train", "validation", "holdout")


class BenchmarkError(click.ClickException):
    """Why the benchmark cannot run or a step of it failed, in one line (``churn`` prints
    it as an error without a traceback)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_training_set(customers: int, workdir: Path, seed: int = 42) -> dict[str, Any]:
    """Generate ``customers`` synthetic customers under ``workdir`` and materialize the graph
    up to ``training_set`` there; return its path and the seconds each step took."""
    storage = workdir / "storage"
    env = {**os.environ, "CHURN_STORAGE_URL": str(storage), "CHURN_DATASET": "synthetic"}
    code = (
        "import json, sys, time\n"
        "import dagster as dg\n"
        "from churn_assets.demo import run_error\n"
        "from churn_assets.definitions import build_definitions\n"
        "from churn_assets.io_managers import ChurnIOManager\n"
        "from churn_assets.lib.generator import generate\n"
        "from churn_assets.lib.settings import get_settings, join_url\n"
        "from churn_assets.partitions import run_in_process\n"
        "from churn_assets.resources import ChurnPlatform\n"
        "s = get_settings()\n"
        "url = join_url(s.resolved_landing_url, 'synthetic')\n"
        "t = time.perf_counter()\n"
        f"summary = generate(url, customers={customers}, seed={seed}, "
        "storage_options=s.storage_options(url))\n"
        "gen = time.perf_counter() - t\n"
        "defs = build_definitions(ChurnPlatform(dataset='synthetic'), "
        "ChurnIOManager(dataset='synthetic'))\n"
        "keys = ['raw_customers', 'raw_transactions', 'customer_features', 'training_set']\n"
        "job = defs.resolve_implicit_global_asset_job_def()\n"
        "t = time.perf_counter()\n"
        "res = run_in_process(job, dg.DagsterInstance.ephemeral(), "
        "defs.resources['platform'], [dg.AssetKey(k) for k in keys])\n"
        "if not res.success:\n"
        "    checks = {f'{c.asset_key.to_user_string()}:{c.check_name}':\n"
        "              {'passed': c.passed, 'description': c.description}\n"
        "              for c in res.get_asset_check_evaluations()}\n"
        "    raise RuntimeError(run_error(res, checks))\n"
        "steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in res.all_events\n"
        "         if e.event_type_value == 'STEP_SUCCESS'}\n"
        "print(json.dumps({'transactions': summary.transactions, 'generate_seconds': gen,\n"
        "                  'graph_seconds': time.perf_counter() - t, 'steps': steps}))\n"
    )
    stdout = run_step([sys.executable, "-c", code], "building the training set", env=env)
    info = json.loads(stdout.strip().splitlines()[-1])
    info["training_set"] = str(storage / "synthetic" / "assets" / "training_set.parquet")
    return info


def run_step(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """The stdout of ``cmd``; a :class:`BenchmarkError` carrying the end of its stderr (the
    exception it died of) when it fails."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchmarkError(f"{what} failed (exit status {out.returncode}): {cause(out.stderr)}")
    return out.stdout


def cause(stderr: str, limit: int = 600) -> str:
    """The exception a Python process died of, from its stderr: the lines after the last
    traceback's frames, joined; without a traceback, its last three lines."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if starts:
        tail = lines[starts[-1] + 1 :]
        tail = tail[next((i for i, t in enumerate(tail) if not t[:1].isspace()), len(tail)) :]
    else:
        tail = lines[-3:]
    text = " | ".join(t.strip() for t in tail) or "no error output"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_customers(customers: int) -> None:
    """Refuse a customer count too small to build a training set."""
    if customers < MIN_CUSTOMERS:
        raise BenchmarkError(
            f"--customers {customers}: at least {MIN_CUSTOMERS} needed (the training set needs "
            "10 churned and 10 retained customers)"
        )


def check_training_set(path: str, kinds: tuple[str, ...] = KINDS) -> None:
    """Refuse a ``--training-set`` that is missing, not Parquet, or not a training set (a
    ``split`` column with rows in each split, the labels of ``kinds``)."""
    import polars as pl

    where = f"--training-set {path}"
    if not Path(path).is_file():
        raise BenchmarkError(f"{where}: no such file")
    try:
        columns = pl.read_parquet_schema(path)
    except Exception as e:
        raise BenchmarkError(
            f"{where}: not a readable Parquet file ({type(e).__name__}: {e})"
        ) from e
    needed = ["split", *(LABELS[k] for k in kinds)]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise BenchmarkError(
            f"{where}: not a training set (no column {', '.join(map(repr, missing))}); pass a "
            "training_set.parquet, e.g. the training_set path an earlier run reported"
        )
    counts = pl.read_parquet(path, columns=["split"])["split"].value_counts()
    present = dict(zip(counts["split"].to_list(), counts["count"].to_list(), strict=True))
    empty = [s for s in SPLITS if not present.get(s)]
    if empty:
        raise BenchmarkError(f"{where}: no rows in split(s) {', '.join(empty)}")


def cache_dir(customers: int) -> Path:
    """Where the training set generated for ``customers`` customers is kept."""
    return Path(tempfile.gettempdir()) / "churn-bench-training" / f"{customers}-customers"


def keep_training_set(path: str, customers: int) -> str:
    """Copy a generated training set to :func:`cache_dir` (replacing an earlier one)."""
    target = cache_dir(customers) / "training_set.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.partial")
    partial.write_bytes(Path(path).read_bytes())
    partial.replace(target)
    return str(target)


def train_worker(training_set: str, kind: str, procedure: str) -> dict[str, Any]:
    """Train one model set with one procedure in this process; return its measurements."""
    import polars as pl

    from benchmarks.measure import peak_rss_mb
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import to_splits
    from churn_assets.lib.model_sets import train_model_set

    cfg = load_dataset_config("synthetic")
    splits = to_splits(pl.read_parquet(training_set))
    cpu0 = _cpu_seconds()
    started = time.perf_counter()
    result, _ = train_model_set(kind, cfg, splits, policy=procedure)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu0
    champ = result.champion_result
    keep = ("roc_auc", "pr_auc", "f1", "brier", "r2", "r2_gain_vs_naive", "rmse", "mae")
    return {
        "kind": kind,
        "procedure": procedure,
        "rows": {name: len(frame) for name, frame in splits.items()},
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "champion": result.champion,
        "holdout": {k: v for k, v in champ.metrics.items() if k in keep},
        "cv": champ.cv,
        "phases": result.selection.get("seconds", {}),
        "selection": {
            k: result.selection.get(k)
            for k in ("rule", "finalists", "excluded", "refit", "fallback_to_naive")
        },
        "candidates": {
            c.name: {
                "train_seconds": round(c.train_seconds, 3),
                "cv_seconds": round(c.cv_seconds, 3),
                "fit_rows": c.fit_rows,
                "stage": c.stage,
                "holdout": c.metrics.get(result.primary_metric),
            }
            for c in result.candidates
        },
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_worker(training_set: str, kind: str, procedure: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.training", "--worker"]
    cmd += ["--training-set", training_set, "--kind", kind, "--procedure", procedure]
    started = time.perf_counter()
    stdout = run_step(cmd, f"{kind} training ({procedure})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def compare(staged: dict[str, Any], exhaustive: dict[str, Any]) -> dict[str, Any]:
    """Speed-up, CPU and memory ratios and the champion's holdout difference."""
    out: dict[str, Any] = {
        "speedup": exhaustive["seconds"] / staged["seconds"],
        "cpu_ratio": exhaustive["cpu_seconds"] / staged["cpu_seconds"],
        "memory_ratio": exhaustive["peak_rss_mb"] / staged["peak_rss_mb"],
    }
    for metric in ("roc_auc", "r2", "r2_gain_vs_naive"):
        if metric in staged["holdout"] and metric in exhaustive["holdout"]:
            out[f"{metric}_delta"] = staged["holdout"][metric] - exhaustive["holdout"][metric]
    if "roc_auc_delta" in out:
        out["roc_auc_within_tolerance"] = out["roc_auc_delta"] >= -ROC_AUC_TOLERANCE
    return out


def run(
    customers: int = 10_000,
    *,
    training_set: str | None = None,
    procedures: tuple[str, ...] = PROCEDURES,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """The benchmark (see the module docstring); ``training_set`` skips data generation."""
    if training_set is None:
        check_customers(customers)
    else:
        check_training_set(training_set, kinds)
    report: dict[str, Any] = {"customers": customers, "environment": _environment()}
    if training_set is None:
        data = _generate(customers)
        training_set = data.pop("training_set")
        report["data"] = data
    else:
        report["customers"] = None
    report["training_set"] = training_set
    for kind in kinds:
        block: dict[str, Any] = {}
        for procedure in procedures:
            _log(f"{kind}: {procedure} procedure ...")
            block[procedure] = _run_worker(training_set, kind, procedure)
        if set(PROCEDURES) <= set(block):
            block["comparison"] = compare(block["staged"], block["exhaustive"])
        report[kind] = block
    staged = [report[k]["staged"] for k in kinds if "staged" in report[k]]
    report["staged_total"] = {
        "seconds": sum(r["seconds"] for r in staged),
        "cpu_seconds": sum(r["cpu_seconds"] for r in staged),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in staged), default=0.0),
    }
    report["environment"]["load_average_after"] = list(os.getloadavg())
    return report


def _generate(customers: int) -> dict[str, Any]:
    """:func:`build_training_set` in a temporary directory, its training set kept."""
    _log(f"generating {customers:,} customers and building the training set ...")
    with tempfile.TemporaryDirectory(prefix="churn-bench-training-") as tmp:
        data = build_training_set(customers, Path(tmp))
        data["training_set"] = keep_training_set(data["training_set"], customers)
    return data


def _environment() -> dict[str, Any]:
    from churn_assets.lib.models._common import available_cpus, training_threads

    return {
        "cpus": available_cpus(),
        "training_threads": training_threads(),
        "load_average_before": list(os.getloadavg()),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--training-set", default=None)
    parser.add_argument("--procedure", choices=PROCEDURES, action="append")
    parser.add_argument("--kind", choices=KINDS, action="append")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        result = train_worker(args.training_set, args.kind[0], args.procedure[0])
        print(json.dumps(result, default=float))
        return
    try:
        report = run(
            args.customers,
            training_set=args.training_set,
            procedures=tuple(args.procedure or PROCEDURES),
            kinds=tuple(args.kind or KINDS),
        )
    except BenchmarkError as e:
        parser.exit(1, f"error: {e.message}\n")
    print(json.dumps(report, indent=None if args.json else 2, default=float))


if __name__ == "__main__":
    main()
