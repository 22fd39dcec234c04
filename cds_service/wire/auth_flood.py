"""Cheap refusal of a source address that keeps failing authentication, before the expensive checks.

A client JWT that names a trusted issuer and a known `kid` costs a signature verification (ES384: about
a millisecond of CPU) and, once verified, a replay-store write; a flood of such tokens that are invalid
(bad signature, expired, wrong audience, replayed) was refused 401 one by one without a limit, since the
per-client limits (client_limit.py) apply only to verified identities. Here each source address has a
budget of failed authentications per window (CDS_AUTH_FAILURE_LIMIT, `limits` notation, default
`20/10 seconds`, per worker process); past it, its calls are refused **429 + Retry-After** with an
OperationOutcome before the header is even decoded, until the window admits it again. Under gevent the
refusal is held up to 1 s like the per-client refusals, so a client ignoring Retry-After does not turn
the refusals themselves into a flood. Counted in `cds_client_throttled_total{reason="auth_failures"}`.

Only failures count (401), so a client whose tokens verify is never slowed, however busy. The trade-off,
chosen deliberately: a legitimate client that shares its source address with the flooder (behind NAT, or
every client behind a reverse proxy, which this service sees as one address) is refused for the window
too. It would have competed with the flood for the same worker anyway; with the limit it gets its answers
back once the flood stops or slows below the budget, and the proxy is where per-address limits belong
(docs/operations.md). Empty turns the limit off.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from cds_service.core.errors import Issue, ServiceError
from cds_service.record.db.off_loop import gevent_patched
from cds_service.record.metrics import get_metrics
from cds_service.wire.client_limit import HOLD_S, parse_rate


class AuthFailuresThrottled(ServiceError):
    """429 with Retry-After: this address failed authentication too often in the window."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            [
                Issue(
                    "throttled",
                    f"too many failed authentications from this address; retry after {retry_after_s} s",
                )
            ],
            429,
        )
        self.headers: dict[str, str] = {"Retry-After": str(retry_after_s)}


class AuthFailureLimiter:
    """Per-address budget of failed authentications; `check` before verifying, `failed` after a 401."""

    def __init__(
        self,
        limit: str = "",
        *,
        hold_refusals: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._items: tuple[RateLimitItem, ...] = parse_rate(limit)
        # Made on first use, in the serving worker (the storage's timer thread must not cross a fork).
        self._limiter: MovingWindowRateLimiter | None = None
        self._lock = threading.Lock()
        self._hold_refusals = gevent_patched() if hold_refusals is None else hold_refusals
        self._sleep = sleep
        self._held = 0

    def check(self, address: str | None) -> None:
        """Raise AuthFailuresThrottled (429) when `address` has used up its failures in the window."""
        if not self._items:
            return
        limiter = self._rate_limiter()
        key = _key(address)
        for item in self._items:
            if not limiter.test(item, key):
                reset_at = limiter.get_window_stats(item, key).reset_time
                refusal = AuthFailuresThrottled(max(1, math.ceil(reset_at - time.time())))
                get_metrics().record_throttled("auth_failures")
                self._hold()
                raise refusal

    def failed(self, address: str | None) -> None:
        """Count one failed authentication (401) from `address`."""
        if not self._items:
            return
        limiter = self._rate_limiter()
        for item in self._items:
            limiter.hit(item, _key(address))

    def _rate_limiter(self) -> MovingWindowRateLimiter:
        with self._lock:
            if self._limiter is None:
                self._limiter = MovingWindowRateLimiter(MemoryStorage())
            return self._limiter

    def _hold(self) -> None:
        """Pause before answering (gevent only; at most HELD_AT_ONCE refusals held per worker)."""
        if not self._hold_refusals:
            return
        with self._lock:
            if self._held >= HELD_AT_ONCE:
                return
            self._held += 1
        try:
            self._sleep(HOLD_S)
        finally:
            with self._lock:
                self._held -= 1


HELD_AT_ONCE = 64


def _key(address: str | None) -> str:
    return f"auth-failures {address or '-'}"
