"""Loading the code location must not import the heavy libraries (they load where used)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "great_expectations",
    "sklearn",
    "mlflow",
    "lightgbm",
    "xgboost",
    "evidently",
    "polars",
    "pandas",
)


def test_definitions_do_not_import_heavy_libraries():
    code = (
        "import sys, churn_assets.definitions as d\n"
        "d.defs.get_repository_def()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_serving_package_does_not_import_dagster():
    code = "import sys, churn_serving\nprint('dagster' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
