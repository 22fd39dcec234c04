"""Bulkhead and circuit breaker per outbound peer (one FHIR base URL, one JWKS URL).

One slow or hostile peer may only ever hold a bounded share of the worker's threads:
- at most `max_in_flight` calls to the same peer run at once in this process; one more is refused at once
  (never queued: a queue would hold the caller's thread, which is what the limit protects);
- after `failure_threshold` consecutive failures (timeout, deadline, unreachable, 5xx) the circuit opens
  for `open_s` seconds: calls to that peer are refused at once without contacting it; then one probe
  call is let through (half-open) and its result closes or re-opens the circuit.

Peers are kept in a bounded LRU table, so a stream of distinct peers cannot grow memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

log = logging.getLogger(__name__)

DEFAULT_MAX_PEERS: Final = 1024
RefusalReason = Literal["busy", "circuit_open"]


class PeerRefused(Exception):
    """The call was not made: the peer has too many calls in flight, or its circuit is open."""

    def __init__(self, reason: RefusalReason, retry_after_s: float) -> None:
        super().__init__(reason)
        self.reason: RefusalReason = reason
        self.retry_after_s = retry_after_s


@dataclass
class _PeerState:
    in_flight: int = 0
    failures: int = 0
    open_until: float | None = None
    probing: bool = False


class Outcome:
    """What the guarded call reports back; a call that reports nothing counts as a success."""

    def __init__(self) -> None:
        self.failed = False

    def fail(self) -> None:
        self.failed = True


class PeerGuard:
    def __init__(
        self,
        *,
        max_in_flight: int,
        failure_threshold: int,
        open_s: float,
        max_peers: int = DEFAULT_MAX_PEERS,
        clock: Callable[[], float] = time.monotonic,
        name: str = "peer",
    ) -> None:
        self.max_in_flight = max(1, max_in_flight)
        self.failure_threshold = max(1, failure_threshold)
        self.open_s = max(0.0, open_s)
        self._max_peers = max(1, max_peers)
        self._clock = clock
        self._name = name
        self._lock = threading.Lock()
        self._peers: OrderedDict[str, _PeerState] = OrderedDict()

    @contextmanager
    def call(self, peer: str) -> Iterator[Outcome]:
        """Admit one call to `peer` (raises PeerRefused), then record its outcome on exit.

        An exception leaving the block counts as a failure only when `outcome.fail()` was called: the
        caller decides which errors are the peer's fault (a 404 is not)."""
        probe = self._admit(peer)
        outcome = Outcome()
        try:
            yield outcome
        finally:
            self._release(peer, outcome.failed, probe)

    def state(self, peer: str) -> str:
        """closed, open or half-open (for tests and logs)."""
        with self._lock:
            state = self._peers.get(peer)
            if state is None or state.open_until is None:
                return "closed"
            return "open" if self._clock() < state.open_until else "half-open"

    def _admit(self, peer: str) -> bool:
        now = self._clock()
        with self._lock:
            state = self._state(peer)
            probe = False
            if state.open_until is not None:
                if now < state.open_until:
                    raise PeerRefused("circuit_open", state.open_until - now)
                if state.probing:
                    raise PeerRefused("circuit_open", self.open_s)
                state.probing = probe = True
            if state.in_flight >= self.max_in_flight:
                if probe:
                    state.probing = False
                raise PeerRefused("busy", 1.0)
            state.in_flight += 1
            return probe

    def _release(self, peer: str, failed: bool, probe: bool) -> None:
        now = self._clock()
        with self._lock:
            state = self._state(peer)
            state.in_flight = max(0, state.in_flight - 1)
            if probe:
                state.probing = False
            if not failed:
                state.failures, state.open_until = 0, None
                return
            state.failures += 1
            if probe or state.failures >= self.failure_threshold:
                if state.open_until is None or now >= state.open_until:
                    log.warning(
                        "%s circuit opened for %.0f s after %d consecutive failures",
                        self._name,
                        self.open_s,
                        state.failures,
                    )
                state.open_until = now + self.open_s

    def _state(self, peer: str) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _PeerState()
            self._evict()
        self._peers.move_to_end(peer)
        return state

    def _evict(self) -> None:
        """Drop the least recently used idle peers beyond the bound (peers with calls in flight stay)."""
        excess = len(self._peers) - self._max_peers
        if excess <= 0:
            return
        for key in [key for key, state in self._peers.items() if state.in_flight == 0][:excess]:
            del self._peers[key]
