"""SQLite durability per write: the per-call writes skip the fsync, feedback keeps it, and none is lost
when the writing process is SIGKILLed right after its commit (docs/operations.md, "SQLite durability").

The setting in effect is read from SQLite itself (`PRAGMA synchronous` inside each INSERT's transaction:
1 = NORMAL, 2 = FULL), not from what the code asked for.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, func, select

from cds_service.record.db.engine import make_engine, writer
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.replay_store import DbReplayStore
from cds_service.record.db.schema import card_ledger, feedback, jwt_replay
from cds_service.record.feedback.store import FeedbackStore, IssuedCard, IssuedSuggestion
from cds_service.record.feedback.validate import FeedbackItem
from tests.support.databases import sqlite_url_fixture  # noqa: F401 - pytest fixture

ROOT = Path(__file__).resolve().parents[2]
NORMAL, FULL = 1, 2
CARD = "6b1f0c52-3c1e-4d0e-9a53-0f3f0e2b7a11"
SUGGESTION = "0d6c6f43-8f0e-4f0a-b8a4-52c7a0e1c9d2"
NOW = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def _synchronous_per_insert(engine: Engine) -> list[tuple[str, int]]:
    """(table, PRAGMA synchronous in effect) for every INSERT run on `engine` from now on."""
    seen: list[tuple[str, int]] = []

    def before(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO"):
            table = statement.split()[2].strip('"')
            seen.append((table, cursor.connection.execute("PRAGMA synchronous").fetchone()[0]))

    event.listen(engine, "before_cursor_execute", before)
    return seen


def _card() -> IssuedCard:
    return IssuedCard(CARD, "ESCALATE", "R9", (IssuedSuggestion(SUGGESTION, "romosozumab", True),))


def test_ledger_and_replay_skip_the_fsync_and_feedback_keeps_it(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        upgrade(engine)
        seen = _synchronous_per_insert(engine)
        DbReplayStore(engine).check_and_record("https://ehr.example", "jti-1", NOW + timedelta(minutes=5))
        store = FeedbackStore(engine)
        store.record_cards(
            [_card()],
            hook_instance="hook-1",
            patient_key="k",
            protocol_version="p",
            service_version="s",
            issued_at=NOW,
        )
        stored = store.store_feedback(
            [FeedbackItem(card=CARD, outcome="accepted", outcome_ts=NOW, accepted_suggestions=(SUGGESTION,))]
        )
        # a pooled connection that last wrote the ledger goes back to FULL for the next ordinary write
        with writer(engine).begin() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    finally:
        engine.dispose()
    assert stored == 1
    assert seen == [
        ("jwt_replay", NORMAL),
        ("card_ledger", NORMAL),
        ("card_suggestion", NORMAL),
        ("feedback", FULL),
    ]


def test_a_new_connection_starts_with_full(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    finally:
        engine.dispose()


_WRITE_THEN_SIGKILL = """
import os, signal, sys
from datetime import UTC, datetime, timedelta
from cds_service.record.db.engine import make_engine
from cds_service.record.db.replay_store import DbReplayStore
from cds_service.record.feedback.store import FeedbackStore, IssuedCard

engine = make_engine(sys.argv[1])
now = datetime.now(UTC)
for index in range(20):
    DbReplayStore(engine).check_and_record("https://ehr.example", f"jti-{index}", now + timedelta(minutes=5))
    FeedbackStore(engine).record_cards(
        [IssuedCard(f"card-{index}", "ESCALATE", "R9", ())],
        hook_instance="hook", patient_key="k", protocol_version="p", service_version="s", issued_at=now,
    )
print("committed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rows_committed_without_fsync_survive_sigkill(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        upgrade(engine)
        done = subprocess.run(
            [sys.executable, "-c", _WRITE_THEN_SIGKILL, sqlite_url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert done.stdout.strip() == "committed"
        with engine.connect() as connection:
            ledger = connection.scalar(select(func.count()).select_from(card_ledger))
            replay = connection.scalar(select(func.count()).select_from(jwt_replay))
            feedback_rows = connection.scalar(select(func.count()).select_from(feedback))
    finally:
        engine.dispose()
    assert (ledger, replay, feedback_rows) == (20, 20, 0)
