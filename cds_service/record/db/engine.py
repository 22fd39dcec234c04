"""Database URL resolution and engines: SQLite (embedded, WAL) by default, PostgreSQL for replicas.

SQLite connections get WAL, `synchronous=FULL` (a committed transaction survives a crash of the
process and of the machine), a busy timeout and foreign keys; SQLAlchemy emits BEGIN itself (the sqlite3
module's legacy transaction control is turned off), so DDL is transactional and writers can ask for
`BEGIN IMMEDIATE`. The two writes of every hook call (JWT replay record, card ledger) may ask for
`synchronous=NORMAL` instead (`writer(engine, durable=False)`): in WAL mode such a commit survives the
process being killed (SIGKILL) but not a power loss; it saves an fsync (~3 ms here) per write. Feedback
and everything else stays FULL (docs/operations.md, "SQLite durability"). On PostgreSQL the same two writes
commit with `synchronous_commit = off` (SET LOCAL, that transaction only): visible to every other session
at once (replay protection across instances is unchanged), durable against a crash of this service, but a
crash of the PostgreSQL server may lose the last few hundred ms of them; the commit no longer waits for
the server's WAL flush.
WAL checkpoints run in the background, never inside a caller's commit (`wal_checkpoint.py`).
Logs never show a URL with its password.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url

from cds_service.core.errors import Issue, ServiceError
from cds_service.record.db.wal_checkpoint import AUTOCHECKPOINT_BACKSTOP_PAGES, checkpoint_in_background

logger = logging.getLogger(__name__)

DEFAULT_SQLITE_FILE = "cds-service.sqlite3"
SQLITE_BUSY_TIMEOUT_MS = 5_000
SQLITE_WAL_LIMIT_BYTES = 16 * 1024 * 1024
PG_CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 5
RETRY_AFTER_S = 5
_BEGIN_OPTION = "cds_sqlite_begin"
_SYNC_OPTION = "cds_sqlite_sync"
_SYNC_INFO_KEY = "cds_sqlite_synchronous"
_PG_ASYNC_COMMIT_OPTION = "cds_pg_async_commit"
SYNC_FULL = "FULL"
SYNC_NORMAL = "NORMAL"
_WAL_RETRY_S = 0.02
_PG_UNDEFINED_TABLE = "42P01"
_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}


class DatabaseConfigError(ValueError):
    """CDS_DATABASE_URL is not a usable SQLite or PostgreSQL (psycopg 3) URL."""


class DatabaseUnavailable(ServiceError):
    """503: the database cannot be reached or is busy; the client should retry after `retry_after` s."""

    def __init__(
        self, diagnostics: str = "the database is unavailable; retry later", retry_after: int = RETRY_AFTER_S
    ) -> None:
        super().__init__([Issue("transient", diagnostics)], 503)
        self.retry_after = retry_after
        self.headers: dict[str, str] = {"Retry-After": str(retry_after)}


def database_url(explicit: str | None, data_dir: Path) -> str:
    """`explicit` (CDS_DATABASE_URL) when set, else an SQLite file in `data_dir` (absolute path)."""
    if explicit is not None and explicit.strip():
        return _normalised(explicit.strip()).render_as_string(hide_password=False)
    return f"sqlite:///{(data_dir / DEFAULT_SQLITE_FILE).resolve()}"


def make_engine(url: str) -> Engine:
    """An engine for an SQLite or PostgreSQL URL; raises DatabaseConfigError for anything else."""
    parsed = _normalised(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "application_name" not in parsed.query:
        connect_args["application_name"] = "cds-service"
    engine = create_engine(parsed, pool_pre_ping=True, pool_timeout=POOL_TIMEOUT_S, connect_args=connect_args)

    @event.listens_for(engine, "begin")
    def _asynchronous_commit(connection: Connection) -> None:
        if connection.get_execution_options().get(_PG_ASYNC_COMMIT_OPTION):
            connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")  # this transaction only

    return engine


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = _normalised(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or _in_memory(database):
        return None
    return Path(database).expanduser()


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def writer(engine: Engine, *, durable: bool = True) -> Engine:
    """The engine to open write transactions with: on SQLite they start with BEGIN IMMEDIATE.

    A deferred SQLite transaction that reads and then writes can fail at once with SQLITE_BUSY
    when another connection wrote in between; IMMEDIATE takes the write lock first (busy timeout).
    `durable=False`: on SQLite commit with `synchronous=NORMAL`, on PostgreSQL with `synchronous_commit =
    off`: durable against a crash of this process but not of the machine or database server (see the
    module docstring).
    """
    if not is_sqlite(engine):
        return engine if durable else engine.execution_options(**{_PG_ASYNC_COMMIT_OPTION: True})
    sync = SYNC_FULL if durable else SYNC_NORMAL
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE", _SYNC_OPTION: sync})


def insert_for(bind: Engine | Connection, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT (SQLite and PostgreSQL share the ON CONFLICT ... API)."""
    if bind.dialect.name == "sqlite":
        return sqlite.insert(table)
    if bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    raise DatabaseConfigError(f"unsupported database dialect {bind.dialect.name!r}")


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def unavailable_on_error(action: str) -> Iterator[None]:
    """Map connection, lock and pool errors to DatabaseUnavailable (503); log the error class only."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError) as error:
        _log_unavailable(action, error)
        raise DatabaseUnavailable() from error
    except exc.ProgrammingError as error:
        if getattr(error.orig, "sqlstate", None) != _PG_UNDEFINED_TABLE:
            raise
        _log_unavailable(action, error)  # PostgreSQL schema not migrated yet (SQLite: OperationalError)
        raise DatabaseUnavailable() from error
    except exc.DatabaseError as error:
        if type(error) is not exc.DatabaseError:
            raise  # IntegrityError, DataError...: not an outage
        _log_unavailable(action, error)  # e.g. SQLite "file is not a database" (corrupt or overwritten file)
        raise DatabaseUnavailable("the database file is unusable; retry later") from error


def startup_failure(error: exc.SQLAlchemyError, url: str) -> str:
    """One line for a database that cannot be used at start-up: the driver's first line, no password."""
    cause = getattr(error, "orig", None) or error
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        shown = "CDS_DATABASE_URL"
    return f"the database at {shown} cannot be used ({type(cause).__name__}: {first_line})"


