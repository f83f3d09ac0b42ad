"""Drift benchmark: ``churn_assets.lib.drift.compute_drift`` against Evidently 0.7's
``DataDriftPreset`` on the same data, plus an exactness check of our PSI.

:func:`run` builds a reference and a current frame of ``rows`` rows each, deterministic by
``seed``: 20 numeric columns of mixed distributions (normal, lognormal, exponential, uniform,
Poisson and other integer columns with ties, 0/1, Pareto and Student-t heavy tails, gamma,
beta, zero-inflated, bimodal, with missing values in some), seven of them shifted in the
current frame, and 5 categorical (String) columns: stable, shifted shares, new categories
unseen in the reference, 200 categories, and one with nulls. Both frames go to Parquet in a
temporary directory (not timed). Then each implementation runs in a fresh subprocess
(``python -m benchmarks.drift --worker ...``), so each peak RSS belongs to one implementation:

* **ours**: ``pl.read_parquet`` + ``compute_drift(reference, current, numeric, categorical)``
  (PSI for numeric, L1 and Jensen-Shannon for categorical), then ``render_html``;
* **evidently**: ``pd.read_parquet`` + ``Dataset.from_pandas`` (with an explicit
  ``DataDefinition``) + ``Report([DataDriftPreset(...)], include_tests=True).run(current,
  reference)``, then ``Snapshot.get_html_str``. By default the preset is set to the same
  family of measures as ours (``num_method="psi"`` with our PSI threshold, ``cat_method=
  "jensenshannon"`` with the JS-distance threshold equivalent to our base-2 JS divergence
  threshold: ``sqrt(js * ln 2)``); ``evidently_methods="default"`` keeps Evidently's automatic
  choice (Wasserstein / JS distance at this size) instead.

``seconds`` is the wall time of the drift computation only: after the Parquet files are read
and the libraries imported, up to the finished result (for Evidently, ``Report.run``, which
also prepares its widgets). ``html_seconds`` is the extra time to produce the HTML report.
``peak_rss_mb`` is the worker's ``VmHWM`` (Linux peak resident set, reset at ``exec``) right
after the computation, ``peak_rss_mb_with_html`` after the HTML too.

Finally the parent recomputes the PSI of every numeric column with
:func:`numpy_reference_psi`, a deliberately plain NumPy implementation written independently
of ``churn_assets.lib.drift`` (``np.quantile`` edges, ``np.histogram`` counts, a Python loop
over the bins), and reports the largest absolute difference from the values the timed run
produced (``max_psi_abs_diff``, target <= 1e-9).

Usage: ``python -m benchmarks.drift --rows 1000000 --json`` (or ``churn bench drift``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import peak_rss_mb

TARGETS = {"speedup_min": 20, "max_psi_abs_diff": 1e-9}
IMPLEMENTATIONS = ("ours", "evidently")
_ROOT = Path(__file__).resolve().parent.parent  # the project root (holds ``benchmarks``)

# name -> drifted by construction in the current frame
NUMERIC: dict[str, bool] = {
    "normal": False,
    "normal_shifted": True,
    "lognormal": False,
    "lognormal_wider": True,
    "exponential": False,
    "exponential_slower": True,
    "uniform": False,
    "poisson": False,
    "poisson_higher": True,
    "binary": False,
    "pareto_tail": False,
    "student_t2": False,
    "gamma": False,
    "gamma_nudged": False,
    "beta": False,
    "rounded_normal": False,
    "zero_inflated": False,
    "zero_inflated_fewer_zeros": True,
    "bimodal_reweighted": True,
    "normal_with_nulls": True,
}
CATEGORICAL: dict[str, bool] = {
    "plan": False,
    "channel_shifted": True,
    "country_new_values": True,
    "segment_200": False,
    "device_with_nulls": False,
}


def _log(message: str) -> None:
    print(f"[bench drift] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data
def make_frames(rows: int, seed: int = 42) -> tuple[Any, Any]:
    """The reference and current polars frames (``rows`` rows each), deterministic by seed."""
    import numpy as np
    import polars as pl

    def numeric(rng: np.random.Generator, current: bool) -> dict[str, np.ndarray]:
        n = rows
        c = current

        def zero_inflated(zero_share: float) -> np.ndarray:
            return np.where(rng.random(n) < zero_share, 0.0, rng.lognormal(2.0, 0.8, n))

        def with_nulls(x: np.ndarray, share: float) -> np.ndarray:
            return np.where(rng.random(n) < share, np.nan, x)

        bimodal_weight = 0.6 if c else 0.3
        bimodal = np.where(
            rng.random(n) < bimodal_weight, rng.normal(-2.0, 0.7, n), rng.normal(2.0, 1.0, n)
        )
        return {
            "normal": rng.normal(0.0, 1.0, n),
            "normal_shifted": rng.normal(0.5 if c else 0.0, 1.0, n),
            "lognormal": rng.lognormal(3.0, 1.0, n),
            "lognormal_wider": rng.lognormal(3.0, 1.6 if c else 1.0, n),
            "exponential": rng.exponential(30.0, n),
            "exponential_slower": rng.exponential(60.0 if c else 30.0, n),
            "uniform": rng.uniform(0.0, 100.0, n),
            "poisson": rng.poisson(3.0, n).astype(np.float64),
            "poisson_higher": rng.poisson(4.5 if c else 3.0, n).astype(np.float64),
            "binary": (rng.random(n) < 0.3).astype(np.float64),
            "pareto_tail": rng.pareto(1.5, n) * 100.0,
            "student_t2": rng.standard_t(2.0, n),
            "gamma": rng.gamma(2.0, 2.0, n),
            "gamma_nudged": rng.gamma(2.05 if c else 2.0, 2.0, n),
            "beta": rng.beta(2.0, 5.0, n),
            "rounded_normal": np.round(rng.normal(50.0, 10.0, n)),
            "zero_inflated": zero_inflated(0.6),
            "zero_inflated_fewer_zeros": zero_inflated(0.25 if c else 0.6),
            "bimodal_reweighted": bimodal,
            "normal_with_nulls": with_nulls(rng.normal(0.0, 1.8 if c else 1.0, n), 0.02),
        }

    def categorical(rng: np.random.Generator, current: bool) -> dict[str, pl.Series]:
        n = rows

        def draw(values: list[str], shares: list[float]) -> pl.Series:
            p = np.asarray(shares, dtype=np.float64)
            codes = rng.choice(len(values), size=n, p=p / p.sum())
            return pl.Series(values, dtype=pl.String).gather(codes)

        countries = ["GB", "DE", "FR", "NL", "ES", "IT", "IE", "BE", "AT", "PL", "SE", "DK"]
        country_shares = [40, 12, 10, 8, 6, 5, 4, 4, 3, 3, 3, 2]
        if current:  # two countries the reference never saw, 15% of the rows
            countries = [*countries, "US", "CA"]
            country_shares = [*[s * 0.85 for s in country_shares], 9, 6]
        segments = [f"seg_{i:03d}" for i in range(200)]
        segment_shares = [1.0 / (i + 1) ** 0.8 for i in range(200)]
        device = draw(["mobile", "desktop", "tablet", "<null>"], [55, 35, 5, 5])
        return {
            "plan": draw(["free", "basic", "pro", "business"], [50, 30, 15, 5]),
            "channel_shifted": draw(
                ["web", "app", "store", "phone", "partner", "email"],
                [20, 45, 15, 10, 5, 5] if current else [35, 30, 15, 10, 5, 5],
            ),
            "country_new_values": draw(countries, country_shares),
            "segment_200": draw(segments, segment_shares),
            "device_with_nulls": device.replace("<null>", None),
        }

    frames = []
    for i, current in enumerate((False, True)):
        rng = np.random.default_rng([seed, i])
        num = numeric(rng, current)
        cat = categorical(rng, current)
        frame = pl.DataFrame(num).with_columns(
            pl.col("normal_with_nulls").fill_nan(None),
            *(pl.Series(k, v) for k, v in cat.items()),
        )
        frames.append(frame)
    return frames[0], frames[1]


# --------------------------------------------------------------------------- independent PSI
def numpy_reference_psi(
    reference: Any, current: Any, bins: int = 10, epsilon: float = 1e-4
) -> float:
    """Plain NumPy PSI, written independently of ``churn_assets.lib.drift`` as a check.

    Same definition: drop NaN/inf, edges = unique ``np.quantile(reference, i / bins)``;
    ``np.histogram`` over ``[-inf, u_0, ..., u_max, nextafter(u_max), +inf]``, i.e. the bins
    ``[-inf, u_0)``, ``[u_0, u_1)``, ..., ``[u_max, u_max]``, ``(u_max, +inf]``; shares
    clipped to at least ``epsilon``; ``sum (q - p) ln(q / p)`` in a Python loop.
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    cur = cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return math.nan
    quantiles = np.quantile(ref, [i / bins for i in range(bins + 1)])
    edges = np.unique(quantiles)
    full = np.concatenate(([-np.inf], edges, [np.nextafter(edges[-1], np.inf), np.inf]))
    ref_counts, _ = np.histogram(ref, bins=full)
    cur_counts, _ = np.histogram(cur, bins=full)
    total = 0.0
    for r, c in zip(ref_counts, cur_counts, strict=True):
        p = max(r / ref.size, epsilon)
        q = max(c / cur.size, epsilon)
        total += (q - p) * math.log(q / p)
    return total


