"""Selection helpers and the thread budget of the model sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from churn_assets.lib.models import _common
from churn_assets.lib.models.selection import (
    EXHAUSTIVE,
    STAGED,
    SelectionPolicy,
    combined_score,
    rank,
    resolve_policy,
    subsample_positions,
)


def test_training_threads_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_common.THREADS_ENV, "3")
    assert _common.training_threads() == 3
    assert _common.resolve_n_jobs(None, 50_000) == 3  # large data: the whole budget
    assert _common.resolve_n_jobs(None, 5_000) == 1  # small data: one thread per model
    assert _common.resolve_n_jobs(8, 50_000) == 3  # an explicit count is capped
    assert _common.forest_n_jobs(None, 5_000) == 3
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv(_common.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=_common.THREADS_ENV):
            _common.training_threads()


def test_training_threads_default_to_available_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_common.THREADS_ENV, raising=False)
    cpus = _common.available_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    assert _common.training_threads() == cpus


def test_cgroup_quota(tmp_path: Path) -> None:
    assert _common.cgroup_cpu_limit(str(tmp_path)) is None  # no cgroup files
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _common.cgroup_cpu_limit(str(tmp_path)) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _common.cgroup_cpu_limit(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _common.cgroup_cpu_limit(str(tmp_path)) == 4.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert _common.cgroup_cpu_limit(str(tmp_path)) is None


def test_run_parallel_keeps_order() -> None:
    tasks = [lambda i=i: i * i for i in range(7)]
    assert _common.run_parallel(tasks, workers=3, threads_each=1) == [i * i for i in range(7)]
    assert _common.run_parallel(tasks, workers=1, threads_each=1) == [i * i for i in range(7)]


def test_forest_fraction() -> None:
    assert _common.forest_fraction(10_000, 20_000) is None
    assert _common.forest_fraction(100_000, 20_000) == 0.2
    assert _common.forest_fraction(100_000, None) is None
    assert _common.forest_fraction(None, 20_000) is None


def test_subsample_is_stratified_seeded_and_sorted() -> None:
    y = np.array([1] * 300 + [0] * 700)
    assert subsample_positions(len(y), 2_000, seed=1, stratify=y) is None
    pos = subsample_positions(len(y), 200, seed=1, stratify=y)
    assert pos is not None and len(pos) == 200 and np.all(np.diff(pos) > 0)
    assert y[pos].sum() == 60  # the class shares are kept
    assert np.array_equal(pos, subsample_positions(len(y), 200, seed=1, stratify=y))
    assert not np.array_equal(pos, subsample_positions(len(y), 200, seed=2, stratify=y))


def test_combined_score_and_rank() -> None:
    assert combined_score(0.8, 0.9) == pytest.approx(0.85)
    assert combined_score(0.8, None) == 0.8 and combined_score(0.8, float("nan")) == 0.8
    scores = {"b": 0.7, "a": 0.7, "c": float("nan"), "d": 0.9}
    assert rank(scores, greater_is_better=True) == ["d", "a", "b", "c"]
    assert rank({"x": 2.0, "y": 1.0}, greater_is_better=False) == ["y", "x"]


def test_policies() -> None:
    assert resolve_policy(None) is STAGED and resolve_policy("exhaustive") is EXHAUSTIVE
    assert STAGED.staged and STAGED.refit and not EXHAUSTIVE.refit
    assert EXHAUSTIVE.screen_max_rows is None and EXHAUSTIVE.forest_max_samples is None
    with pytest.raises(ValueError, match="procedure"):
        resolve_policy("greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finalists"):
        SelectionPolicy(finalists=0)
