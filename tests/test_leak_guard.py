"""The suite-wide secret-leak guard itself detects what it must (and never stores the secret)."""

from __future__ import annotations

import logging

from tests.support import leak_guard


def test_guard_finds_a_jwt_and_a_known_token_but_keeps_neither() -> None:
    before = len(leak_guard.leaks())
    collector = leak_guard.LeakCollector()
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token %s", ("eyJhbGciOiJFUzM4NCJ9.e30.sig",), None
    )
    collector.emit(record)
    leak_guard.scan("probe", "Bearer scenario-access-token-123")
    found = leak_guard.leaks()[before:]
    assert len(found) == 2
    assert all("eyJ" not in line and "scenario-access-token" not in line for line in found)
    with leak_guard._lock:  # these were planted by this test: not real leaks of the suite
        del leak_guard._leaks[before:]


def test_guard_ignores_clean_text() -> None:
    before = len(leak_guard.leaks())
    leak_guard.scan("probe", "fhir GET host=fhir.example.org type=Observation status=200")
    assert len(leak_guard.leaks()) == before
