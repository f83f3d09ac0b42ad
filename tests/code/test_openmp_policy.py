"""Model training processes let idle OpenMP threads sleep (see churn_assets/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def _policy_seen_by_a_fresh_process(env: dict[str, str]) -> str:
    code = "import churn_assets, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def test_training_processes_default_to_passive_openmp_threads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen_by_a_fresh_process(env) == "PASSIVE"


def test_an_operator_setting_wins() -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    assert _policy_seen_by_a_fresh_process(env) == "ACTIVE"
