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


def test_retraining_steps_fork_from_a_preloaded_server():
    """The retraining job's steps fork from a forkserver that imported the training stack
    once per run (spawned step processes would each import it again: seconds per step)."""
    import importlib

    from churn_assets.jobs import RETRAINING_PRELOAD, retraining_job

    executor = retraining_job.executor_def
    assert executor is not None and executor.name == "retraining_executor"
    resolved = executor.config_schema.resolve_config({})
    assert resolved.success
    start = resolved.value["config"]["start_method"]
    assert list(start) == ["forkserver"]
    assert start["forkserver"]["preload_modules"] == list(RETRAINING_PRELOAD)
    for name in RETRAINING_PRELOAD:  # a renamed module would break every retraining step
        importlib.import_module(name)
