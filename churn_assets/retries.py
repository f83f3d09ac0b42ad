"""Retries for transient failures only (a service briefly unreachable, slow or throttling).

Assets downstream of the raw tables carry :data:`STORAGE_RETRY` (three more attempts with
exponential backoff and jitter, about 2, 4 and 8 s) and run their bodies inside
:func:`fail_fast_unless_transient`: anything that is not transient (a ``KeyError``, a bad
config, a refused model) becomes a ``dg.Failure`` that skips the retry policy, names the
exception type and message, and fails the step at once. The raw assets carry no policy,
because a failed blocking data-quality check must fail the run rather than be retried; they
ask for a retry themselves on transient errors only (:func:`retry_on_connection_errors`).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

STORAGE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
RAW_MAX_RETRIES = 3

_TRANSIENT_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RemoteDisconnected",
        "ProtocolError",
        "NewConnectionError",
        "MaxRetryError",
        "OperationalError",  # SQLAlchemy / psycopg2: the database is unreachable
        "TrackingUnavailableError",
    }
)
#: S3 / HTTP error codes that mean "try again later".
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "InternalError",
        "503",
        "500",
        "429",
    }
)


def _client_error_code(e: BaseException) -> str | None:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "") or None
    return None


def is_connection_error(error: BaseException) -> bool:
    """True for transient errors: the service is unreachable, timed out or throttles."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionError | TimeoutError) or type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if _client_error_code(e) in _TRANSIENT_CODES:
            return True
        e = e.__cause__ or e.__context__
    return False


#: Built-in exceptions that mean "unreachable or too slow" (``ConnectionError``'s own kinds).
_TRANSIENT_BUILTINS = frozenset(
    {
        "ConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "ConnectionAbortedError",
        "BrokenPipeError",
        "TimeoutError",
        "timeout",  # socket.timeout
    }
)


def recorded_error_is_transient(error: Any) -> bool:
    """True when a recorded error (Dagster's ``SerializableErrorInfo`` of a failed step, with
    its ``cause`` and ``context`` chain) was an outage: the service unreachable, timing out
    or throttling, as :func:`is_connection_error` tells for a live exception."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        name = getattr(e, "cls_name", None) or ""
        if name in _TRANSIENT_BUILTINS or name in _TRANSIENT_NAMES:
            return True
        message = getattr(e, "message", "") or ""
        # botocore's ClientError: "An error occurred (SlowDown) when calling …"
        if name == "ClientError" and any(f"({code})" in message for code in _TRANSIENT_CODES):
            return True
        pending += [getattr(e, "cause", None), getattr(e, "context", None)]
    return False


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a ``raise … from …`` chain."""
    seen: set[int] = set()
    e = error
    while e.__cause__ is not None and id(e.__cause__) not in seen:
        seen.add(id(e))
        e = e.__cause__
    return e


def describe(error: BaseException) -> str:
    """``ExceptionType: message`` of the root cause (what a user needs to read first)."""
    from churn_assets.lib.storage import with_refusal

    cause = root_cause(error)
    text = str(cause).strip() or repr(cause)
    return with_refusal(f"{type(cause).__name__}: {text}", error)


@contextmanager
def fail_fast_unless_transient() -> Iterator[None]:
    """Let transient errors reach the asset's retry policy; fail anything else at once,
    a terminated run's interruption included."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    try:
        yield
    except (dg.Failure, dg.RetryRequested):
        raise
    except (DagsterExecutionInterruptedError, KeyboardInterrupt) as e:
        # a user's Terminate: Dagster's retry policy would run the step again, and a run of
        # an in-process job (the landing jobs) went on to end SUCCESS as if never stopped
        raise dg.Failure(
            description="the run was terminated while this step ran: not tried again",
            metadata={"exception": type(e).__name__, "retried": False},
            allow_retries=False,
        ) from e
    except Exception as e:
        if is_connection_error(e):
            raise
        raise dg.Failure(
            description=describe(e),
            metadata={"exception": type(root_cause(e)).__name__, "retried": False},
            allow_retries=False,
        ) from e


@contextmanager
def retry_on_connection_errors(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Turn a transient error into a Dagster retry with exponential backoff; the last
    attempt says that it gives up instead of naming a retry that never comes."""
    try:
        yield
    except Exception as e:
        if not is_connection_error(e):
            raise
        if context.retry_number >= RAW_MAX_RETRIES:
            context.log.error(
                f"storage unreachable ({e}); giving up after {context.retry_number + 1} "
                "attempts: the step fails"
            )
        else:
            wait = 2 ** (context.retry_number + 1)
            context.log.warning(f"storage unreachable ({e}); retrying in {wait} s")
        raise dg.RetryRequested(
            max_retries=RAW_MAX_RETRIES, seconds_to_wait=2 ** (context.retry_number + 1)
        ) from e
