"""Write-back of the degraded replay window (record/db/degraded_replay.py): idempotent, keeps the later
expiry, stops at a new failure and leaves the unwritten pairs in the window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cds_service.record.db.degraded_replay import DegradableReplayStore
from cds_service.record.db.engine import DatabaseUnavailable, make_engine
from cds_service.record.db.health import DatabaseHealth
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.replay_store import DbReplayStore


def later() -> datetime:
    """An expiry 5 minutes from now (computed per test: a long suite run outlives a module constant)."""
    return datetime.now(UTC) + timedelta(minutes=5)


def db_store(tmp_path: Path) -> DbReplayStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'replay.sqlite3'}")
    upgrade(engine)
    return DbReplayStore(engine)


def test_record_all_is_idempotent_and_keeps_the_later_expiry(tmp_path: Path) -> None:
    expiry = later()
    store = db_store(tmp_path)
    pairs = [("iss", f"jti-{index}", expiry) for index in range(3)]
    store.record_all(pairs)
    store.record_all(pairs)
    store.record_all([("iss", "jti-0", expiry - timedelta(minutes=4))])
    assert not store.check_and_record("iss", "jti-0", expiry)
    assert not store.check_and_record("iss", "jti-2", expiry)
    now_plus_2 = datetime.now(UTC) + timedelta(minutes=2)
    later_store = DbReplayStore(store._engine, clock=lambda: now_plus_2)
    assert not later_store.check_and_record("iss", "jti-0", expiry), "the earlier expiry did not shorten it"
    assert store.check_and_record("iss", "jti-new", expiry)


class FlakyPrimary:
    def __init__(self, inner: DbReplayStore) -> None:
        self.inner = inner
        self.down = False
        self.fail_after_batches: int | None = None

    def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if self.down:
            raise DatabaseUnavailable()
        return self.inner.check_and_record(iss, jti, expires_at)

    def record_all(self, pairs: Sequence[tuple[str, str, datetime]]) -> None:
        if self.fail_after_batches is not None:
            if self.fail_after_batches == 0:
                raise DatabaseUnavailable()
            self.fail_after_batches -= 1
        self.inner.record_all(pairs)


def test_the_window_is_written_back_on_recovery_and_a_failure_keeps_the_rest(tmp_path: Path) -> None:
    expiry = later()
    primary = FlakyPrimary(db_store(tmp_path))
    health = DatabaseHealth(retry_s=3600)
    store = DegradableReplayStore(primary, health)
    primary.down = True
    for index in range(2500):
        assert store.check_and_record("iss", f"outage-{index}", expiry)
    assert not store.check_and_record("iss", "outage-0", expiry), "refused in degraded mode"
    primary.down = False
    primary.fail_after_batches = 1  # the first batch of 1000 is written, then the database fails again
    health.succeeded()
    assert store.check_and_record("iss", "after-1", expiry)
    assert len(store._window) == 1501, "unwritten pairs (and the call that found them) stay in the window"
    assert not store.check_and_record("iss", "outage-2499", expiry), "still refused from the window"
    primary.fail_after_batches = None
    health.succeeded()
    assert store.check_and_record("iss", "after-2", expiry)
    assert len(store._window) == 0
    other_worker = DegradableReplayStore(primary, DatabaseHealth())
    assert not any(other_worker.check_and_record("iss", f"outage-{index}", expiry) for index in range(2500))
