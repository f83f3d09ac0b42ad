"""Feature benchmark: ``build_customer_features`` (polars, lazy) against a pandas baseline.

:func:`run` generates synthetic data once (``churn_assets.lib.generator``), standardises it to
the typed transaction table the ``customer_features`` asset reads (string columns plus the
``is_return`` flag, as ingestion produces it) and then measures each implementation in a
fresh subprocess, so each peak RSS belongs to one implementation only:

* **polars**: ``pl.scan_parquet`` over the part files + ``build_customer_features(None, ...)``;
* **pandas**: ``pd.read_parquet`` + :func:`benchmarks.pandas_features.pandas_customer_features`.

Both use the same cut-off (``default_cutoff`` of the data, 90-day horizon). Wall time covers
reading the Parquet files and computing the feature table (not interpreter start-up or
imports); peak RSS is the child's ``ru_maxrss``. Both results are written to Parquet after the
clock stops and compared (same customers, values within 1e-9) as a sanity check.

Usage: ``python -m benchmarks.features --transactions 10000000 --json`` (or ``churn bench
features``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import peak_rss_mb

TARGETS = {"speedup_min": 5, "polars_peak_rss_mb_max": 3072}
DAYS = 540
HORIZON_DAYS = 90
PILOT_CUSTOMERS = 5_000
IMPLEMENTATIONS = ("polars", "pandas")
_ROOT = Path(__file__).resolve().parent.parent  # the project root (holds ``benchmarks``)


def _log(message: str) -> None:
    print(f"[bench features] {message}", file=sys.stderr, flush=True)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- data
def _standardise(raw_file: Path, out_file: Path) -> int:
    """Raw generator part file -> the typed transaction table features are computed from."""
    import polars as pl

    frame = pl.read_parquet(raw_file).select(
        pl.col("customer_id").cast(pl.String),
        pl.col("timestamp").cast(pl.Datetime("us")),
        pl.col("amount").cast(pl.Float64),
        pl.col("invoice_id").cast(pl.String),
        pl.col("category").cast(pl.String),
        pl.col("country").cast(pl.String),
        ((pl.col("amount") < 0) | pl.col("invoice_id").str.starts_with("C").fill_null(False))
        .fill_null(False)
        .alias("is_return"),
    )
    frame.write_parquet(out_file, compression="zstd")
    return frame.height


def _fallback_generate(out: Path, customers: int, days: int, seed: int) -> int:
    """A small vectorised stand-in for the platform generator (used only if it fails).

    About 50 transactions per customer over ``days`` (gamma-distributed rates, signups before
    and during the period, some churn), lognormal spend, 4% returns (negative amount, ``C``
    invoice prefix), 8 categories and 10 countries (92% home country). Writes standardised
    part files of at most 50,000 customers; returns the number of rows.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cats = np.array(["electronics", "fashion", "home", "beauty", "sports", "toys", "books",
                     "grocery"])  # fmt: skip
    countries = np.array(["GB", "DE", "FR", "NL", "ES", "IT", "US", "CA", "AU", "JP"])
    start = np.datetime64("2024-01-01T00:00:00", "s")
    rows, invoice, chunk = 0, 0, 50_000
    for part, lo in enumerate(range(0, customers, chunk)):
        rng = np.random.default_rng([seed, part])
        n = min(chunk, customers - lo)
        signup = np.where(rng.random(n) < 0.7, 0.0, rng.random(n) * days)
        churn = np.where(rng.random(n) < 0.35, signup + rng.exponential(days, n), np.inf)
        end = np.minimum(churn, days)
        span = np.clip(end - signup, 0.0, None)
        rate = 50.0 / days * rng.gamma(1.6, 1 / 1.6, n) * days / np.maximum(span.mean(), 1.0)
        local = np.repeat(np.arange(n), rng.poisson(rate * span))
        m = local.size
        secs = ((signup[local] + rng.random(m) * span[local]) * 86_400).astype(np.int64)
        order = np.argsort(secs, kind="stable")
        local, secs = local[order], secs[order]
        aov = np.exp(rng.normal(np.log(28.0), 1.0, n))
        amount = np.round(np.maximum(aov[local] * rng.lognormal(-0.1, 0.45, m), 0.5), 2)
        is_return = rng.random(m) < 0.04
        amount = np.where(is_return, -amount, amount)
        home = rng.integers(0, len(countries), n)
        country = np.where(rng.random(m) < 0.92, home[local], rng.integers(0, 10, m))
        numbers = pa.array(np.arange(invoice + 1, invoice + m + 1)).cast(pa.string())
        invoice += m
        prefix = pc.if_else(pa.array(is_return), "C", "")
        ids = pa.array(lo + local + 1).cast(pa.string())
        table = pa.table(
            {
                "customer_id": pc.binary_join_element_wise("C", pc.utf8_lpad(ids, 7, "0"), ""),
                "timestamp": pa.array((start + secs).astype("datetime64[us]")),
                "amount": pa.array(amount),
                "invoice_id": pc.binary_join_element_wise(
                    prefix, pc.utf8_lpad(numbers, 10, "0"), ""
                ),
                "category": pa.array(cats[rng.integers(0, len(cats), m)]),
                "country": pa.array(countries[country]),
                "is_return": pa.array(is_return),
            }
        )
        pq.write_table(table, out / f"part-{part:05d}.parquet", compression="zstd")
        rows += m
    return rows


