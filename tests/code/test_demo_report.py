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


def test_the_summary_says_how_to_serve_the_deployed_version(monkeypatch):
    """After a deployment the summary ends with the command that serves it: the data set
    (a config path too) and the storage the run used."""
    from churn_assets.demo import _serve_command, format_report

    monkeypatch.setenv("CHURN_STORAGE_URL", "/data/churn store")
    command = _serve_command("/cfg/my shop.yaml")
    assert (
        command
        == "CHURN_DATASET='/cfg/my shop.yaml' CHURN_STORAGE_URL='/data/churn store' churn serve"
    )
    report = {
        "dataset": "my_shop",
        "success": True,
        "seconds": 1.0,
        "storage_url": "/data/churn store/my_shop",
        "assets": {},
        "checks": {},
        "features": {"rows": None},
        "models": {},
        "deployment": {"promoted": True, "version": "v1", "decision": {"reason": "first"}},
        "serve": command,
        "error": None,
    }
    assert f"serve      {command}" in format_report(report)


def test_json_output_is_strict_json():
    """A metric that was not computed (NaN) is null: JSON.parse and strict parsers read it."""
    import json
    import math

    from churn_assets.cli import json_text

    text = json_text({"cv": [float("nan"), 0.5], "x": {"inf": math.inf}, "when": object})
    assert json.loads(text, parse_constant=lambda c: 1 / 0) == {
        "cv": [None, 0.5],
        "x": {"inf": None},
        "when": str(object),
    }


def test_a_failed_warning_check_is_named_as_a_warning_in_the_error():
    """A run stopped by a blocking check: the error names that check as failed and a
    warning (documented as one) as warned."""
    from types import SimpleNamespace

    from churn_assets.demo import run_error

    checks = {
        "classification_models:churn_champion_above_floor": {
            "passed": False,
            "description": "lightgbm holdout ROC-AUC 0.49 < floor 0.70",
            "severity": "WARN",
        },
        "deployed_model_version:served_models_above_floors": {
            "passed": False,
            "description": "nothing is deployed",
            "severity": "ERROR",
        },
        "raw_customers:files_readable": {"passed": True, "description": "1 file(s) read"},
    }
    run = SimpleNamespace(success=False, all_events=[])
    assert run_error(run, checks) == (
        "check classification_models:churn_champion_above_floor warned: lightgbm holdout "
        "ROC-AUC 0.49 < floor 0.70 | check deployed_model_version:served_models_above_floors "
        "failed: nothing is deployed"
    )
