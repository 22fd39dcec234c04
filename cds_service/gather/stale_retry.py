"""One retry for a FHIR GET whose pooled keep-alive connection the server had just closed.

FHIR servers close idle keep-alive connections (Node's default is after 5 s). urllib3 checks a pooled
connection before reusing it, but a close that crosses the request on the wire surfaces as a
`ProtocolError` ("Connection aborted") before any byte of the answer: with no retry, that one race turned
a healthy call into a 412. Only that error is retried, once, and only for GET (idempotent); a read timeout
or any other failure is never retried, nor a connection the call's wall-clock deadline shut (net_deadline),
so the deadline keeps its meaning.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from cds_service.core import net_deadline


class StaleConnectionRetry(Retry):
    """A `Retry` that spends its single attempt only on an aborted connection."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> StaleConnectionRetry:
        deadline = net_deadline.current()
        reaped = deadline is not None and deadline.expired  # the deadline shut the socket: no new attempt
        if not isinstance(error, ProtocolError) or response is not None or reaped:
            # Not an aborted reuse: fail exactly as without retries (a Retry with none left always raises).
            Retry(0, read=False).increment(method, url, response, error, _pool, _stacktrace)
            raise RuntimeError("unreachable: an exhausted Retry raises")
        return super().increment(method, url, response, error, _pool, _stacktrace)


def stale_connection_retry() -> StaleConnectionRetry:
    """The retry policy of every FHIR adapter: at most one new connection after an aborted reuse."""
    return StaleConnectionRetry(
        total=1,
        connect=0,
        read=1,
        redirect=0,
        status=0,
        other=0,
        allowed_methods=frozenset({"GET"}),
        raise_on_redirect=False,
        raise_on_status=False,
    )