# --------------------------------------------------------------------------- one measurement
def measure(
    implementation: str,
    reference_path: str,
    current_path: str,
    evidently_methods: str = "psi",
    html: bool = True,
) -> dict:
    """Read both Parquet files and compute drift with one implementation (in this process)."""
    from churn_assets.lib.drift import DriftThresholds

    thresholds = DriftThresholds()
    numeric, categorical = list(NUMERIC), list(CATEGORICAL)
    out: dict[str, Any] = {}
    if implementation == "ours":
        import polars as pl

        from churn_assets.lib.drift import compute_drift
        from churn_assets.lib.drift_report import render_html

        start = time.perf_counter()
        reference, current = pl.read_parquet(reference_path), pl.read_parquet(current_path)
        read_seconds = time.perf_counter() - start
        baseline = peak_rss_mb()
        start = time.perf_counter()
        result = compute_drift(reference, current, numeric, categorical, thresholds=thresholds)
        seconds = time.perf_counter() - start
        peak = peak_rss_mb()
        out["drifted_columns"] = result.drifted_columns
        out["drifted"] = result.drifted
        out["psi"] = {
            row["column"]: row["value"]
            for row in result.table.filter(pl.col("metric") == "psi").to_dicts()
        }
        if html:
            start = time.perf_counter()
            page = render_html(result, reference, current, "Drift benchmark")
            out["html_seconds"] = round(time.perf_counter() - start, 3)
            out["html_bytes"] = len(page.encode())
    elif implementation == "evidently":
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        if evidently_methods == "psi":
            preset = DataDriftPreset(
                num_method="psi",
                num_threshold=thresholds.psi,
                cat_method="jensenshannon",
                cat_threshold=math.sqrt(thresholds.js * math.log(2)),
            )
        elif evidently_methods == "default":
            preset = DataDriftPreset()
        else:
            raise ValueError(f"unknown evidently_methods {evidently_methods!r}")
        start = time.perf_counter()
        reference, current = pd.read_parquet(reference_path), pd.read_parquet(current_path)
        read_seconds = time.perf_counter() - start
        baseline = peak_rss_mb()
        start = time.perf_counter()
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        summary = snapshot.dict()
        seconds = time.perf_counter() - start
        peak = peak_rss_mb()
        drifted: list[str] = []
        for test in summary["tests"]:
            name = str(test.get("name", ""))
            if name.startswith("Value Drift for column ") and test.get("status") == "FAIL":
                drifted.append(name.removeprefix("Value Drift for column "))
        out["drifted_columns"] = [c for c in [*numeric, *categorical] if c in drifted]
        out["scores"] = {
            m["config"]["column"]: m["value"]
            for m in summary["metrics"]
            if m.get("config", {}).get("type", "").endswith(":ValueDrift")
        }
        out["methods"] = {
            m["config"]["column"]: m["config"].get("method")
            for m in summary["metrics"]
            if m.get("config", {}).get("type", "").endswith(":ValueDrift")
        }
        if html:
            start = time.perf_counter()
            page = snapshot.get_html_str(as_iframe=False)
            out["html_seconds"] = round(time.perf_counter() - start, 3)
            out["html_bytes"] = len(page.encode())
    else:
        raise ValueError(f"unknown implementation {implementation!r}")
    out.update(
        {
            "seconds": round(seconds, 3),
            "peak_rss_mb": round(peak, 1),
            "baseline_rss_mb": round(baseline, 1),  # after imports and reading the data
            "read_seconds": round(read_seconds, 3),
        }
    )
    if html:
        out["peak_rss_mb_with_html"] = round(peak_rss_mb(), 1)
    return out


