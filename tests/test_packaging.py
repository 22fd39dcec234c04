"""The built wheel (what the Docker image installs) carries every data file the service reads."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_knowledge_keys_and_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("cds_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "cds_service/knowledge/osteoporosis.yaml",
        "cds_service/knowledge/codes/conditions.csv",
        "cds_service/knowledge/codes/medications.csv",
        "cds_service/knowledge/codes/observations.csv",
        "cds_service/knowledge/codes/SOURCES.md",
        "cds_service/keys/sandbox-jwks.json",
        "cds_service/keys/PROVENANCE.md",
        "cds_service/record/db/migrations/env.py",
        "cds_service/record/db/migrations/versions/0001_initial.py",
    ):
        assert required in names, required
    assert not any(name.startswith(("tests/", "benchmarks/", "fhir_fixtures/")) for name in names)
