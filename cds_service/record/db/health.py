"""What this worker knows about the database's availability, so that an outage costs each call nothing.

After a failure the database is treated as down for `retry_s` seconds: calls skip it at once (the replay
check falls back to its in-process window, the ledger write is skipped and counted, feedback is refused
with 503 + Retry-After) instead of each waiting for a connect timeout. The next call after that tries
the database again. Transitions are logged once (WARNING down, INFO recovered)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_RETRY_S = 5.0


class DatabaseHealth:
    def __init__(self, retry_s: float = DEFAULT_RETRY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until: float | None = None

    @property
    def down(self) -> bool:
        """True from a failure until a later success (the database may be retried meanwhile)."""
        with self._lock:
            return self._down_until is not None

    def usable(self) -> bool:
        """False while a recent failure says not to try the database now."""
        with self._lock:
            return self._down_until is None or self._clock() >= self._down_until

    def failed(self, action: str) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = self._clock() + self.retry_s
        if not was_down:
            log.warning("database down (%s): degraded mode, retried every %.0f s", action, self.retry_s)

    def succeeded(self) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
        if was_down:
            log.info("database reachable again: degraded mode ended")
