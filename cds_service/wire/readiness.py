"""Readiness (`/readyz`): may this worker take traffic? Liveness (`/healthz`) only says it is running.

Ready when: the database answers and its schema is at the code's migration head (or ahead of it: a
newer release migrated during a rolling upgrade), the knowledge is
loaded, and every fetched JWKS (trusted issuers' `jwks_url`/`jku`) has been loaded once. A database
check is cached for `cache_s` and skipped while the database is known down (DatabaseHealth), so the
endpoint answers in milliseconds even during an outage. A JWKS not loaded yet is fetched in the
background (never on the probe's thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cds_service.record.db.engine import DatabaseUnavailable
from cds_service.record.db.migrate import current_revision, head_revision, known_revisions, schema_state
from cds_service.wire.hook_protocol import HookService
from cds_service.wire.runtime import Runtime

DEFAULT_CACHE_S = 1.0
# `ahead`: a newer release's migration ran (a rolling upgrade: its Job migrates before its pods start);
# this release's pods stay ready on the additive schema instead of all turning unready at once.
READY_SCHEMA_STATES = frozenset({"ok", "ahead"})


class Readiness:
    def __init__(
        self,
        runtime: Runtime,
        service: HookService,
        *,
        cache_s: float = DEFAULT_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._service = service
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._database_state: tuple[float, str] | None = None
        self._head: str | None = None
        self._known: frozenset[str] = frozenset()

    def check(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "database": self._database(),
            "knowledge": "loaded" if self._service.protocol_version() else "missing",
            "jwks": self._jwks(),
        }
        ready = (
            checks["database"] in READY_SCHEMA_STATES
            and checks["knowledge"] == "loaded"
            and checks["jwks"] == "loaded"
        )
        return ready, checks

    def _database(self) -> str:
        now = self._clock()
        health = self._runtime.db_health
        if health.down:  # a call saw the database fail: never answer from a cached "ok"
            return self._probe_database() if health.usable() else "unavailable"
        with self._lock:
            cached = self._database_state
            if cached is not None and now - cached[0] < self._cache_s:
                return cached[1]
        state = self._probe_database()
        with self._lock:
            self._database_state = (now, state)
        return state

    def _probe_database(self) -> str:
        health = self._runtime.db_health
        try:
            if self._head is None:
                self._head, self._known = head_revision(), known_revisions()
            revision = current_revision(self._runtime.engine)
        except (SQLAlchemyError, DatabaseUnavailable):
            health.failed("readiness check")
            return "unavailable"
        health.succeeded()
        return schema_state(revision, self._head, self._known)

    def _jwks(self) -> str:
        pending = [source for source in self._runtime.jwks.sources() if not source.loaded]
        for source in pending:
            source.warm()
        return "loading" if pending else "loaded"
