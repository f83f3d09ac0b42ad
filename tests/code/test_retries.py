"""Only transient errors are retried; anything else fails at once and names its cause."""

from __future__ import annotations

import botocore.exceptions
import dagster as dg
import pytest

from churn_assets.demo import root_cause_text
from churn_assets.retries import (
    STORAGE_RETRY,
    describe,
    fail_fast_unless_transient,
    is_connection_error,
)

FAST_RETRY = dg.RetryPolicy(max_retries=STORAGE_RETRY.max_retries, delay=0)


def _run(error: Exception):
    @dg.asset(retry_policy=FAST_RETRY)
    def flaky() -> int:
        with fail_fast_unless_transient():
            raise error

    result = dg.materialize([flaky], raise_on_error=False)
    kinds = [e.event_type_value for e in result.all_events]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return kinds.count("STEP_UP_FOR_RETRY"), root_cause_text(failure.event_specific_data.error)


def test_a_key_error_fails_at_once_naming_type_and_message():
    retries, cause = _run(KeyError("split 'train' lacks label column 'total_sales'"))
    assert retries == 0
    assert cause.startswith("KeyError:") and "total_sales" in cause


def test_a_connection_error_is_retried_by_the_policy():
    retries, cause = _run(ConnectionError("connection refused"))
    assert retries == STORAGE_RETRY.max_retries
    assert "ConnectionError" in cause


def test_a_terminated_step_is_not_run_again():
    """Terminate on a landing run (in-process executor) interrupts the step; Dagster's retry
    policy ran it again and the run ended SUCCESS, the Terminate ignored. The interruption
    now fails the step, not retried, and what follows does not run."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    attempts = []

    @dg.asset(retry_policy=FAST_RETRY)
    def features() -> int:
        attempts.append(1)
        with fail_fast_unless_transient():
            if len(attempts) == 1:  # the user's Terminate arrives during the first attempt
                raise DagsterExecutionInterruptedError("terminated")
            return 1

    @dg.asset
    def drift(features: int) -> int:
        return features

    job = dg.define_asset_job("landing", executor_def=dg.in_process_executor)
    defs = dg.Definitions(assets=[features, drift], jobs=[job])
    result = defs.get_job_def("landing").execute_in_process(raise_on_error=False)
    assert not result.success and len(attempts) == 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "terminated while this step ran" in failure.event_specific_data.error.message + str(
        failure.event_specific_data.user_failure_data
    )
    assert not result.get_asset_materialization_events()


def test_throttling_is_transient_and_a_bad_request_is_not():
    def client_error(code: str) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError({"Error": {"Code": code}}, "PutObject")

    assert is_connection_error(client_error("SlowDown"))
    assert is_connection_error(client_error("503"))
    assert not is_connection_error(client_error("AccessDenied"))
    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert is_connection_error(wrapped)
    assert not is_connection_error(ValueError("bad config"))


def test_describe_names_the_innermost_cause():
    try:
        try:
            {}["churned"]
        except KeyError as e:
            raise RuntimeError("training failed") from e
    except RuntimeError as outer:
        assert describe(outer) == "KeyError: 'churned'"


@pytest.mark.parametrize("error", [dg.Failure("stop"), dg.RetryRequested(max_retries=1)])
def test_dagster_control_flow_passes_through(error):
    with pytest.raises(type(error)), fail_fast_unless_transient():
        raise error


def test_root_cause_names_the_exception_once():
    """A step's error message starts with the exception's name, sometimes module-qualified;
    the root cause says it once: ``DeploymentError: unknown version ...``."""
    from dagster._utils.error import SerializableErrorInfo

    for prefix in ("DeploymentError", "churn_assets.lib.deployment.DeploymentError"):
        inner = SerializableErrorInfo(f"{prefix}: unknown version v1\n", [], "DeploymentError")
        outer = SerializableErrorInfo("Error in step\n", [], "DagsterExecutionStepExecutionError")
        outer = outer._replace(cause=inner)
        assert root_cause_text(outer) == "DeploymentError: unknown version v1"
