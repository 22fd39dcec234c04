"""The replay check and the ledger write execute INSERT statements built once per store, the rows bound at
execution: the SQL is the one the per-call statements compiled to (SQLite and PostgreSQL), and the rows
stored and the first-time answers are the same."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.dialects import postgresql, sqlite

from cds_service.record.db.engine import insert_for, make_engine
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.replay_store import DbReplayStore
from cds_service.record.db.schema import card_ledger, card_suggestion, jwt_replay
from cds_service.record.feedback.store import FeedbackStore
from tests.support.databases import (  # noqa: F401 - pytest fixtures
    any_db_url_fixture,
    postgres_admin_fixture,
    postgres_url_fixture,
    sqlite_url_fixture,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _per_call_replay_insert(bind: Engine, iss: str, jti: str, expires_at: datetime, now: datetime) -> Any:
    """The statement check_and_record built on every call before."""
    insert = insert_for(bind, jwt_replay).values(iss=iss, jti=jti, expires_at=expires_at)
    return insert.on_conflict_do_update(
        index_elements=[jwt_replay.c.iss, jwt_replay.c.jti],
        set_={"expires_at": insert.excluded.expires_at},
        where=jwt_replay.c.expires_at <= now,
    ).returning(jwt_replay.c.jti)


def _sql(statement: Any, dialect: Any, keys: list[str] | None = None) -> str:
    compiled = statement.compile(dialect=dialect, column_keys=keys)
    return re.sub(r"%\((\w+?)(_\d+)?\)s", "%(param)s", str(compiled))  # PostgreSQL names its parameters


def test_the_replay_insert_compiles_to_the_same_sql() -> None:
    row = ["iss", "jti", "expires_at", "now"]
    for url, dialect in (
        ("sqlite://", sqlite.dialect()),
        ("postgresql+psycopg://u@127.0.0.1/x", postgresql.dialect()),
    ):
        engine = create_engine(url)
        store = DbReplayStore(engine)
        before = _per_call_replay_insert(engine, "i", "j", NOW, NOW)
        assert _sql(store._first_time_insert(), dialect, row) == _sql(before, dialect)
        assert store._first_time_insert() is store._first_time_insert()


def test_the_ledger_inserts_compile_to_the_same_sql(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    store = FeedbackStore(engine)
    with engine.connect() as connection:
        ledger, linked = store._ledger_inserts(connection)
        before_ledger = insert_for(connection, card_ledger).on_conflict_do_nothing(
            index_elements=[card_ledger.c.uuid]
        )
        before_linked = insert_for(connection, card_suggestion).on_conflict_do_nothing(
            index_elements=[card_suggestion.c.card_uuid, card_suggestion.c.suggestion_uuid]
        )
        for now, then in ((ledger, before_ledger), (linked, before_linked)):
            keys = [column.name for column in now.table.columns if column.name != "id"]
            assert _sql(now, connection.dialect, keys) == _sql(then, connection.dialect, keys)
        assert store._ledger_inserts(connection)[0] is ledger


def test_replay_rows_and_answers_match_the_per_call_statement(any_db_url: str) -> None:
    """Both statements on one database (SQLite and PostgreSQL), each on its own issuers."""
    engine = make_engine(any_db_url)
    upgrade(engine)
    stores = [engine, engine]
    prebuilt = DbReplayStore(stores[0], clock=lambda: NOW)
    answers: list[tuple[bool, bool]] = []
    calls = [
        ("a", "1", NOW + timedelta(minutes=5)),
        ("a", "1", NOW + timedelta(minutes=5)),  # replay
        ("a", "2", NOW - timedelta(seconds=1)),
        ("a", "2", NOW + timedelta(minutes=1)),  # the stored one expired: taken again
        ("b", "1", NOW + timedelta(hours=1)),
    ]
    for iss, jti, expires_at in calls:
        with engine.begin() as connection:
            statement = _per_call_replay_insert(engine, f"per-call-{iss}", jti, expires_at, NOW)
            before = connection.execute(statement).first() is not None
        answers.append((prebuilt.check_and_record(f"prebuilt-{iss}", jti, expires_at), before))
    assert answers == [(True, True), (False, False), (True, True), (True, True), (True, True)]
    with engine.connect() as connection:
        ordered = select(jwt_replay).order_by(jwt_replay.c.iss, jwt_replay.c.jti)
        rows = connection.execute(ordered).all()
    per_call = [
        (iss.removeprefix("per-call-"), jti, at) for iss, jti, at in rows if iss.startswith("per-call-")
    ]
    prebuilt_rows = [
        (iss.removeprefix("prebuilt-"), jti, at) for iss, jti, at in rows if iss.startswith("prebuilt-")
    ]
    assert per_call == prebuilt_rows and len(per_call) == 3
    engine.dispose()