def prepare_data(root: Path, transactions: int, seed: int = 42) -> dict:
    """Generate about ``transactions`` rows under ``root``; return paths, counts and cut-off.

    Uses ``churn_assets.lib.generator.generate``: a small pilot run measures its transactions
    per customer for this seed, so the customer count lands close to the requested row count.
    If the platform generator cannot be imported or fails, :func:`_fallback_generate` is used
    instead (``generator`` in the result says which one ran, and why).
    """
    import polars as pl

    from churn_assets.lib.features import default_cutoff

    out = root / "transactions"
    out.mkdir()
    try:
        from churn_assets.lib.generator import generate

        pilot_customers = max(1, min(PILOT_CUSTOMERS, transactions // 50))
        pilot = generate(str(root / "pilot"), customers=pilot_customers, days=DAYS, seed=seed)
        per_customer = max(pilot.transactions / pilot_customers, 1.0)
        customers = max(1, round(transactions / per_customer))
        _log(
            f"generator: {per_customer:.1f} transactions per customer over {DAYS} days; "
            f"generating {customers:,} customers"
        )
        raw = root / "raw"
        summary = generate(str(raw), customers=customers, days=DAYS, seed=seed)
        rows = 0
        for rel in summary.files:
            if rel.startswith("transactions/"):
                rows += _standardise(raw / rel, out / Path(rel).name)
                (raw / rel).unlink()
        generator = "churn_assets.lib.generator"
    except Exception as exc:  # the platform generator is missing or broken
        _log(f"churn_assets.lib.generator unusable ({exc!r}); using the fallback generator")
        for stale in out.glob("*"):
            stale.unlink()
        customers = max(1, round(transactions / 50))
        rows = _fallback_generate(out, customers, DAYS, seed)
        generator = f"benchmarks.features fallback ({type(exc).__name__}: {exc})"[:300]
    files = sorted(str(p) for p in out.glob("*.parquet"))
    cutoff = default_cutoff(pl.scan_parquet(files), HORIZON_DAYS)
    return {
        "files": files,
        "transactions": rows,
        "customers": customers,
        "cutoff": cutoff.isoformat(),
        "transactions_per_customer": round(rows / customers, 2),
        "generator": generator,
    }


# --------------------------------------------------------------------------- one measurement
def _params(cutoff: str):
    from churn_assets.lib.features import FeatureParams

    return FeatureParams(cutoff=dt.date.fromisoformat(cutoff), horizon_days=HORIZON_DAYS)


def measure(implementation: str, files: list[str], cutoff: str, out: str | None = None) -> dict:
    """Read the data and build the feature table with one implementation (in this process)."""
    if implementation == "polars":
        import polars as pl

        from churn_assets.lib.features import build_customer_features

        params = _params(cutoff)
        baseline, cpu = peak_rss_mb(), _cpu_seconds()
        start = time.perf_counter()
        result = build_customer_features(None, pl.scan_parquet(files), params)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        rows = result.height
        if out:
            result.write_parquet(out)
    elif implementation == "pandas":
        import pandas as pd

        from benchmarks.pandas_features import pandas_customer_features

        params = _params(cutoff)
        baseline, cpu = peak_rss_mb(), _cpu_seconds()
        start = time.perf_counter()
        result = pandas_customer_features(pd.read_parquet(files), params)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        rows = len(result)
        if out:
            result.to_parquet(out, index=False)
    else:
        raise ValueError(f"unknown implementation {implementation!r}")
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),  # user + system time of all threads
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_rss_mb": round(baseline, 1),  # after imports, before reading the data
        "rows": rows,
    }


