"""The test FHIR server (Medplum, in memory) answers every search the service sends, correctly.

Medplum returns an empty Bundle for search parameters it does not support, so an unsupported search would
look like "no data". These tests load every scenario bundle (plus a probe patient that has one resource of
each searched type, because no scenario has procedures, allergies or medication requests) and check that
each prefetch query of the service returns exactly the resources of the fixture, newest first where sorted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

if not __package__:  # tests/ is not a package: make `tests.support` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds_service.gather.prefetch import build_prefetch_templates, substitute
from cds_service.knowledge.loader import packaged_knowledge
from tests.support.fhir_server import (
    FhirServerProcess,
    FhirServerUnavailableError,
    find_node_binary,
)
from tests.support.fixtures import load_scenario_bundle, load_scenario_index, prefetch_for

pytestmark = pytest.mark.fhir_server

SCENARIO_IDS = [s["id"] for s in load_scenario_index()]
TEMPLATES = build_prefetch_templates(packaged_knowledge().dxa_codes(), packaged_knowledge().lab_codes())
SORTED_KEYS = {"dxa", "labs"}
PROBE_ID = "probe-1"


def _probe_bundle() -> dict[str, Any]:
    """One patient with one resource of every searched type (codes from the shared code tables)."""
    subject = {"reference": f"Patient/{PROBE_ID}"}

    def concept(system: str, code: str, display: str) -> dict[str, Any]:
        return {"coding": [{"system": system, "code": code, "display": display}], "text": display}

    alendronate = concept(
        "http://www.nlm.nih.gov/research/umls/rxnorm", "904431", "alendronic acid 70 MG Oral Tablet"
    )
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": PROBE_ID, "gender": "female", "birthDate": "1950-01-01"},
        {
            "resourceType": "Observation",
            "id": f"{PROBE_ID}-obs-1",
            "status": "final",
            "subject": subject,
            "code": concept("http://loinc.org", "38264-8", "DXA Hip [T-score] Bone density"),
            "effectiveDateTime": "2024-01-01",
            "valueQuantity": {"value": -2.6, "unit": "{T-score}"},
        },
        {
            "resourceType": "Observation",
            "id": f"{PROBE_ID}-obs-2",
            "status": "final",
            "subject": subject,
            "code": concept("http://loinc.org", "33914-3", "Glomerular filtration rate/1.73 sq M.predicted"),
            "effectiveDateTime": "2024-01-01",
            "valueQuantity": {"value": 70, "unit": "mL/min/{1.73_m2}"},
        },
        {
            "resourceType": "Condition",
            "id": f"{PROBE_ID}-cond-1",
            "subject": subject,
            "code": concept(
                "http://hl7.org/fhir/sid/icd-10-cm",
                "M81.0",
                "Age-related osteoporosis without current pathological fracture",
            ),
        },
        {
            "resourceType": "Procedure",
            "id": f"{PROBE_ID}-proc-1",
            "status": "completed",
            "subject": subject,
            "code": concept("http://snomed.info/sct", "312681000", "Bone density scan (procedure)"),
            "performedDateTime": "2024-01-01",
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": f"{PROBE_ID}-allergy-1",
            "patient": subject,
            "code": concept("http://www.nlm.nih.gov/research/umls/rxnorm", "46041", "Alendronate"),
        },
        {
            "resourceType": "MedicationStatement",
            "id": f"{PROBE_ID}-medstmt-1",
            "status": "active",
            "subject": subject,
            "medicationCodeableConcept": alendronate,
            "effectivePeriod": {"start": "2021-01-01"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": f"{PROBE_ID}-medreq-1",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": alendronate,
            "authoredOn": "2021-01-01",
        },
        {
            "resourceType": "MedicationAdministration",
            "id": f"{PROBE_ID}-medadmin-1",
            "status": "completed",
            "subject": subject,
            "medicationCodeableConcept": alendronate,
            "effectiveDateTime": "2021-01-01",
        },
        {
            "resourceType": "MedicationDispense",
            "id": f"{PROBE_ID}-meddisp-1",
            "status": "completed",
            "subject": subject,
            "medicationCodeableConcept": alendronate,
            "whenHandedOver": "2021-01-01",
        },
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }


@pytest.fixture(scope="module")
def loaded_server(fhir_server: FhirServerProcess) -> FhirServerProcess:
    for scenario_id in SCENARIO_IDS:
        fhir_server.load(load_scenario_bundle(scenario_id))
    fhir_server.load(_probe_bundle())
    return fhir_server


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def _dates(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["effectiveDateTime"] for e in bundle.get("entry", [])]


def test_metadata_is_r4(loaded_server: FhirServerProcess) -> None:
    capability = loaded_server.get("metadata")
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"


def test_every_service_search_is_supported(loaded_server: FhirServerProcess) -> None:
    """Each template returns the probe patient's one resource of that type: NON-EMPTY for every search."""
    for key, template in TEMPLATES.items():
        result = loaded_server.get(substitute(template, PROBE_ID))
        if key == "patient":
            assert result["resourceType"] == "Patient"
            assert result["id"] == PROBE_ID
            continue
        assert result["resourceType"] == "Bundle"
        assert result["type"] == "searchset"
        assert len(_ids(result)) == 1, f"{key}: {template} returned {_ids(result)}"
        assert _ids(result)[0].startswith(f"{PROBE_ID}-")


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_service_searches_return_the_fixture(loaded_server: FhirServerProcess, scenario_id: str) -> None:
    """Live results equal the prefetch built from the bundle (same resources; dxa/labs newest first)."""
    expected = prefetch_for(load_scenario_bundle(scenario_id))
    for key, template in TEMPLATES.items():
        result = loaded_server.get(substitute(template, scenario_id))
        if key == "patient":
            assert {k: v for k, v in result.items() if k != "meta"} == expected["patient"]
            continue
        assert result["total"] == expected[key]["total"], key
        if key in SORTED_KEYS:
            assert _dates(result) == sorted(_dates(result), reverse=True), f"{key} not newest first"
            assert _dates(result) == _dates(expected[key]), key
            assert sorted(_ids(result)) == sorted(_ids(expected[key])), key
        else:
            assert _ids(result) == _ids(expected[key]), key
        for entry in result.get("entry", []):
            assert entry["fullUrl"].startswith(loaded_server.base_url + "/")
    assert expected["dxa"]["total"] > 0 or scenario_id == "s45"  # s45 has its DXA only as PDF reports


