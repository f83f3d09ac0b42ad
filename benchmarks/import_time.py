"""Code-location import time: `import churn_assets.definitions`, warm, median of 5 runs.

Reported against `import dagster` alone measured in the same run (the floor any Dagster
code location pays). Target: ≤ 2.5 s warm.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time


def measure(stmt: str, runs: int = 5) -> float:
    """Median wall seconds of a fresh interpreter running ``stmt`` (after one warm-up)."""
    subprocess.run([sys.executable, "-c", stmt], check=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ours = measure("import churn_assets.definitions")
    floor = measure("import dagster")
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, churn_assets.definitions as d; d.defs.get_repository_def();"
            "print(','.join(m for m in ('great_expectations','sklearn','mlflow','lightgbm',"
            "'xgboost','evidently') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        json.dumps(
            {
                "definitions_import_s": round(ours, 3),
                "dagster_import_s": round(floor, 3),
                "ratio_vs_dagster": round(ours / floor, 2),
                "target_s": 2.5,
                "meets_target": ours <= 2.5,
                "heavy_modules_loaded": heavy.split(",") if heavy else [],
            }
        )
    )


if __name__ == "__main__":
    main()
