"""The committed FHIR fixtures (fhir_fixtures/): structure, R4 validity, codes, demo requests."""

from __future__ import annotations

import base64
import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest

if not __package__:  # tests/ is not a package: make `tests.support` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir.resources.R4B import get_fhir_model_class

from tests.support.fixtures import (
    DEMO_DIR,
    DXA_CODES,
    LAB_CODES,
    PREFETCH_BY_TYPE,
    PREFETCH_KEYS,
    REPO_ROOT,
    SCENARIOS_DIR,
    hook_request,
    load_scenario_bundle,
    load_scenario_index,
    observation_group,
    prefetch_for,
)

KNOWLEDGE_CODES = REPO_ROOT / "cds_service" / "knowledge" / "codes"
DEMO_IDS = ("s01", "s02", "s12", "s26")
SCENARIO_IDS = [s["id"] for s in load_scenario_index()]
UCUM = "http://unitsofmeasure.org"
# Codes stated by a scenario that the code tables lack for that system (see tools/gen_fixtures.py).
CODES_NOT_IN_TABLES = {
    ("http://hl7.org/fhir/sid/icd-10-cm", "M88.9"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "C50.911"),
}
CLINICAL_SYSTEMS = {
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.whocc.no/atc",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
}


def resources(bundle: dict[str, Any], resource_type: str | None = None) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if resource_type is None or e["resource"]["resourceType"] == resource_type
    ]