def test_sort_count_and_typed_patient_reference(loaded_server: FhirServerProcess) -> None:
    dxa = substitute(TEMPLATES["dxa"], "s11")  # three DXA dates
    newest_first = loaded_server.get(dxa)
    assert _dates(newest_first)[0] == "2025-05-01"
    assert _dates(newest_first)[-1] == "2017-05-01"
    oldest_first = loaded_server.get(dxa.replace("_sort=-date", "_sort=date"))
    assert _dates(oldest_first) == sorted(_dates(newest_first))
    first_page = loaded_server.get(dxa + "&_count=2")
    assert len(_ids(first_page)) == 2
    assert first_page["total"] == newest_first["total"] > 2
    typed = loaded_server.get("MedicationAdministration", params={"patient": "Patient/s12"})
    assert len(_ids(typed)) == 9


def test_request_log_records_authorization_presence_only(loaded_server: FhirServerProcess) -> None:
    loaded_server.clear_requests()
    loaded_server.get("Condition", params={"patient": "s13"}, token="secret-token-value")
    loaded_server.get("Patient/s13")
    seen = loaded_server.requests()
    assert [(r.method, r.path, r.has_authorization) for r in seen] == [
        ("GET", "/Condition?patient=s13", True),
        ("GET", "/Patient/s13", False),
    ]
    assert "secret-token-value" not in repr(seen)
    assert "secret-token-value" not in loaded_server.stderr_tail()


def test_missing_node_modules_gives_the_install_hint(tmp_path: Path) -> None:
    with pytest.raises(FhirServerUnavailableError, match=r"npm ci --prefix tests/fhir_server"):
        find_node_binary(tmp_path)
