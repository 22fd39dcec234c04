"""The JWT replay check with the database down: a bounded in-process window per worker (degraded mode).

Policy (docs/operations.md, "Database outage"): hook calls are still answered during an outage. Each
(iss, jti) is then remembered in this worker's memory until the token's expiry, so a token replayed to
the SAME worker is still refused; a replay to another worker or replica is not caught while the database
is down. Tokens live minutes (`exp`, at most CDS_JWT_MAX_LIFETIME_S) and are bound to this service's
URL, so the gap is bounded by the outage plus one token lifetime. The window holds at most `max_entries`
pairs; when it is full, calls are refused (503) rather than remembered loosely. Every call served this
way is counted (`cds_degraded_calls_total{component="replay_store"}`) and the transition is logged.

When the database answers again, the pairs of the window are written back to it (idempotently, in
batches) before the window forgets them, so every token accepted during the outage stays refused by every
worker and replica afterwards: after recovery a replay is refused exactly as if there had been no outage.

With `policy="refuse"` (CDS_DB_OUTAGE_POLICY=refuse) an outage answers 503 + Retry-After instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

from cds_service.record.db.engine import DatabaseUnavailable
from cds_service.record.db.health import DatabaseHealth
from cds_service.record.metrics import get_metrics
from cds_service.record.replay import InMemoryReplayStore, ReplayStore

log = logging.getLogger(__name__)

OutagePolicy = Literal["degrade", "refuse"]
DEFAULT_WINDOW_ENTRIES = 100_000
WRITE_BACK_BATCH = 1000


class RecoverableReplayStore(ReplayStore, Protocol):
    def record_all(self, pairs: Sequence[tuple[str, str, datetime]]) -> None:
        """Store pairs remembered during an outage (idempotent)."""
        ...


class DegradableReplayStore:
    def __init__(
        self,
        primary: RecoverableReplayStore,
        health: DatabaseHealth,
        *,
        policy: OutagePolicy = "degrade",
        max_entries: int = DEFAULT_WINDOW_ENTRIES,
        window: InMemoryReplayStore | None = None,
    ) -> None:
        self._primary = primary
        self._health = health
        self._policy = policy
        self._max_entries = max_entries
        self._window = window if window is not None else InMemoryReplayStore()
        self._lock = threading.Lock()
        self._writer_running = False

    def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if self._health.usable():
            try:
                first_time = self._primary.check_and_record(iss, jti, expires_at)
            except DatabaseUnavailable:
                self._health.failed("jwt replay check")
            else:
                self._health.succeeded()
                # a pair first seen during the outage must still be refused by this worker
                allowed = first_time and self._window_allows(iss, jti, expires_at)
                self._write_back()
                return allowed
        return self._degraded(iss, jti, expires_at)

    def _write_back(self) -> bool:
        """Move the outage's pairs into the database; on a new failure the rest stay in the window.

        True when the window is empty afterwards."""
        if len(self._window) == 0:
            return True
        pairs = self._window.pairs()
        written = 0
        try:
            for start in range(0, len(pairs), WRITE_BACK_BATCH):
                batch = pairs[start : start + WRITE_BACK_BATCH]
                self._primary.record_all(
                    [(iss, jti, datetime.fromtimestamp(until, tz=UTC)) for iss, jti, until in batch]
                )
                self._window.forget(batch)
                written += len(batch)
        except DatabaseUnavailable:
            self._health.failed("jwt replay write-back")
        else:
            self._health.succeeded()
        log.info(
            "replay window: %d of %d pairs seen during the outage written to the database",
            written,
            len(pairs),
        )
        return len(self._window) == 0

    def _start_write_back(self) -> None:
        """One background loop per worker while the window holds pairs: it tries the write-back every
        CDS_DB_RETRY_S, so a worker that gets no call after the recovery still hands its pairs over."""
        with self._lock:
            if self._writer_running:
                return
            self._writer_running = True
        threading.Thread(target=self._write_back_loop, name="replay-write-back", daemon=True).start()

    def _write_back_loop(self) -> None:
        try:
            while True:
                time.sleep(self._health.retry_s)
                if self._health.usable() and self._write_back():
                    return
        finally:
            with self._lock:
                self._writer_running = False

    def _window_allows(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if len(self._window) == 0:
            return True
        return self._window.check_and_record(iss, jti, expires_at)

    def _degraded(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if self._policy == "refuse":
            raise DatabaseUnavailable()
        if len(self._window) >= self._max_entries:
            log.warning("replay window full (%d pairs) during a database outage: refusing", self._max_entries)
            raise DatabaseUnavailable()
        get_metrics().record_degraded("replay_store")
        first_time = self._window.check_and_record(iss, jti, expires_at)
        self._start_write_back()
        return first_time
