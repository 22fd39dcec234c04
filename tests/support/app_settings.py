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
    values = {"CDS_AUTH_MODE": "off", "CDS_DATA_DIR": str(_DATA_DIR)}
    values.update(env or {})
    return load_settings(values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
