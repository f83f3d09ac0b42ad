"""Slow clients: a request has to arrive whole within a deadline.

uvicorn times out an idle keep-alive connection, but not one that sends its request slowly:
a client that opens connections and sends a header line now and then (or a body a byte at a
time) holds each connection, and its file descriptor, for as long as it likes, until the
sidecar can accept no other. :class:`ReadDeadlineProtocol` (uvicorn's httptools protocol)
closes a connection whose request has not arrived whole, headers and body, within
``CHURN_SERVING_REQUEST_READ_SECONDS`` of its first byte (of the connection, for the first
request), answering 408 when no answer has started. How long the answer takes is not
limited: the deadline ends when the request is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("churn_serving.slow_clients")

#: Seconds between two warnings that count the connections closed in between.
WARN_EVERY_SECONDS = 60.0


class _Closed:
    """Connections closed for being too slow, reported at most once a minute."""

    def __init__(self) -> None:
        self.total = 0
        self.unreported = 0
        self.reported_at = float("-inf")

    def add(self, client: Any, seconds: float) -> None:
        self.total += 1
        self.unreported += 1
        now = time.monotonic()
        if now - self.reported_at >= WARN_EVERY_SECONDS:
            log.warning(
                "closed %d connection(s) whose request did not arrive whole within %g s "
                "(the last from %s; CHURN_SERVING_REQUEST_READ_SECONDS); %d since start",
                self.unreported,
                seconds,
                ":".join(map(str, client)) if client else "?",
                self.total,
            )
            self.unreported = 0
            self.reported_at = now


CLOSED = _Closed()


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps({"detail": f"the request did not arrive whole within {seconds:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request."""

    read_seconds: float = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # a later request on a kept-alive connection
            self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._read_deadline = self.loop.call_later(self.read_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_timeout_answer(self.read_seconds))
        CLOSED.add(self.client, self.read_seconds)
        self.transport.close()


def protocol_with_deadline(seconds: float) -> type[ReadDeadlineProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with a deadline of ``seconds``."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_seconds": seconds})
