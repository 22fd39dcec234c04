"""JWT `jti` replay store in the service database: atomic across processes and replicas.

`check_and_record` is one INSERT ... ON CONFLICT (iss, jti) DO UPDATE ... WHERE the stored row has
expired, RETURNING: a row comes back only when the (iss, jti) pair was free (new, or expired and
now taken again), so two processes racing on the same token cannot both win.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete

from cds_service.record.db.engine import insert_for, unavailable_on_error, writer
from cds_service.record.db.off_loop import run_off_loop
from cds_service.record.db.schema import jwt_replay

log = logging.getLogger(__name__)

PRUNE_EVERY = 500
_NOW = "now"  # the bound "expired before now" instant (no column has this name)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DbReplayStore:
    """Remembers (iss, jti) until the token's `exp`; prunes expired rows every `prune_every` inserts, in the
    background."""

    def __init__(
        self, engine: Engine, *, prune_every: int = PRUNE_EVERY, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        if prune_every < 1:
            raise ValueError("prune_every must be at least 1")
        # Written on every authenticated call: synchronous=NORMAL on SQLite (survives SIGKILL; a power loss
        # may forget the last few seconds of tokens, all of which expire within minutes: docs/operations.md).
        self._engine = writer(engine, durable=False)
        self._prune_every = prune_every
        self._clock = clock
        self._inserts = itertools.count(1)
        self._lock = threading.Lock()
        self._pruning = threading.Lock()
        self._statement: Any = None

    def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """True the first time (iss, jti) is seen; False while an unexpired record of it exists.

        Raises DatabaseUnavailable (503) when the database cannot be reached.
        """
        now = self._clock()
        row = {"iss": iss, "jti": jti, "expires_at": expires_at, _NOW: now}
        first_time: bool = run_off_loop(self._engine, self._insert_first, row)
        if first_time and self._due_for_prune() and self._pruning.acquire(blocking=False):
            threading.Thread(
                target=self._prune_quietly, args=(now,), name="replay-prune", daemon=True
            ).start()
        return first_time

    def _prune_quietly(self, now: datetime) -> None:
        """In the background, never in the caller's call: a DELETE holds SQLite's write lock meanwhile."""
        try:
            self.prune(now)
        except Exception as error:  # expired rows are retried at the next interval
            log.warning("jwt replay prune failed (%s)", type(error).__name__)
        finally:
            self._pruning.release()

    def _insert_first(self, row: dict[str, Any]) -> bool:
        with unavailable_on_error("jwt replay check"), self._engine.begin() as connection:
            return connection.execute(self._first_time_insert(), row).first() is not None

    def _first_time_insert(self) -> Any:
        """INSERT ... ON CONFLICT DO UPDATE ... WHERE expired RETURNING, built once (on first use) with the
        row and `now` bound at execution: SQLAlchemy then reuses its cache key and compiled form."""
        if self._statement is None:
            insert = insert_for(self._engine, jwt_replay)
            self._statement = insert.on_conflict_do_update(
                index_elements=[jwt_replay.c.iss, jwt_replay.c.jti],
                set_={"expires_at": insert.excluded.expires_at},
                where=jwt_replay.c.expires_at <= bindparam(_NOW, type_=jwt_replay.c.expires_at.type),
            ).returning(jwt_replay.c.jti)
        return self._statement

    def record_all(self, pairs: Sequence[tuple[str, str, datetime]]) -> None:
        """Store (iss, jti, expires_at) pairs seen elsewhere; idempotent (a stored pair keeps the later exp).

        Raises DatabaseUnavailable (503) when the database cannot be reached."""
        if not pairs:
            return
        insert = insert_for(self._engine, jwt_replay)
        statement = insert.on_conflict_do_update(
            index_elements=[jwt_replay.c.iss, jwt_replay.c.jti],
            set_={"expires_at": insert.excluded.expires_at},
            where=jwt_replay.c.expires_at < insert.excluded.expires_at,
        )
        rows = [{"iss": iss, "jti": jti, "expires_at": expires_at} for iss, jti, expires_at in pairs]

        def write() -> None:
            with unavailable_on_error("jwt replay write-back"), self._engine.begin() as connection:
                connection.execute(statement, rows)

        run_off_loop(self._engine, write)

    def prune(self, now: datetime | None = None) -> int:
        """Delete records whose token has expired; returns how many were deleted."""
        cutoff = now or self._clock()

        def delete_expired() -> int:
            with unavailable_on_error("jwt replay prune"), self._engine.begin() as connection:
                return connection.execute(
                    delete(jwt_replay).where(jwt_replay.c.expires_at <= cutoff)
                ).rowcount

        deleted: int = run_off_loop(self._engine, delete_expired)
        return deleted

    def _due_for_prune(self) -> bool:
        with self._lock:
            return next(self._inserts) % self._prune_every == 0
