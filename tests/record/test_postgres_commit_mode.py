"""PostgreSQL durability per write: the per-call writes (JWT replay record, card ledger) commit with
`synchronous_commit = off` for their own transaction only; feedback and every other write keep the server's
default (on). The setting in effect is read from PostgreSQL inside each INSERT's transaction, not from what
the code asked for (docs/operations.md, "SQLite durability", the PostgreSQL paragraph)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event

from cds_service.record.db.engine import make_engine, writer
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.replay_store import DbReplayStore
from cds_service.record.feedback.store import FeedbackStore, IssuedCard, IssuedSuggestion
from cds_service.record.feedback.validate import FeedbackItem

CARD = "6b1f0c52-3c1e-4d0e-9a53-0f3f0e2b7a11"
SUGGESTION = "0d6c6f43-8f0e-4f0a-b8a4-52c7a0e1c9d2"
NOW = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def _commit_mode_per_insert(engine: Engine) -> list[tuple[str, str]]:
    """(table, synchronous_commit in effect) for every INSERT run on `engine` from now on."""
    seen: list[tuple[str, str]] = []

    def before(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO"):
            table = statement.split()[2].strip('"').split(".")[-1]
            mode = cursor.connection.execute("SHOW synchronous_commit").fetchone()[0]
            seen.append((table, mode))

    event.listen(engine, "before_cursor_execute", before)
    return seen


def test_ledger_and_replay_commit_asynchronously_and_feedback_does_not(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        seen = _commit_mode_per_insert(engine)
        replay = DbReplayStore(engine)
        expires = datetime.now(UTC) + timedelta(minutes=5)
        assert replay.check_and_record("https://ehr.example", "jti-1", expires)
        assert not replay.check_and_record("https://ehr.example", "jti-1", expires), "still exactly once"
        store = FeedbackStore(engine)
        store.record_cards(
            [IssuedCard(CARD, "ESCALATE", "R9", (IssuedSuggestion(SUGGESTION, "romosozumab", True),))],
            hook_instance="hook-1",
            patient_key="k",
            protocol_version="p",
            service_version="s",
            issued_at=NOW,
        )
        stored = store.store_feedback(
            [FeedbackItem(card=CARD, outcome="accepted", outcome_ts=NOW, accepted_suggestions=(SUGGESTION,))]
        )
        # SET LOCAL ends with its transaction: the pooled connection is back to the default
        with writer(engine).begin() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        engine.dispose()
    assert stored == 1
    assert seen == [
        ("jwt_replay", "off"),
        ("jwt_replay", "off"),
        ("card_ledger", "off"),
        ("card_suggestion", "off"),
        ("feedback", "on"),
    ]
