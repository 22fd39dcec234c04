"""Run the Alembic migrations programmatically (no alembic.ini), once even with concurrent workers.

PostgreSQL: the whole upgrade runs in one transaction holding `pg_advisory_xact_lock`; SQLite: in one
`BEGIN IMMEDIATE` transaction (the database write lock). A second process waits, then finds the
schema current and does nothing. DDL is transactional on both, so a failed upgrade leaves no trace.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, inspect, select

from cds_service.record.db.engine import is_sqlite, make_engine, safe_url, unavailable_on_error, writer
from cds_service.record.db.schema import VERSION_TABLE

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: "cdsmigr" as a 64-bit integer, shared by every replica.
ADVISORY_LOCK_KEY = int.from_bytes(b"cdsmigr", "big")
UPGRADE_HINT = "run `cds-service db upgrade`"


class DatabaseNotInitialised(RuntimeError):
    """The database has no schema yet (or an unknown one): run `cds-service db upgrade`."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An in-memory Alembic config; env.py migrates `connection` (required for upgrades)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def known_revisions() -> frozenset[str]:
    """Every revision id this code's migrations define."""
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(revision.revision for revision in script.walk_revisions())


def schema_state(revision: str | None, head: str, known: frozenset[str]) -> str:
    """`ok` at the code's head; `ahead` when a newer release migrated past it (a revision this code
    does not know: migrations are additive, so this code still works on it; a rolling upgrade runs
    the migration before the new pods start); `not migrated` when never migrated or behind."""
    if revision == head:
        return "ok"
    if revision is not None and revision not in known:
        return "ahead"
    return "not migrated"


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, or None when it was never migrated."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def is_initialised(engine: Engine) -> bool:
    """True when the migrations ran at least once (the schema may still be older than the code's head)."""
    return current_revision(engine) is not None


def require_initialised(engine: Engine) -> None:
    if not is_initialised(engine):
        raise DatabaseNotInitialised(f"the database has no schema: {UPGRADE_HINT}")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision` under the cross-process guard; a no-op when already there."""
    if is_sqlite(engine):
        with writer(engine).begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    else:
        with engine.begin() as connection:
            connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
            command.upgrade(alembic_config(connection), revision)
    logger.info("database schema at %s (%s)", current_revision(engine), safe_url(engine))


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to `revision` ("base" = empty); for tests and manual repair only."""
    guard = writer(engine) if is_sqlite(engine) else engine
    with guard.begin() as connection:
        if not is_sqlite(engine):
            connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        command.downgrade(alembic_config(connection), revision)


def run_upgrade(url: str) -> str:
    """`cds-service db upgrade` and `serve` start-up: migrate the database at `url`; returns the revision.

    Raises DatabaseConfigError for an unusable URL and DatabaseUnavailable when it cannot be reached.
    """
    engine = make_engine(url)
    try:
        with unavailable_on_error("migration"):
            upgrade(engine)
            return current_revision(engine) or "base"
    finally:
        engine.dispose()
