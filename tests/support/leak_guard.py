"""Suite-wide guard: no JWT (`eyJ...`) and no test access token may appear in any log record of the
whole test session, nor in the output of any server process the suite starts. conftest.py installs the
handler at start-up and fails the session at the end when anything leaked."""

from __future__ import annotations

import logging
import re
import threading

JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{8,}")
# The access tokens the tests send as fhirAuthorization.access_token or admin bearer tokens.
KNOWN_SECRETS = frozenset(
    {
        "access-token-Zq9-never-logged",
        "admin-report-token-for-tests-0001",
        "admin-token-0123456789",
        "real-server-token-456",
        "scenario-access-token-123",
        "secret-access-token-value",
        "secret-token-abc123",
        "metrics-operator-token-0001",
    }
)

_lock = threading.Lock()
_leaks: list[str] = []


def scan(source: str, text: str) -> None:
    """Record a leak found in `text` (never the secret itself, only where it was)."""
    hits = []
    if JWT_PATTERN.search(text):
        hits.append("a JWT")
    hits += [f"access token #{i}" for i, secret in enumerate(sorted(KNOWN_SECRETS)) if secret in text]
    if hits:
        with _lock:
            _leaks.append(f"{source}: {', '.join(hits)}")


def leaks() -> list[str]:
    with _lock:
        return list(_leaks)


class LeakCollector(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken record is not our concern here
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        scan(f"log record {record.name} ({record.pathname}:{record.lineno})", text)
