"""What the drift assets show: the verdict with its reason, a table that says what it leaves
out and keeps the prediction rows, sorted by each measure against its own threshold."""

from __future__ import annotations

import numpy as np
import polars as pl

from churn_assets.lib.drift import DriftThresholds, compute_drift, verdict_reasons
from churn_assets.lib.monitoring import (
    drift_description,
    presentation,
    table_markdown,
)

N = 2000
PREDICTIONS = ["churn_probability", "expected_total_sales"]


def frames(
    n_numeric: int, shifted: dict[str, float], seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Reference and current samples: ``n_numeric`` normal features (``shifted`` ones moved
    by that many standard deviations in the current sample), a plan and two predictions."""
    rng = np.random.default_rng(seed)
    numeric = [f"f{i:02d}" for i in range(n_numeric)]

    def sample(shift: dict[str, float]) -> pl.DataFrame:
        data = {c: rng.normal(shift.get(c, 0.0), 1.0, N) for c in numeric}
        data["plan"] = rng.choice(["basic", "plus", "pro"], N, p=[0.5, 0.3, 0.2])
        data["churn_probability"] = rng.beta(2, 5, N)
        data["expected_total_sales"] = rng.lognormal(4, 1, N)
        return pl.DataFrame(data)

    return sample({}), sample(shifted), numeric


def drift(n_numeric: int, shifted: dict[str, float], **thresholds: float):
    reference, current, numeric = frames(n_numeric, shifted)
    return compute_drift(
        reference, current, numeric, ["plan"], PREDICTIONS, DriftThresholds(**thresholds)
    )


def rows(markdown: str) -> list[str]:
    """The first cell (column name) of each table row."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]]


def test_a_severe_feature_names_itself_as_the_reason():
    """4 of 42 features drifted (10%, under the 30% share): DRIFT because one is severe."""
    result = drift(41, {"f03": 3.0, "f10": 0.5, "f20": 0.5, "f30": 0.5})
    assert result.drifted and result.share_drifted < 0.3
    assert len(result.drifted_columns) == 4
    reasons = verdict_reasons(result)
    assert len(reasons) == 1 and reasons[0].startswith("severe PSI in f03 (")
    assert reasons[0].endswith("above 1")
    line = drift_description(
        {
            "drifted": result.drifted,
            "drifted_columns": result.drifted_columns,
            "share_drifted": result.share_drifted,
            **presentation(result),
        }
    )
    assert line.startswith(f"DRIFT ({reasons[0]}): 4 drifted column(s) (10% of features; ")
    assert "share threshold 30%" in line


def test_share_and_prediction_reasons_carry_their_figures():
    result = drift(4, {"f00": 1.0, "f01": 1.0}, severe_psi=100.0)
    assert verdict_reasons(result) == ["share of drifted features above its threshold (40% > 30%)"]
    reference, current, numeric = frames(3, {})
    current = current.with_columns(pl.col("churn_probability") + 0.3)
    moved = compute_drift(reference, current, numeric, ["plan"], PREDICTIONS)
    assert verdict_reasons(moved) == ["prediction drift in churn_probability"]
    calm = drift(3, {})
    assert verdict_reasons(calm) == []
    assert drift_description(
        {"drifted": False, "drifted_columns": [], "share_drifted": 0.0, "share_threshold": 0.3},
        " in 500 served record(s)",
    ) == ("no drift in 500 served record(s): 0 drifted column(s) (0% of features; share "
          "threshold 30%)")  # fmt: skip


def test_a_cut_table_says_so_and_keeps_the_prediction_rows():
    """44 columns, nothing drifted: 30 shown, the predictions among them."""
    result = drift(41, {})
    assert result.table.height == 44 and not result.drifted_columns
    markdown = table_markdown(result.table)
    assert markdown.startswith("_30 of 44 columns shown; the HTML report and the stored table")
    shown = rows(markdown)
    assert len(shown) == 30
    assert set(shown[:2]) == set(PREDICTIONS)  # not drifted: right after any drifted column


def test_drifted_columns_come_first_and_a_small_table_is_whole():
    result = drift(5, {"f04": 1.0})
    markdown = table_markdown(result.table)
    assert markdown.startswith("_All 8 columns.")
    shown = rows(markdown)
    assert shown[0] == "f04" and set(shown[1:3]) == set(PREDICTIONS)
    assert "vs_threshold" in markdown.splitlines()[2]


def test_psi_and_l1_rows_sort_by_their_own_thresholds():
    """PSI 0.3 over 0.1 (3x) outranks L1 0.6 over 0.5 (1.2x), though 0.6 > 0.3; a
    categorical column drifted by JS alone ranks by JS over its threshold (4x)."""
    table = pl.DataFrame(
        {
            "column": ["num", "cat", "js_only", "calm"],
            "kind": ["numeric", "categorical", "categorical", "numeric"],
            "metric": ["psi", "l1", "l1", "psi"],
            "value": [0.3, 0.6, 0.1, 0.05],
            "threshold": [0.1, 0.5, 0.5, 0.1],
            "js": [None, 0.05, 0.4, None],
            "js_threshold": [None, 0.1, 0.1, None],
            "drifted": [True, True, True, False],
        }
    )
    markdown = table_markdown(table)
    assert rows(markdown) == ["js_only", "num", "cat", "calm"]
    header = [c.strip() for c in markdown.splitlines()[2].strip("|").split("|")]
    assert header[header.index("js_threshold") + 1] == "vs_threshold"
    ratio = {r.split(" | ")[0][2:]: r.split(" | ")[7] for r in markdown.splitlines()[4:]}
    assert ratio == {"js_only": "4", "num": "3", "cat": "1.2", "calm": "0.5"}


def test_values_from_the_data_cannot_become_markup_in_a_markdown_table():
    """Category values and column names went into the metadata tables as written: a line
    break split the table, a link or image was rendered, a pipe made another column."""
    from churn_assets.lib.markdown import MAX_CELL_CHARS, to_markdown

    table = pl.DataFrame(
        {
            "name<b>": ["[x](javascript:alert(3))", "a|b\nc", "<img src=x onerror=y>", "z" * 999],
        }
    )
    lines = to_markdown(table).splitlines()
    assert lines[0] == "| name\\<b\\> |"
    assert lines[2] == "| \\[x\\]\\(javascript:alert\\(3\\)\\) |"
    assert lines[3] == "| a\\|b c |"  # one row, one column
    assert lines[4] == "| \\<img src=x onerror=y\\> |"
    assert len(lines[5]) == len("|  |") + MAX_CELL_CHARS and lines[5].endswith("… |")
    assert len(lines) == 6
