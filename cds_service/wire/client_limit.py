"""Per-client admission: one flooding client gets 429 + Retry-After, the others keep their latency.

A client is the verified JWT issuer and client id (`iss` + `sub`, CDS Hooks' client identity), or the
source address when no JWT is checked (CDS_AUTH_MODE=off). Two limits, both per worker process:
- a rate (CDS_CLIENT_RATE_LIMIT, `limits` notation such as "20/second" or "20/second;600/minute",
  moving window, the `limits` library's in-memory storage); empty turns it off;
- calls in flight at once (CDS_CLIENT_MAX_IN_FLIGHT); 0 turns it off.
Under gevent a refusal is answered after a pause of up to 1 s (bounded per client), so a client that
ignores 429 and Retry-After cannot turn the refusals themselves into a flood. A client refused for its rate
is "over its rate" for LOWERED_FOR_S after each refusal: the fair queue (fair_queue.py) then gives its
admitted calls a turn only when no other client's call waits.

Scope: the counters live in each worker's memory (no shared store: a database or Redis round trip per call
would cost more than the calls it protects). The kernel spreads one client's connections over the
workers, so one instance admits up to CDS_WORKERS x the configured rate per client, and each replica as
much again. The limit keeps one client from taking a worker's event loop; a hostile network flood that
ignores 429 belongs at the reverse proxy or load balancer (docs/operations.md, "Per-client limits").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from cds_service.core.errors import Issue, ServiceError
from cds_service.record.db.off_loop import gevent_patched
from cds_service.record.metrics import get_metrics

ThrottleReason = Literal["rate", "in_flight"]
IN_FLIGHT_RETRY_AFTER_S = 1
HOLD_S = 1.0
HELD_PER_CLIENT = 16
LOWERED_FOR_S = 2.0
MARKED_CLIENTS_MAX = 4096


class Throttled(ServiceError):
    """429 with Retry-After: this client sends more than its share; the others are unaffected."""

    def __init__(self, reason: ThrottleReason, retry_after_s: int) -> None:
        what = "too many calls per second" if reason == "rate" else "too many calls at once"
        super().__init__([Issue("throttled", f"{what} from this client; retry after {retry_after_s} s")], 429)
        self.reason: ThrottleReason = reason
        self.headers: dict[str, str] = {"Retry-After": str(retry_after_s)}


def parse_rate(text: str) -> tuple[RateLimitItem, ...]:
    """The rate items of a `limits` string ("" = none); raises ValueError for a malformed one."""
    if not text.strip():
        return ()
    return tuple(parse_many(text))


class ClientLimiter:
    def __init__(
        self,
        rate: str = "",
        max_in_flight: int = 0,
        *,
        hold_refusals: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lowered_for_s: float = LOWERED_FOR_S,
    ) -> None:
        self._items = parse_rate(rate)
        # Made on the first call: the in-memory storage starts a timer thread, which must belong to the
        # serving worker (after fork and gevent's patching), not to the process that built the app.
        self._limiter: MovingWindowRateLimiter | None = None
        self._max_in_flight = max_in_flight
        self._hold_refusals = gevent_patched() if hold_refusals is None else hold_refusals
        self._sleep = sleep
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._lowered_for_s = lowered_for_s
        self._over_rate_until: dict[str, float] = {}

    @contextmanager
    def admit(self, client: str) -> Iterator[None]:
        """Hold one of `client`'s in-flight places for the block; raises Throttled (429) instead."""
        refusal = self._rate_refusal(client) or self._take_place(client)
        if refusal is not None:
            get_metrics().record_throttled(refusal.reason)
            self._hold(client, refusal)
            raise refusal
        try:
            yield
        finally:
            self._release_place(client)

    def over_rate(self, client: str) -> bool:
        """Whether `client` was refused for its rate within the last LOWERED_FOR_S seconds."""
        with self._lock:
            until = self._over_rate_until.get(client)
            if until is None:
                return False
            if until > time.monotonic():
                return True
            del self._over_rate_until[client]  # the table only holds clients still over their rate
            return False

    def _mark_over_rate(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._over_rate_until) >= MARKED_CLIENTS_MAX:  # bounded: expired marks go first
                self._over_rate_until = {
                    key: until for key, until in self._over_rate_until.items() if until > now
                }
            if len(self._over_rate_until) < MARKED_CLIENTS_MAX:
                self._over_rate_until[client] = now + self._lowered_for_s

    def in_flight(self, client: str) -> int:
        with self._lock:
            return self._in_flight.get(client, 0)

    def _take_place(self, client: str) -> Throttled | None:
        if self._max_in_flight <= 0:
            return None
        with self._lock:
            held = self._in_flight.get(client, 0)
            if held >= self._max_in_flight:
                return Throttled("in_flight", IN_FLIGHT_RETRY_AFTER_S)
            self._in_flight[client] = held + 1
        return None

    def _release_place(self, client: str) -> None:
        if self._max_in_flight <= 0:
            return
        with self._lock:
            held = self._in_flight.get(client, 0) - 1
            if held > 0:
                self._in_flight[client] = held
            else:
                self._in_flight.pop(client, None)  # the table only holds clients with calls in flight

    def _rate_limiter(self) -> MovingWindowRateLimiter:
        with self._lock:
            if self._limiter is None:
                self._limiter = MovingWindowRateLimiter(MemoryStorage())
            return self._limiter

    def _rate_refusal(self, client: str) -> Throttled | None:
        if not self._items:
            return None
        limiter = self._rate_limiter()
        for item in self._items:
            if not limiter.hit(item, client):
                self._mark_over_rate(client)
                reset_at = limiter.get_window_stats(item, client).reset_time
                return Throttled("rate", max(1, math.ceil(reset_at - time.time())))
        return None

    def _hold(self, client: str, refusal: Throttled) -> None:
        """Answer a refusal only after a pause (at most HOLD_S, at most HELD_PER_CLIENT at once per client).

        A client that ignores 429 and Retry-After would otherwise send the next call at once, and its
        stream of refusals alone would take the worker's CPU. Under gevent a held connection costs a few
        kB; with threads (gthread) it would hold a thread, so refusals are answered at once there."""
        if not self._hold_refusals:
            return
        with self._lock:
            held = self._held.get(client, 0)
            if held >= HELD_PER_CLIENT:
                return
            self._held[client] = held + 1
        try:
            self._sleep(min(HOLD_S, float(refusal.headers["Retry-After"])))
        finally:
            with self._lock:
                remaining = self._held.get(client, 0) - 1
                if remaining > 0:
                    self._held[client] = remaining
                else:
                    self._held.pop(client, None)


def client_key(iss: str | None, sub: str | None, remote_addr: str | None) -> str:
    """The verified issuer and client id; the source address only when no JWT was verified."""
    if iss is not None:
        return f"jwt {len(iss)}:{iss} {sub or '-'}"  # the length keeps ('a', 'b c') apart from ('a b', 'c')
    return f"addr {remote_addr or '-'}"