def _measure_in_subprocess(
    implementation: str, reference: str, current: str, evidently_methods: str, html: bool
) -> dict:
    """Run :func:`measure` in a fresh interpreter; its peak RSS is this implementation's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("DO_NOT_TRACK", "1")  # no Evidently usage telemetry
    cmd = [
        sys.executable, "-m", "benchmarks.drift", "--worker", implementation,
        "--reference", reference, "--current", current,
        "--evidently-methods", evidently_methods,
    ]  # fmt: skip
    if not html:
        cmd.append("--no-html")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{implementation} benchmark worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(elapsed, 3)  # including start-up, imports and reading
    return result


# --------------------------------------------------------------------------- entry point
def run(
    rows: int = 1_000_000,
    seed: int = 42,
    with_evidently: bool = True,
    evidently_methods: str = "psi",
    html: bool = True,
) -> dict:
    """Benchmark drift on ``rows`` x (20 numeric + 5 categorical) columns, ours vs Evidently.

    Returns ``rows``, ``columns``, per implementation ``seconds`` and ``peak_rss_mb`` (plus
    read / HTML times and sizes), ``speedup`` (Evidently seconds / our seconds),
    ``max_psi_abs_diff`` (ours vs :func:`numpy_reference_psi`), the targets, whether they are
    met, and the drifted columns according to each implementation (and by construction).
    Without Evidently, ``speedup`` is ``None`` and only the PSI target is checked.
    """
    if rows < 1:
        raise ValueError("rows must be >= 1")
    import numpy as np
    import polars as pl

    from churn_assets.lib.drift import DriftThresholds

    thresholds = DriftThresholds()
    impls = IMPLEMENTATIONS if with_evidently else ("ours",)
    with tempfile.TemporaryDirectory(prefix="churn-bench-drift-") as tmp:
        start = time.perf_counter()
        reference, current = make_frames(rows, seed)
        ref_path, cur_path = str(Path(tmp, "reference.parquet")), str(Path(tmp, "current.parquet"))
        reference.write_parquet(ref_path)
        current.write_parquet(cur_path)
        elapsed = time.perf_counter() - start
        _log(f"{rows:,} rows x {reference.width} columns ready in {elapsed:.1f} s")
        load_before = os.getloadavg()[0]
        results: dict[str, dict] = {}
        for impl in impls:
            _log(f"measuring {impl} ...")
            results[impl] = _measure_in_subprocess(
                impl, ref_path, cur_path, evidently_methods, html
            )
            _log(f"{impl}: {results[impl]['seconds']:.2f} s, {results[impl]['peak_rss_mb']:.0f} MB")
        load_after = os.getloadavg()[0]

    _log("independent NumPy PSI reference ...")
    ours = results["ours"]
    diffs = {}
    for col in NUMERIC:
        expected = numpy_reference_psi(
            reference[col].cast(pl.Float64).to_numpy(),
            current[col].cast(pl.Float64).to_numpy(),
            thresholds.bins,
            thresholds.epsilon,
        )
        got = ours["psi"].get(col)
        diffs[col] = abs(got - expected) if got is not None else math.inf
    max_diff = max(diffs.values())
    ev = results.get("evidently")
    speedup = round(ev["seconds"] / ours["seconds"], 1) if ev else None
    meets = max_diff <= TARGETS["max_psi_abs_diff"]
    if speedup is not None:
        meets = meets and speedup >= TARGETS["speedup_min"]

    def summary(r: dict) -> dict:
        keys = ("seconds", "peak_rss_mb", "baseline_rss_mb", "read_seconds", "html_seconds",
                "html_bytes", "peak_rss_mb_with_html", "process_seconds")  # fmt: skip
        return {k: r[k] for k in keys if k in r}

    expected_drift = [c for c, d in {**NUMERIC, **CATEGORICAL}.items() if d]
    return {
        "rows": rows,
        "columns": len(NUMERIC) + len(CATEGORICAL),
        "column_kinds": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)},
        "ours": summary(ours),
        "evidently": summary(ev) if ev else None,
        "speedup": speedup,
        "max_psi_abs_diff": float(max_diff),
        "targets": dict(TARGETS),
        "meets_targets": bool(meets),
        "drifted_columns_ours": ours["drifted_columns"],
        "drifted_columns_evidently": ev["drifted_columns"] if ev else None,
        "drifted_columns_by_construction": expected_drift,
        "evidently_methods": (ev["methods"] if ev else None),
        "evidently_config": (
            {
                "psi": "DataDriftPreset(num_method='psi', num_threshold=0.2, "
                "cat_method='jensenshannon', cat_threshold=sqrt(0.1 * ln 2))",
                "default": "DataDriftPreset() (automatic methods)",
            }[evidently_methods]
            if ev
            else None
        ),
        "environment": {
            "cpus": os.cpu_count(),
            "load_average_1m": [round(load_before, 2), round(load_after, 2)],
            "python": platform.python_version(),
            "polars": pl.__version__,
            "numpy": np.__version__,
            "evidently": _version("evidently"),
        },
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.drift", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-evidently", action="store_true", help="measure ours only")
    parser.add_argument(
        "--evidently-methods",
        choices=("psi", "default"),
        default="psi",
        help="psi: PSI / JS like ours (default); default: Evidently's automatic choice",
    )
    parser.add_argument("--no-html", action="store_true", help="do not time the HTML reports")
    parser.add_argument("--json", action="store_true", help="print one line of JSON")
    # Internal: one measurement in this process (used by run()).
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--current", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = measure(
            args.worker, args.reference, args.current, args.evidently_methods, not args.no_html
        )
        print(json.dumps(result))
        return
    result = run(
        rows=args.rows,
        seed=args.seed,
        with_evidently=not args.skip_evidently,
        evidently_methods=args.evidently_methods,
        html=not args.no_html,
    )
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
