"""Gunicorn worker classes of `cds-service serve`: gunicorn's own, answering the errors gunicorn itself
raises (malformed request 400, URI too long 414, header fields too large 431...) with an
OperationOutcome JSON body like every other error of the service, instead of gunicorn's HTML page.

The gevent class lives in its own module so that choosing gthread never imports gevent."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from typing import Any

import orjson
from gunicorn import util

LINGER_S = 0.5
LINGER_BYTES = 256 * 1024

_DIAGNOSTICS = {
    400: ("structure", "the request is not valid HTTP/1.1"),
    403: ("forbidden", "the request is forbidden"),
    414: ("too-long", "the request line (method, path and query) is too long"),
    417: ("not-supported", "the Expect header is not supported"),
    431: ("too-long", "the request header fields are too large or too many"),
    500: ("exception", "internal error"),
    501: ("not-supported", "the transfer coding is not supported"),
}


def operation_outcome_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Replacement of `gunicorn.util.write_error`: the same status, a JSON OperationOutcome body.

    The request's own text (`mesg` echoes the offending line or header) is never sent back or logged."""
    code, diagnostics = _DIAGNOSTICS.get(status_int, ("processing", reason))
    util.write_nonblock(sock, _outcome_response(status_int, reason, code, diagnostics))
    linger(sock)


def _outcome_response(
    status: int, reason: str, code: str, diagnostics: str, extra_headers: str = ""
) -> bytes:
    body = orjson.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra_headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


DRAINING_RETRY_AFTER_S = 1
_HEAD_END = b"\r\n\r\n"


# How long a connection found queued at the drain may take to send its request head. 0.5 s saw a single
# reset now and then on the loaded test machine (a client thread sending after the answer and the close);
# with 2 s, 1 run in 20 of tests/faults/test_serve_drain.py saw one (against 4 in 23 before): suggestive,
# not proven. Bounded either way; the worker's graceful period is 30 s.
DRAIN_READ_S = 2.0


def answer_draining(sock: Any, max_s: float = DRAIN_READ_S) -> None:
    """503 + Retry-After for a connection that arrives while the worker stops (it was waiting in the
    listen queue): read the request head (bounded), answer, close lingering. Closing it unanswered
    made the kernel reset it; the client may now retry on another worker or replica."""
    deadline = time.monotonic() + max_s
    try:
        received = b""
        while _HEAD_END not in received and len(received) < LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sock.settimeout(max_s)
        sock.sendall(
            _outcome_response(
                503,
                "Service Unavailable",
                "transient",
                "this worker is shutting down; retry the request",
                f"Retry-After: {DRAINING_RETRY_AFTER_S}\r\n",
            )
        )
        linger(sock)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def linger(sock: Any, max_s: float = LINGER_S, max_bytes: int = LINGER_BYTES) -> None:
    """Lingering close: stop sending, then read and drop what the client is still sending (bounded).

    Closing with unread request bytes makes the kernel send a reset, and the client may then lose the
    error response it has not read yet."""
    deadline = time.monotonic() + max_s
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < max_bytes and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                return
            drained += len(chunk)


def install() -> None:
    """Make gunicorn's own error responses OperationOutcomes (in the worker process)."""
    util.write_error = operation_outcome_error


def catch_early_term(worker: Any) -> None:
    """A SIGTERM that arrives while a new worker boots (before gunicorn installs the worker's handlers,
    which for gevent comes after patching the standard library) went to the inherited master handler
    and was lost: the worker then ran until the master killed it after graceful_timeout. Until then,
    a SIGTERM now just marks the worker as stopping; it exits as soon as its loop starts."""

    def stop(_signum: int, _frame: Any) -> None:
        worker.alive = False

    signal.signal(signal.SIGTERM, stop)
