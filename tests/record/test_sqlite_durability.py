"""Durability per write: on SQLite the per-call writes skip the fsync, feedback keeps it, and none is lost
when the writing process is SIGKILLed right after its commit; on PostgreSQL the per-call writes commit with
`synchronous_commit` off, feedback with the server's default (docs/operations.md, "SQLite durability").

The setting in effect is read from the database itself inside each INSERT's transaction (SQLite `PRAGMA
synchronous`: 1 = NORMAL, 2 = FULL; PostgreSQL `SHOW synchronous_commit`), not from what the code asked for.
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


def _setting_per_insert(engine: Engine, probe: str = "PRAGMA synchronous") -> list[tuple[str, Any]]:
    """(table, what `probe` reads inside the transaction) for every INSERT run on `engine` from now on."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO"):
            table = statement.split()[2].strip('"').split(".")[-1]
            seen.append((table, cursor.connection.execute(probe).fetchone()[0]))

    event.listen(engine, "before_cursor_execute", before)
    return seen


def _card() -> IssuedCard:
    return IssuedCard(CARD, "ESCALATE", "R9", (IssuedSuggestion(SUGGESTION, "romosozumab", True),))


def _write_one_of_each(engine: Engine, probe: str) -> tuple[list[tuple[str, Any]], Any]:
    """A replay record (twice: still exactly once), a card in the ledger and its feedback, on a migrated
    `engine`; returns the setting `probe` read per INSERT and, after them, in an ordinary write."""
    upgrade(engine)
    seen = _setting_per_insert(engine, probe)
    replay = DbReplayStore(engine)
    expires = datetime.now(UTC) + timedelta(minutes=5)
    assert replay.check_and_record("https://ehr.example", "jti-1", expires)
    assert not replay.check_and_record("https://ehr.example", "jti-1", expires), "still exactly once"
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
    assert stored == 1
    # a pooled connection that last wrote the ledger goes back to the default for the next ordinary write
    with writer(engine).begin() as connection:
        after = connection.exec_driver_sql(probe).scalar()
    return seen, after


def test_ledger_and_replay_skip_the_fsync_and_feedback_keeps_it(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        seen, after = _write_one_of_each(engine, "PRAGMA synchronous")
    finally:
        engine.dispose()
    assert after == FULL
    assert seen == [
        ("jwt_replay", NORMAL),
        ("jwt_replay", NORMAL),
        ("card_ledger", NORMAL),
        ("card_suggestion", NORMAL),
        ("feedback", FULL),
    ]


def test_on_postgresql_ledger_and_replay_commit_without_the_flush_and_feedback_with_it(
    postgres_url: str,
) -> None:
    """The same choice on PostgreSQL: `SET LOCAL synchronous_commit TO OFF` for the per-call writes only."""
    engine = make_engine(postgres_url)
    try:
        seen, after = _write_one_of_each(engine, "SHOW synchronous_commit")
    finally:
        engine.dispose()
    assert after == "on", "SET LOCAL ends with its transaction"
    assert seen == [
        ("jwt_replay", "off"),
        ("jwt_replay", "off"),
        ("card_ledger", "off"),
        ("card_suggestion", "off"),
        ("feedback", "on"),
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
