"""The JSON report of `churn demo`: what it adds up and shows."""

from __future__ import annotations


def test_the_report_adds_up_the_metadata_of_a_partitioned_table():
    """One file per partition: counts add up and file lists join, so the report of
    ``raw_transactions`` tells of every file, not the last one."""
    from churn_assets.demo import _added_up

    first = {"dagster/row_count": 10, "quarantined_rows": 2, "source_files": ["a.csv"], "path": "a"}
    second = {"dagster/row_count": 5, "quarantined_rows": 0, "source_files": ["b.csv"], "path": "b"}
    total = _added_up(_added_up({}, first), second)
    assert total == {
        "dagster/row_count": 15,
        "quarantined_rows": 2,
        "source_files": ["a.csv", "b.csv"],
        "path": "b",
    }
