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


class _ReaperState:
    """The reaper of one process: created lazily in that process (after a fork, after gevent's patch)."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.heap: list[tuple[float, int, Deadline]] = []
        self.cancelled: set[int] = set()


class _Reaper:
    """One daemon thread per process firing deadlines in expiry order (a forked child starts its own)."""

    def __init__(self) -> None:
        self._create_lock = threading.Lock()  # held for microseconds, never across a switch
        self._states: dict[int, _ReaperState] = {}
        self._tokens = itertools.count()

    def schedule(self, deadline: Deadline) -> int:
        state = self._state()
        with state.condition:
            token = next(self._tokens)
            heapq.heappush(state.heap, (deadline.expires_at, token, deadline))
            state.condition.notify()
            return token

    def cancel(self, token: int) -> None:
        state = self._state()
        with state.condition:
            state.cancelled.add(token)
            if state.heap and len(state.cancelled) > 2 * len(state.heap) + 64:
                state.heap = [entry for entry in state.heap if entry[1] not in state.cancelled]
                heapq.heapify(state.heap)
                state.cancelled.clear()

    def pending(self) -> int:
        state = self._state()
        with state.condition:
            return sum(1 for _at, token, _d in state.heap if token not in state.cancelled)

    def _state(self) -> _ReaperState:
        pid = os.getpid()
        state = self._states.get(pid)
        if state is not None:
            return state
        with self._create_lock:
            state = self._states.get(pid)
            created = state is None
            if state is None:
                state = self._states[pid] = _ReaperState()
        if created:  # started outside the lock: under gevent, start() switches to the new greenlet
            threading.Thread(target=self._run, args=(state,), name="deadline-reaper", daemon=True).start()
        return state

    def _run(self, state: _ReaperState) -> None:
        while True:
            with state.condition:
                due = self._next_due(state)
            try:
                due.fire()
            except Exception:  # never let the reaper die
                log.exception("deadline reaper: firing failed")

    @staticmethod
    def _next_due(state: _ReaperState) -> Deadline:
        while True:
            while state.heap and state.heap[0][1] in state.cancelled:
                state.cancelled.discard(heapq.heappop(state.heap)[1])
            if not state.heap:
                state.condition.wait(_MAX_WAIT_S)
                continue
            wait = state.heap[0][0] - time.monotonic()
            if wait <= 0:
                return heapq.heappop(state.heap)[2]
            state.condition.wait(min(wait, _MAX_WAIT_S))


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
