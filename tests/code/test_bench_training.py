"""`churn bench training`: a bad argument or a failed step ends in one line naming the cause,
and the training set a run generates outlives it."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from benchmarks import training
from churn_assets.cli import main


def bench(*args: str):
    return CliRunner().invoke(main, ["bench", "training", *args])


def training_frame(churned: list[int]) -> pl.DataFrame:
    n = len(churned)
    splits = ["train", "validation", "holdout"]
    return pl.DataFrame(
        {
            "customer_id": [str(i) for i in range(n)],
            "recency_days": [float(i) for i in range(n)],
            "split": [splits[i % 3] for i in range(n)],
            "churned": churned,
            "total_sales": [float(i) for i in range(n)],
        }
    )


@pytest.mark.parametrize("customers", ["0", "-5", str(training.MIN_CUSTOMERS - 1)])
def test_too_few_customers_is_a_usage_error(customers):
    done = bench("--customers", customers)
    assert done.exit_code == 2
    assert f"{customers} is not in the range x>={training.MIN_CUSTOMERS}" in done.output
    assert "Traceback" not in done.output


def test_a_missing_training_set_is_a_usage_error():
    done = bench("--training-set", "/nonexistent.parquet")
    assert done.exit_code == 2
    assert "'/nonexistent.parquet' does not exist" in done.output


def test_a_table_that_is_not_a_training_set_is_named(tmp_path):
    features = tmp_path / "customer_features.parquet"
    training_frame([0, 1] * 6).drop("split").write_parquet(features)
    done = bench("--training-set", str(features))
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        f"Error: --training-set {features}: not a training set (no column 'split'); pass a "
        "training_set.parquet, e.g. the training_set path an earlier run reported"
    ]


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    text = tmp_path / "notes.parquet"
    text.write_text("customer_id,churned\n1,0\n")
    done = bench("--training-set", str(text))
    assert done.exit_code == 1
    assert "not a readable Parquet file" in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_an_empty_split_is_named(tmp_path):
    path = tmp_path / "training_set.parquet"
    training_frame([0, 1] * 6).filter(pl.col("split") != "holdout").write_parquet(path)
    with pytest.raises(training.BenchmarkError, match="no rows in split"):
        training.check_training_set(str(path))


def test_a_failing_worker_shows_its_exception(tmp_path):
    """The worker's own error (a training set with one class) reaches the user."""
    path = tmp_path / "training_set.parquet"
    training_frame([0] * 30).write_parquet(path)
    done = bench("--training-set", str(path), "--procedure", "staged")
    assert done.exit_code == 1
    assert done.output.strip().splitlines()[-1] == (
        "Error: classification training (staged) failed (exit status 1): "
        "ValueError: train split has a single class"
    )


def test_run_step_carries_the_end_of_stderr():
    code = "import sys\nprint('noise', file=sys.stderr)\nraise KeyError('split')"
    with pytest.raises(training.BenchmarkError) as err:
        training.run_step([sys.executable, "-c", code], "the step")
    assert err.value.message == "the step failed (exit status 1): KeyError: 'split'"
    assert training.run_step([sys.executable, "-c", "print('ok')"], "the step") == "ok\n"


def test_cause_of_a_chained_multiline_error_and_of_no_traceback():
    stderr = (
        "Traceback (most recent call last):\n  File 'a', line 1\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File 'b', line 2\n    raise ValueError\n"
        "    ^^^^^^^^^^^^^^^^\nValueError: first line\nsecond line\n"
    )
    assert training.cause(stderr) == "ValueError: first line | second line"
    assert training.cause("a\nb\nc\nd\n") == "b | c | d"
    assert training.cause("") == "no error output"


def test_a_generated_training_set_is_kept_where_the_report_says(tmp_path, monkeypatch):
    monkeypatch.setattr(training.tempfile, "tempdir", str(tmp_path / "tmp"))
    made = tmp_path / "storage" / "training_set.parquet"
    made.parent.mkdir()
    frame = training_frame([0, 1] * 6)
    frame.write_parquet(made)
    kept = training.keep_training_set(str(made), 500)
    made.unlink()
    assert Path(kept) == tmp_path / "tmp/churn-bench-training/500-customers/training_set.parquet"
    assert pl.read_parquet(kept).equals(frame)
    training.check_training_set(kept)  # can be passed back with --training-set
