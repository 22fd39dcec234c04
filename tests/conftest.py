"""Shared fixtures: the real FHIR test server process (session scope) and the databases
(a fresh SQLite file, a fresh PostgreSQL schema, or both as `any_db_url`)."""

from __future__ import annotations

import logging

import pytest

from tests.support.databases import (
    any_db_url_fixture,
    postgres_admin_fixture,
    postgres_url_fixture,
    sqlite_url_fixture,
)
from tests.support.fhir_server import fhir_server_fixture
from tests.support.leak_guard import LeakCollector, leaks

__all__ = [
    "any_db_url_fixture",
    "fhir_server_fixture",
    "postgres_admin_fixture",
    "postgres_url_fixture",
    "sqlite_url_fixture",
]


_COLLECTOR = LeakCollector(level=logging.DEBUG)


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_COLLECTOR)
    root.setLevel(logging.DEBUG)  # every record of the whole session passes the leak guard


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = leaks()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"SECRET LEAK: {len(found)} place(s) logged a JWT or an access token:", red=True
            )
            for line in found[:50]:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _fresh_fhir_peer_guard() -> None:
    """Each test starts with no fhirServer circuit open (the guard is process-wide, like in a worker)."""
    from cds_service.gather.shared_http import (
        DEFAULT_CIRCUIT_OPEN_S,
        DEFAULT_FAILURE_THRESHOLD,
        DEFAULT_MAX_CALLS_PER_SERVER,
        configure_fhir_peer_guard,
    )

    configure_fhir_peer_guard(
        max_calls_per_server=DEFAULT_MAX_CALLS_PER_SERVER,
        failure_threshold=DEFAULT_FAILURE_THRESHOLD,
        open_s=DEFAULT_CIRCUIT_OPEN_S,
    )