def codings(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for key in ("code", "medicationCodeableConcept", "bodySite"):
        found.extend(resource.get(key, {}).get("coding", []))
    return found


def test_index_lists_36_scenarios() -> None:
    index = load_scenario_index()
    assert len(index) == 36
    assert len(set(SCENARIO_IDS)) == 36
    for item in index:
        assert set(item) == {"id", "title", "as_of", "expect"}
        assert item["expect"]["outcome"]


def test_one_bundle_per_scenario() -> None:
    files = {p.stem for p in SCENARIOS_DIR.glob("*.json")} - {"index"}
    assert files == set(SCENARIO_IDS)


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_bundle_structure(scenario_id: str) -> None:
    bundle = load_scenario_bundle(scenario_id)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert 1 < len(bundle["entry"]) <= 50
    patients = resources(bundle, "Patient")
    assert len(patients) == 1
    assert patients[0]["id"] == scenario_id
    ids = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        ref = f"{resource['resourceType']}/{resource['id']}"
        assert entry["request"] == {"method": "PUT", "url": ref}
        assert entry["fullUrl"].startswith("urn:uuid:") or entry["fullUrl"] == ref
        assert ref not in ids
        ids.add(ref)
        if resource["resourceType"] != "Patient":
            assert resource["id"].startswith(f"{scenario_id}-")
            assert resource["subject"] == {"reference": f"Patient/{scenario_id}"}
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_bundle_is_valid_fhir(scenario_id: str) -> None:
    bundle = load_scenario_bundle(scenario_id)
    get_fhir_model_class("Bundle").model_validate(bundle)
    for resource in resources(bundle):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_observations(scenario_id: str) -> None:
    for obs in resources(load_scenario_bundle(scenario_id), "Observation"):
        assert obs["status"] == "final"
        assert obs["effectiveDateTime"]
        quantity = obs["valueQuantity"]
        assert quantity["system"] == UCUM
        categories = {c["code"] for cat in obs["category"] for c in cat["coding"]}
        if observation_group(obs) == "labs":
            assert categories == {"laboratory"}
            continue
        assert categories <= {"imaging", "survey"}
        if categories == {"imaging"}:
            assert obs["device"]["display"]
            assert quantity["code"] in {"{T-score}", "{Z-score}", "g/cm2"}
            if obs["code"]["coding"][0]["code"] in {"38263-0", "24701-5"}:  # DXA Femur: femoral neck
                assert obs["bodySite"]["coding"][0]["code"] == "29627003"
        else:
            assert quantity["code"] == "%"


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_prefetch_groups_every_resource(scenario_id: str) -> None:
    bundle = load_scenario_bundle(scenario_id)
    prefetch = prefetch_for(bundle)
    assert set(prefetch) == set(PREFETCH_KEYS)
    assert prefetch["patient"]["id"] == scenario_id
    observations = resources(bundle, "Observation")
    assert prefetch["dxa"]["total"] + prefetch["labs"]["total"] == len(observations)
    for key, resource_type in PREFETCH_BY_TYPE.items():
        assert prefetch[key]["total"] == len(resources(bundle, resource_type))
    for key in PREFETCH_KEYS[1:]:
        searchset = prefetch[key]
        assert searchset["type"] == "searchset"
        assert ("entry" in searchset) == (searchset["total"] > 0)
        get_fhir_model_class("Bundle").model_validate(searchset)
    dates = [e["resource"]["effectiveDateTime"] for e in prefetch["dxa"].get("entry", [])]
    assert dates == sorted(dates, reverse=True)


@pytest.mark.parametrize("scenario_id", DEMO_IDS)
def test_demo_request(scenario_id: str) -> None:
    path = DEMO_DIR / f"{scenario_id}-patient-view.json"
    demo = json.loads(path.read_text(encoding="utf-8"))
    assert demo == hook_request(scenario_id, with_prefetch=True, fhir_server=None, access_token=None)
    assert demo["hook"] == "patient-view"
    assert "fhirServer" not in demo and "fhirAuthorization" not in demo
    assert demo["context"] == {"userId": "Practitioner/demo-1", "patientId": scenario_id}
    assert set(demo["prefetch"]) == set(PREFETCH_KEYS)
    assert demo["prefetch"]["dxa"]["total"] > 0


def test_demo_files_are_exactly_the_four_demo_patients() -> None:
    assert sorted(p.name for p in DEMO_DIR.glob("*.json")) == sorted(
        f"{i}-patient-view.json" for i in DEMO_IDS
    )


def test_hook_request_with_fhir_server() -> None:
    request = hook_request("s01", with_prefetch=False, fhir_server="http://127.0.0.1:1", access_token="t0k3n")
    assert "prefetch" not in request
    assert request["fhirServer"] == "http://127.0.0.1:1"
    assert request["fhirAuthorization"]["access_token"] == "t0k3n"
    assert request["fhirAuthorization"]["token_type"] == "Bearer"
    with pytest.raises(ValueError, match="fhir_server"):
        hook_request("s01", with_prefetch=False, fhir_server=None, access_token="t0k3n")


def test_scenario_facts_that_are_easy_to_lose() -> None:
    s55 = load_scenario_bundle("s55")
    assert resources(s55, "Patient")[0]["deceasedDateTime"] == "2025-02-01"

    s23 = resources(load_scenario_bundle("s23"), "Observation")
    dxa_units = {o["valueQuantity"]["code"] for o in s23 if observation_group(o) == "dxa"}
    assert dxa_units == {"g/cm2"}

    s45 = load_scenario_bundle("s45")
    reports = resources(s45, "DiagnosticReport")
    assert len(reports) == 2
    assert not [o for o in resources(s45, "Observation") if observation_group(o) == "dxa"]
    for report in reports:
        assert report["code"]["coding"][0]["code"] == "38268-9"
        assert "result" not in report
        form = report["presentedForm"][0]
        assert form["contentType"] == "application/pdf"
        assert base64.b64decode(form["data"]).startswith(b"%PDF-")

    dispenses = resources(load_scenario_bundle("s09"), "MedicationDispense")
    assert len(dispenses) == 15
    assert {d["daysSupply"]["value"] for d in dispenses} == {84}

    xgeva = resources(load_scenario_bundle("s37"), "MedicationAdministration")
    assert {a["medicationCodeableConcept"]["coding"][0]["code"] for a in xgeva} == {"993449"}
    assert all("Xgeva" in a["medicationCodeableConcept"]["text"] for a in xgeva)

    s28 = resources(load_scenario_bundle("s28"), "MedicationStatement")
    statuses = {s["medicationCodeableConcept"]["coding"][0]["code"]: s["status"] for s in s28}
    assert statuses == {"A12AX": "active", "904431": "completed", "1435115": "active"}


def _table(name: str) -> list[dict[str, str]]:
    path = KNOWLEDGE_CODES / name
    if not path.is_file():
        pytest.skip(f"{path} not present yet (the service package ships the code tables)")
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_every_code_is_in_the_code_tables(scenario_id: str) -> None:
    known = {
        (row["system"], row["code"])
        for name in ("observations.csv", "medications.csv", "conditions.csv")
        for row in _table(name)
    }
    for resource in resources(load_scenario_bundle(scenario_id)):
        for c in codings(resource):
            if c["system"] in CLINICAL_SYSTEMS:
                key = (c["system"], c["code"])
                assert key in known or key in CODES_NOT_IN_TABLES, (
                    f"{resource['id']}: {key} not in the tables"
                )


def test_dxa_and_lab_code_lists_match_the_table() -> None:
    rows = _table("observations.csv")
    dxa = {
        (r["system"], r["code"])
        for r in rows
        if r["kind"] in {"t_score", "bmd", "z_score"} or r["kind"].startswith("frax_")
    }
    labs = {
        (r["system"], r["code"])
        for r in rows
        if r["kind"] in {"egfr", "calcium", "albumin", "alkaline_phosphatase", "vitamin_d_25oh", "pth"}
    }
    assert dxa == DXA_CODES
    assert labs == LAB_CODES
