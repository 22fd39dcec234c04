"""Alembic migrations: from an empty database, concurrent upgrades, engine settings and URLs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from cds_service.record.db.engine import (
    DatabaseConfigError,
    DatabaseUnavailable,
    database_url,
    make_engine,
    sqlite_file,
)
from cds_service.record.db.migrate import (
    current_revision,
    downgrade,
    head_revision,
    is_initialised,
    run_upgrade,
    upgrade,
)
from cds_service.record.db.schema import VERSION_TABLE, metadata
from tests.support.databases import (  # noqa: F401 - pytest fixtures
    any_db_url_fixture,
    postgres_admin_fixture,
    postgres_url_fixture,
    sqlite_url_fixture,
)

TABLES = {"card_ledger", "card_suggestion", "feedback", "jwt_replay", VERSION_TABLE}
ROOT = Path(__file__).resolve().parents[2]
_UPGRADE_AT = """
import sys, time
from cds_service.record.db.migrate import run_upgrade
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(run_upgrade(sys.argv[1]))
"""


@pytest.fixture(name="engine")
def engine_fixture(any_db_url: str) -> Iterator[Engine]:
    engine = make_engine(any_db_url)
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def assert_schema_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, metadata) == []
        versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    assert versions == [head_revision()]


def test_migration_from_an_empty_database(engine: Engine) -> None:
    assert not is_initialised(engine)
    assert current_revision(engine) is None
    upgrade(engine)
    assert tables(engine) >= TABLES
    assert current_revision(engine) == head_revision() == "0001"
    assert is_initialised(engine)
    assert_schema_matches_models(engine)
    upgrade(engine)  # a no-op the second time
    assert_schema_matches_models(engine)


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    upgrade(engine)
    downgrade(engine, "base")
    assert tables(engine) & TABLES <= {VERSION_TABLE}
    assert current_revision(engine) is None
    upgrade(engine)
    assert_schema_matches_models(engine)


def test_two_processes_migrating_at_once(any_db_url: str, engine: Engine) -> None:
    start_at = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _UPGRADE_AT, any_db_url, str(start_at)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _out, err in outputs]
    assert [out.strip() for out, _err in outputs] == ["0001", "0001"]
    assert tables(engine) >= TABLES
    assert_schema_matches_models(engine)


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in (
                    "journal_mode",
                    "busy_timeout",
                    "foreign_keys",
                    "synchronous",
                    "wal_autocheckpoint",
                )
            }
            assert connection.execute(select(text("1"))).scalar() == 1
    finally:
        engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "foreign_keys": 1,
        "synchronous": 2,
        "wal_autocheckpoint": 10_000,
    }


def test_sqlite_migration_is_transactional(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure half-way through leaves no table behind (SQLAlchemy emits BEGIN, DDL included)."""
    from alembic.operations import Operations

    engine = make_engine(sqlite_url)
    original = Operations.create_index

    def fail_on_second_index(self: Operations, name: str, *args: object, **kwargs: object) -> object:
        if name == "ix_feedback_outcome_ts":
            raise RuntimeError("boom")
        return original(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Operations, "create_index", fail_on_second_index)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            upgrade(engine)
        assert tables(engine) == set()
    finally:
        engine.dispose()


def test_database_url_defaults_to_an_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    url = database_url(None, tmp_path / "data")
    assert url == f"sqlite:///{tmp_path / 'data' / 'cds-service.sqlite3'}"
    assert database_url("  ", tmp_path) == database_url(None, tmp_path)
    assert sqlite_file(url) == tmp_path / "data" / "cds-service.sqlite3"
    engine = make_engine(url)  # creates the data directory
    engine.dispose()
    assert (tmp_path / "data").is_dir()


def test_database_url_normalises_postgres_drivers(tmp_path: Path) -> None:
    assert database_url("postgresql://u:pw@db/cds", tmp_path) == "postgresql+psycopg://u:pw@db/cds"
    assert database_url("postgres://u@db/cds", tmp_path) == "postgresql+psycopg://u@db/cds"
    assert sqlite_file("postgresql://u@db/cds") is None
    assert sqlite_file("sqlite://") is None


@pytest.mark.parametrize("url", ["mysql://u@db/cds", "not a url", "postgresql+psycopg2://u@db/cds"])
def test_unsupported_urls_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(DatabaseConfigError):
        database_url(url, tmp_path)


def test_run_upgrade_reports_an_unreachable_database() -> None:
    with pytest.raises(DatabaseUnavailable):
        run_upgrade("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2")