def _measure_in_subprocess(implementation: str, files: list[str], cutoff: str, out: str) -> dict:
    """Run :func:`measure` in a fresh interpreter; its peak RSS is this implementation's."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"files": files}, spec)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "benchmarks.features", "--worker", implementation,
        "--files-json", spec.name, "--cutoff", cutoff, "--out", out,
    ]  # fmt: skip
    try:
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        elapsed = time.perf_counter() - start
    finally:
        os.unlink(spec.name)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{implementation} benchmark worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(elapsed, 3)  # including start-up and imports
    return result


def _same_results(polars_out: str, pandas_out: str) -> bool:
    """Both feature tables hold the same customers, columns and values (floats within 1e-9)."""
    import numpy as np
    import polars as pl

    a, b = pl.read_parquet(polars_out), pl.read_parquet(pandas_out)
    if a.columns != b.columns or a["customer_id"].to_list() != b["customer_id"].to_list():
        return False
    for col in a.columns:
        if a[col].dtype.is_numeric():
            x = a[col].cast(pl.Float64).to_numpy()
            y = b[col].cast(pl.Float64).to_numpy()
            if not np.allclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True):
                return False
        elif a[col].cast(pl.String).to_list() != b[col].cast(pl.String).to_list():
            return False
    return True


# --------------------------------------------------------------------------- entry point
def run(
    transactions: int = 10_000_000, with_pandas: bool = True, seed: int = 42, repeat: int = 1
) -> dict:
    """Benchmark the feature build on about ``transactions`` synthetic rows.

    Returns the row and customer counts, per implementation ``seconds`` (best of ``repeat``
    runs, each in a fresh subprocess, the implementations interleaved), ``cpu_seconds`` (of
    that run, all threads) and ``peak_rss_mb`` (largest over the runs), the ``speedup`` (pandas
    seconds / polars seconds), ``memory_ratio`` (pandas MB / polars MB) and ``cpu_ratio``
    (pandas CPU seconds / polars CPU seconds), the targets and whether they are met. Without
    pandas the three ratios are ``None`` and ``meets_targets`` only checks the polars memory
    target.
    """
    if transactions < 1 or repeat < 1:
        raise ValueError("transactions and repeat must be >= 1")
    import pandas as pd
    import polars as pl

    impls = IMPLEMENTATIONS if with_pandas else ("polars",)
    with tempfile.TemporaryDirectory(prefix="churn-bench-features-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        data = prepare_data(root, transactions, seed)
        _log(
            f"{data['transactions']:,} transactions, {data['customers']:,} customers, cut-off "
            f"{data['cutoff']} (data ready in {time.perf_counter() - start:.0f} s)"
        )
        load_before = os.getloadavg()[0]
        outputs = {impl: str(root / f"result-{impl}.parquet") for impl in impls}
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for i in range(repeat):  # interleaved, so a burst of outside load hits both alike
            for impl in impls:
                _log(f"measuring {impl} (run {i + 1}/{repeat}) ...")
                run_ = _measure_in_subprocess(impl, data["files"], data["cutoff"], outputs[impl])
                runs[impl].append(run_)
                _log(f"{impl}: {run_['seconds']:.2f} s, {run_['peak_rss_mb']:.0f} MB")
        results: dict[str, dict] = {}
        for impl, impl_runs in runs.items():
            best = min(impl_runs, key=lambda r: r["seconds"])
            results[impl] = {
                "seconds": best["seconds"],
                "cpu_seconds": best["cpu_seconds"],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in impl_runs),
                "baseline_rss_mb": best["baseline_rss_mb"],
                "process_seconds": best["process_seconds"],
                "runs": [r["seconds"] for r in impl_runs],
            }
        feature_rows = runs["polars"][-1]["rows"]
        match = _same_results(outputs["polars"], outputs["pandas"]) if with_pandas else None

    p = results["polars"]
    q = results.get("pandas")
    speedup = round(q["seconds"] / p["seconds"], 2) if q else None
    memory_ratio = round(q["peak_rss_mb"] / p["peak_rss_mb"], 2) if q else None
    cpu_ratio = round(q["cpu_seconds"] / p["cpu_seconds"], 2) if q else None
    meets = p["peak_rss_mb"] <= TARGETS["polars_peak_rss_mb_max"]
    if speedup is not None:
        meets = meets and speedup >= TARGETS["speedup_min"]
    return {
        "transactions": data["transactions"],
        "customers": data["customers"],
        "feature_rows": feature_rows,
        "cutoff": data["cutoff"],
        "generator": data["generator"],
        "polars": p,
        "pandas": q,
        "speedup": speedup,
        "memory_ratio": memory_ratio,
        "cpu_ratio": cpu_ratio,
        "results_match": match,
        "targets": dict(TARGETS),
        "meets_targets": bool(meets),
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "python": platform.python_version(),
            "polars": pl.__version__,
            "pandas": pd.__version__,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.features", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="runs per implementation")
    parser.add_argument("--skip-pandas", action="store_true", help="measure polars only")
    parser.add_argument("--json", action="store_true", help="print one line of JSON")
    # Internal: one measurement in this process (used by run()).
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--files-json", help=argparse.SUPPRESS)
    parser.add_argument("--cutoff", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        files = json.loads(Path(args.files_json).read_text())["files"]
        print(json.dumps(measure(args.worker, files, args.cutoff, args.out)))
        return
    result = run(
        transactions=args.transactions,
        with_pandas=not args.skip_pandas,
        seed=args.seed,
        repeat=args.repeat,
    )
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
