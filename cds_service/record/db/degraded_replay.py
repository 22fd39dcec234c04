"""The JWT replay check with the database down: a bounded in-process window per worker (degraded mode).

Policy (docs/operations.md, "Database outage"): hook calls are still answered during an outage. Each
(iss, jti) is then remembered in this worker's memory until the token's expiry, so a token replayed to
the SAME worker is still refused; a replay to another worker or replica is not caught while the database
is down. Tokens live minutes (`exp`, at most CDS_JWT_MAX_LIFETIME_S) and are bound to this service's
URL, so the gap is bounded by the outage plus one token lifetime. The window holds at most `max_entries`
pairs; when it is full, calls are refused (503) rather than remembered loosely. Every call served this
way is counted (`cds_degraded_calls_total{component="replay_store"}`) and the transition is logged.

With `policy="refuse"` (CDS_DB_OUTAGE_POLICY=refuse) an outage answers 503 + Retry-After instead.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

from cds_service.record.db.engine import DatabaseUnavailable
from cds_service.record.db.health import DatabaseHealth
from cds_service.record.metrics import get_metrics
from cds_service.record.replay import InMemoryReplayStore, ReplayStore

log = logging.getLogger(__name__)

OutagePolicy = Literal["degrade", "refuse"]
DEFAULT_WINDOW_ENTRIES = 100_000


class DegradableReplayStore:
    def __init__(
        self,
        primary: ReplayStore,
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

    def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if self._health.usable():
            try:
                first_time = self._primary.check_and_record(iss, jti, expires_at)
            except DatabaseUnavailable:
                self._health.failed("jwt replay check")
            else:
                self._health.succeeded()
                # a pair first seen during the outage must still be refused by this worker
                return first_time and self._window_allows(iss, jti, expires_at)
        return self._degraded(iss, jti, expires_at)

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
        return self._window.check_and_record(iss, jti, expires_at)
