"""Wall-clock deadlines for outbound HTTP exchanges (FHIR, JWKS), enforced whatever the peer sends.

A socket read timeout only bounds the wait for the NEXT byte: a peer that drip-feeds its headers or body
(one byte a second) never trips it and holds the calling thread for as long as it likes. Here a single
reaper thread per process shuts down the sockets of every exchange whose deadline has passed, so the
blocked read returns at once, whatever arrives, in the connect/TLS, header and body phases alike.

Use: `with enforce(Deadline.after(seconds)) as deadline:` around the request AND the body read (in the
same thread); the connection classes of `deadline_pool_classes()` attach their socket to the current
deadline. After an expiry the caller sees a connection error; `deadline.expired` tells it why.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

_MAX_WAIT_S: Final = 60.0


class Deadline:
    """One exchange's absolute expiry (time.monotonic); the sockets attached to it are shut at expiry."""

    def __init__(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._expired = False

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + max(seconds, 0.0))

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired or time.monotonic() >= self.expires_at

    def remaining(self) -> float:
        return max(self.expires_at - time.monotonic(), 0.0)

    def attach(self, connection: Any) -> None:
        """Shut this connection's socket at expiry (at once when already expired)."""
        with self._lock:
            if not any(known is connection for known in self._connections):
                self._connections.append(connection)
            expired = self._expired
        if expired:
            _shut(connection)

    def fire(self) -> None:
        """Mark expired and shut every attached socket: blocked reads return immediately."""
        with self._lock:
            self._expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Reaper:
    """One daemon thread per process firing deadlines in expiry order (restarted after a fork)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._cancelled: set[int] = set()
        self._tokens = itertools.count()
        self._pid: int | None = None

    def schedule(self, deadline: Deadline) -> int:
        with self._condition:
            self._ensure_thread()
            token = next(self._tokens)
            heapq.heappush(self._heap, (deadline.expires_at, token, deadline))
            self._condition.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._condition:
            self._cancelled.add(token)
            if self._heap and len(self._cancelled) > 2 * len(self._heap) + 64:
                self._compact()

    def pending(self) -> int:
        with self._condition:
            return sum(1 for _at, token, _d in self._heap if token not in self._cancelled)

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if entry[1] not in self._cancelled]
        heapq.heapify(self._heap)
        self._cancelled.clear()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()  # a forked child has no reaper thread: start its own
        self._heap, self._cancelled = [], set()
        threading.Thread(target=self._run, name="deadline-reaper", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._condition:
                due = self._next_due()
            if due is not None:
                try:
                    due.fire()
                except Exception:  # never let the reaper die
                    log.exception("deadline reaper: firing failed")

    def _next_due(self) -> Deadline | None:
        while True:
            while self._heap and self._heap[0][1] in self._cancelled:
                self._cancelled.discard(heapq.heappop(self._heap)[1])
            if not self._heap:
                self._condition.wait(_MAX_WAIT_S)
                continue
            wait = self._heap[0][0] - time.monotonic()
            if wait <= 0:
                return heapq.heappop(self._heap)[2]
            self._condition.wait(min(wait, _MAX_WAIT_S))


_reaper = _Reaper()
_current = threading.local()


def current() -> Deadline | None:
    """The deadline enforced on this thread's outbound exchange, if any."""
    deadline: Deadline | None = getattr(_current, "deadline", None)
    return deadline


@contextmanager
def enforce(deadline: Deadline) -> Iterator[Deadline]:
    """Enforce `deadline` on the HTTP exchanges this thread makes inside the block."""
    previous = current()
    _current.deadline = deadline
    token = _reaper.schedule(deadline)
    try:
        yield deadline
    finally:
        _reaper.cancel(token)
        _current.deadline = previous


def pending_deadlines() -> int:
    """Deadlines scheduled and not yet fired or cancelled (tests: nothing leaks)."""
    return _reaper.pending()


class _AttachOnUse:
    """Mixin: attach the connection to the thread's current deadline on connect and on each request."""

    def connect(self) -> None:
        _attach_current(self)
        super().connect()  # type: ignore[misc]
        _attach_current(self)  # the socket exists now; shut at once if the deadline passed meanwhile

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


def _attach_current(connection: Any) -> None:
    deadline = current()
    if deadline is not None:
        deadline.attach(connection)


class DeadlineHTTPConnection(_AttachOnUse, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_AttachOnUse, HTTPSConnection):
    pass


class DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


def deadline_pool_classes() -> dict[str, type[HTTPConnectionPool]]:
    """For `PoolManager.pool_classes_by_scheme`: pools whose connections honour `enforce`."""
    return {"http": DeadlineHTTPConnectionPool, "https": DeadlineHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose connections honour `enforce` (no retries)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_retries", 0)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = deadline_pool_classes()
