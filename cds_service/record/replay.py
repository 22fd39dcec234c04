"""JWT replay protection: an (iss, jti) pair is accepted once until its expiry plus leeway.

`ReplayStore` is the protocol every store implements (the database-backed `DbReplayStore` shared by all
workers, or `InMemoryReplayStore`, which is only correct with a single worker process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from cds_service.core.security_errors import SecurityConfigError


@runtime_checkable
class ReplayStore(Protocol):
    def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record (iss, jti) until `expires_at` (timezone-aware UTC); True the first time, False on replay."""
        ...


class InMemoryReplayStore:
    """A thread-safe in-process store; expired pairs are pruned at most every `prune_interval_s`."""

    def __init__(self, *, clock: Callable[[], float] = time.time, prune_interval_s: float = 30.0) -> None:
        self._clock = clock
        self._prune_interval_s = prune_interval_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._last_prune = clock()

    def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
        now = self._clock()
        key = (iss, jti)
        with self._lock:
            if now - self._last_prune >= self._prune_interval_s:
                self._prune(now)
            until = self._seen.get(key)
            if until is not None and until > now:
                return False
            self._seen[key] = expires_at.timestamp()
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def pairs(self) -> list[tuple[str, str, float]]:
        """The unexpired (iss, jti, expiry as a UNIX time) pairs held now."""
        now = self._clock()
        with self._lock:
            return [(iss, jti, until) for (iss, jti), until in self._seen.items() if until > now]

    def forget(self, pairs: list[tuple[str, str, float]]) -> None:
        """Drop these pairs (once stored elsewhere), unless a later record gave them another expiry."""
        with self._lock:
            for iss, jti, until in pairs:
                if self._seen.get((iss, jti)) == until:
                    del self._seen[(iss, jti)]

    def _prune(self, now: float) -> None:
        self._seen = {key: until for key, until in self._seen.items() if until > now}
        self._last_prune = now


def replay_store_allowed(workers: int, store: ReplayStore) -> bool:
    """False when an in-process store would be used by several worker processes (replays across workers)."""
    return workers <= 1 or not isinstance(store, InMemoryReplayStore)


def require_shared_replay_store(workers: int, store: ReplayStore) -> None:
    """Raise SecurityConfigError (refuse to start) when `replay_store_allowed` is False."""
    if not replay_store_allowed(workers, store):
        raise SecurityConfigError(
            f"the in-memory JWT replay store is only allowed with one worker (CDS_WORKERS={workers}); "
            "use the database-backed replay store"
        )
