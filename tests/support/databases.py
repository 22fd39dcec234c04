"""Database fixtures: a fresh SQLite file, a fresh PostgreSQL schema, or both (``any_db_url``).

PostgreSQL comes from ``CDS_TEST_DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test gets its own schema ``cdstest_<session>_<n>`` (search_path set through the libpq ``options``
connection parameter inside the URL, so subprocesses inherit it); every schema of the session is
dropped at the end. An unreachable server skips the PostgreSQL cases, or fails them when ``CI=true``.

Import the fixture functions into a test module: ``from tests.support.databases import any_db_url_fixture``.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_SESSION = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def postgres_base_url() -> str:
    return os.environ.get("CDS_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL


def with_search_path(url: str, schema: str) -> str:
    parsed = make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


def _admin_engine() -> Engine:
    return create_engine(postgres_base_url(), connect_args={"connect_timeout": 3}, pool_pre_ping=True)


@pytest.fixture(scope="session", name="postgres_admin")
def postgres_admin_fixture() -> Iterator[Engine]:
    """An engine on the test server's database; skip (or fail with CI=true) when it is unreachable."""
    engine = _admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        engine.dispose()
        where = make_url(postgres_base_url()).render_as_string()
        message = f"PostgreSQL at {where} unreachable ({type(error).__name__})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    with engine.begin() as connection:
        schemas = connection.scalars(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :prefix"),
            {"prefix": f"cdstest_{_SESSION}_%"},
        ).all()
        for schema in schemas:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(name="postgres_url")
def postgres_url_fixture(postgres_admin: Engine) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema (dropped after the test)."""
    schema = f"cdstest_{_SESSION}_{next(_COUNTER)}"
    with postgres_admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield with_search_path(postgres_base_url(), schema)
    with postgres_admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(name="sqlite_url")
def sqlite_url_fixture(tmp_path: Path) -> str:
    """A URL of an SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'data' / 'cds.sqlite3'}"


@pytest.fixture(name="any_db_url", params=["sqlite", "postgres"])
def any_db_url_fixture(request: pytest.FixtureRequest) -> str:
    """Each test runs once on SQLite and once on PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
