"""Retries for transient failures (storage or tracking briefly unreachable).

Assets downstream of the raw tables carry :data:`STORAGE_RETRY`: three more attempts with
exponential backoff and jitter (about 2, 4 and 8 s). The raw assets do not, because a
failed blocking data-quality check must fail the run rather than be retried; they ask for
a retry themselves only on connection errors (:func:`retry_on_connection_errors`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

STORAGE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
RAW_MAX_RETRIES = 3


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean "the service is not reachable right now"."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if isinstance(e, ConnectionError | TimeoutError) or name in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ClientConnectorError",
            "ServerDisconnectedError",
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextmanager
def retry_on_connection_errors(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Turn a connection error into a Dagster retry with exponential backoff."""
    try:
        yield
    except Exception as e:
        if not is_connection_error(e):
            raise
        wait = 2 ** (context.retry_number + 1)
        context.log.warning(f"storage unreachable ({e}); retrying in {wait} s")
        raise dg.RetryRequested(max_retries=RAW_MAX_RETRIES, seconds_to_wait=wait) from e
