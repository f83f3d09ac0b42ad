"""A failed blocking data-quality check fails the run at once: the raw assets carry no retry
policy, so bad data is not read again three times with backoff (transient storage errors
are retried: ``tests/integration/test_s3_storage.py``)."""

from __future__ import annotations

import dagster as dg
import pytest

from churn_assets.demo import root_cause_text, run_error
from tests.data.test_bad_input import CUSTOMERS, TRANSACTIONS, run_graph, setup_landing

BAD = {
    "raw_customers": ("expectations_met", {"customers": CUSTOMERS + "C2,2023-05-01,x,50,2\n"}),
    "raw_transactions": (
        "expectations_met",
        {"transactions": TRANSACTIONS + "I9,C1,2024-01-05 10:00:00,9e9\n"},
    ),
}


@pytest.mark.parametrize("asset", sorted(BAD))
def test_failed_check_fails_the_step_once(asset, isolated_env, tmp_path):
    check, data = BAD[asset]
    run = run_graph(setup_landing(isolated_env, tmp_path, **data))
    assert not run.result.success
    assert not run.check(asset, check).passed
    events = run.result.all_events
    assert [e.step_key for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    starts = [e.step_key for e in events if e.event_type_value == "STEP_START"]
    assert starts.count(asset) == 1
    assert [e.step_key for e in events if e.event_type_value == "STEP_FAILURE"] == [asset]
    assert "customer_features" not in run.materialized
    # the failure names the check, and the report's error says what the data did wrong
    (failure,) = [e for e in events if e.event_type_value == "STEP_FAILURE"]
    cause = root_cause_text(failure.event_specific_data.error)
    assert cause.startswith("DagsterAssetCheckFailedError: 1 blocking asset check failed")
    assert cause.endswith(f"{asset}: {check}"), cause
    checks = {k: {"passed": e.passed, "description": e.description} for k, e in run.checks.items()}
    error = run_error(run.result, checks)
    described = run.check(asset, check).description
    assert described and f"check {asset}:{check} failed: {described}" in error, error
    # the check's line says what the data did wrong; the step's "a check failed" is not
    # repeated before it
    assert error.startswith("check ") and "DagsterAssetCheckFailedError" not in error, error


def test_raw_assets_have_no_retry_policy():
    from churn_assets.definitions import defs

    def policy(asset: str):
        return defs.get_assets_def(dg.AssetKey(asset)).op.retry_policy

    assert policy("raw_customers") is None and policy("raw_transactions") is None
    assert policy("customer_features").max_retries == 3  # downstream: transient errors only


def test_an_asset_alone_before_its_upstream_names_what_to_materialize(isolated_env):
    """``drift_report`` materialized alone on a fresh instance said "FileNotFoundError:
    …/current_features.json" (the table is Parquet) and nothing about what to do: it now
    names the asset that is missing and says to materialize it first, once, unretried."""
    from churn_assets.definitions import build_definitions

    defs = build_definitions()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("drift_report")}
    )
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    events = result.all_events
    assert [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    (failure,) = [e for e in events if e.event_type_value == "STEP_FAILURE"]
    said = root_cause_text(failure.event_specific_data.error)
    assert "current_features has not been materialized yet" in said, said
    assert "materialize it first" in said
