"""Settings for in-process app tests: auth off unless asked, data (SQLite ledger, keys) in a temp dir."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from cds_service.config import Settings, load_settings

_DATA_DIR = Path(tempfile.mkdtemp(prefix="cds-test-data-"))
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)


def test_settings(env: dict[str, str] | None = None) -> Settings:
    # in-process tests call one app as fast as it answers, all from one address: per-client limits off
    # unless a test sets them (tests/faults/test_flood_client.py); likewise the per-address budget of
    # failed authentications (security tests send many refused tokens from the test client's address)
    values = {
        "CDS_AUTH_MODE": "off",
        "CDS_DATA_DIR": str(_DATA_DIR),
        "CDS_CLIENT_RATE_LIMIT": "",
        "CDS_CLIENT_MAX_IN_FLIGHT": "0",
        "CDS_AUTH_FAILURE_LIMIT": "",
    }
    values.update(env or {})
    return load_settings(values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
