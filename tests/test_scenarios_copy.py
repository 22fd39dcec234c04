"""fhir_fixtures/scenarios.yaml is the repository's copy of the shared clinical scenarios, the default input
of tools/gen_fixtures.py (nothing outside the repository is read). When the shared scenarios are beside the
checkout (developers, CI), the copy must be identical to them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.support.tools import load_tool

REPO = Path(__file__).resolve().parents[1]
COPY = REPO / "fhir_fixtures" / "scenarios.yaml"
SHARED = REPO.parent / "shared" / "clinical" / "scenarios" / "scenarios.yaml"


def test_the_scenarios_ship_with_the_repository_and_match_the_fixtures() -> None:
    scenarios = yaml.safe_load(COPY.read_text(encoding="utf-8"))
    index = json.loads((REPO / "fhir_fixtures" / "scenarios" / "index.json").read_text(encoding="utf-8"))
    assert [str(scenario["id"]) for scenario in scenarios] == [entry["id"] for entry in index]


def test_the_generator_reads_only_repository_files_by_default() -> None:
    tool = load_tool("gen_fixtures")
    assert tool.SCENARIOS_YAML == COPY
    assert tool.CODES_DIR == REPO / "cds_service" / "knowledge" / "codes"


def test_the_shipped_copy_matches_the_shared_scenarios() -> None:
    if not SHARED.exists():  # a checkout without the shared folder: nothing to compare against
        return
    assert COPY.read_bytes() == SHARED.read_bytes(), (
        "run: cp ../shared/clinical/scenarios/scenarios.yaml fhir_fixtures/scenarios.yaml"
    )