def _log_unavailable(action: str, error: Exception) -> None:
    cause = type(getattr(error, "orig", None) or error).__name__
    logger.warning("database unavailable during %s (%s/%s)", action, type(error).__name__, cause)


def _normalised(url: str) -> URL:
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise DatabaseConfigError("CDS_DATABASE_URL is not a valid SQLAlchemy URL") from None
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite+pysqlite")
    raise DatabaseConfigError(
        f"CDS_DATABASE_URL driver {parsed.drivername!r} is not supported: use sqlite:///PATH "
        "or postgresql+psycopg://USER@HOST/DB"
    )


def _in_memory(database: str) -> bool:
    return database in ("", ":memory:") or database.startswith("file::memory:")


def _enable_wal(cursor: Any) -> None:
    """PRAGMA journal_mode=WAL, retried: a connection converting a new file makes others fail at once
    with "database is locked" (SQLite does not call the busy handler for that lock)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_RETRY_S)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = _in_memory(database)
    if not in_memory:
        Path(database).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = create_engine(
        url, pool_timeout=POOL_TIMEOUT_S, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
            if not in_memory:
                _enable_wal(cursor)
            cursor.execute(f"PRAGMA synchronous = {SYNC_FULL}")
            record.info[_SYNC_INFO_KEY] = SYNC_FULL
            # after each checkpoint the WAL file is truncated back to this size (default: never shrinks)
            cursor.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_LIMIT_BYTES:d}")
            if not in_memory:  # checkpoints run in the background (wal_checkpoint.py), this is the backstop
                cursor.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_BACKSTOP_PAGES:d}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        _set_synchronous(connection, options.get(_SYNC_OPTION, SYNC_FULL))
        mode = options.get(_BEGIN_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")

    if not in_memory:
        checkpoint_in_background(engine, str(Path(database).expanduser()))
    return engine


def _set_synchronous(connection: Connection, wanted: str) -> None:
    """Per transaction, outside it (before BEGIN): a pooled connection keeps what the last one set."""
    info = connection.info
    if info.get(_SYNC_INFO_KEY) != wanted:
        setting = SYNC_NORMAL if wanted == SYNC_NORMAL else SYNC_FULL
        connection.exec_driver_sql(f"PRAGMA synchronous = {setting}")
        info[_SYNC_INFO_KEY] = wanted
