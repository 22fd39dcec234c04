"""Load the committed FHIR fixtures and turn them into CDS Hooks patient-view requests.

The fixtures under ``fhir_fixtures/`` are generated once by ``tools/gen_fixtures.py`` and committed;
nothing here reads the clinical source files at run time.

``prefetch_for`` groups a scenario's transaction Bundle into the prefetch keys the service declares:
``patient`` (the Patient resource) and one searchset Bundle per query. DXA and FRAX Observations go to
``dxa`` and lab Observations to ``labs``; which is which is decided by the Observation code, using the
LOINC/SNOMED codes that the shared code table (observations.csv) lists with the kinds
t_score/bmd/z_score/frax_* (DXA) and egfr/calcium/albumin/alkaline_phosphatase/vitamin_d_25oh/pth (labs).
An Observation with a code in neither list is an error, so a new fixture code cannot silently vanish.
"""

from __future__ import annotations

import copy
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from cds_service.gather.prefetch import PREFETCH_RESOURCE_TYPES

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO_ROOT / "fhir_fixtures"
SCENARIOS_DIR = FIXTURES_DIR / "scenarios"
DEMO_DIR = FIXTURES_DIR / "demo"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

# observations.csv rows with kind t_score, bmd, z_score, frax_mof, frax_hip, frax_panel.
_DXA_LOINC = """
    24701-5 24890-6 24966-4 38261-4 38262-2 38263-0 38264-8 38265-5 38266-3 38267-1 46278-8 46279-6
    46383-6 80932-7 80933-5 80934-3 80935-0 80936-8 80937-6 80938-4 80939-2 80940-0 80941-8 80942-6
    80943-4 80944-2 80945-9 80946-7 80947-5 80948-3 80949-1 80950-9 80951-7 80952-5 80953-3 80954-1
    80955-8 80956-6 85385-3 85386-1 85387-9 85388-7 85389-5 85390-3 85391-1 85392-9 85393-7 85394-5
    90264-3 90265-0 90266-8
""".split()  # noqa: SIM905 - a readable block of codes
DXA_CODES: frozenset[tuple[str, str]] = frozenset({(LOINC, c) for c in _DXA_LOINC} | {(SNOMED, "439921008")})

# observations.csv rows with kind egfr, calcium, albumin, alkaline_phosphatase, vitamin_d_25oh, pth.
_LAB_LOINC = """
    1751-7 17861-6 1989-3 2731-8 33914-3 48642-3 48643-1 49765-1 50044-7 50210-4 54347-0 62238-1
    62292-8 6768-6 69405-9 70969-1 77147-7 88293-6 88294-4 94677-2 98979-8 98980-6
""".split()  # noqa: SIM905 - a readable block of codes
LAB_CODES: frozenset[tuple[str, str]] = frozenset((LOINC, c) for c in _LAB_LOINC)

# Prefetch key -> resource type, for the keys that hold one searchset Bundle of a single type
# (the service's own key table: one source of truth).
PREFETCH_BY_TYPE: dict[str, str] = {
    key: kind for key, kind in PREFETCH_RESOURCE_TYPES.items() if key not in ("patient", "dxa", "labs")
}
PREFETCH_KEYS: tuple[str, ...] = ("patient", "dxa", "labs", *PREFETCH_BY_TYPE)

HOOK_INSTANCE_NAMESPACE = uuid.UUID("6f1d7c52-3b8e-5a4e-9d0c-1e2f3a4b5c6d")
DEMO_USER = "Practitioner/demo-1"
SERVICE_SUBJECT = "osteoporosis-escalation"
READ_SCOPES = " ".join(
    f"patient/{t}.read"
    for t in (
        "Patient",
        "Observation",
        "Condition",
        "Procedure",
        "AllergyIntolerance",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
        "Medication",
    )
)


def load_scenario_index() -> list[dict[str, Any]]:
    """The scenario list (id, title, as_of, expect), in the order of the clinical scenario file."""
    index: list[dict[str, Any]] = json.loads((SCENARIOS_DIR / "index.json").read_text(encoding="utf-8"))
    return index


@cache
def _read_bundle(scenario_id: str) -> str:
    path = SCENARIOS_DIR / f"{scenario_id}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no fixture bundle for scenario {scenario_id!r}: {path}")
    return path.read_text(encoding="utf-8")


def load_scenario_bundle(scenario_id: str) -> dict[str, Any]:
    """The scenario's FHIR R4 transaction Bundle (a fresh copy on every call)."""
    bundle: dict[str, Any] = json.loads(_read_bundle(scenario_id))
    return bundle


def observation_group(observation: dict[str, Any]) -> str:
    """``"dxa"`` or ``"labs"`` for an Observation, from its codes (a panel's: its components' codes);
    ValueError if in neither list."""
    codings = list(observation.get("code", {}).get("coding", []))
    for component in observation.get("component", []):
        codings.extend(component.get("code", {}).get("coding", []))
    keys = {(c.get("system"), c.get("code")) for c in codings}
    if keys & DXA_CODES:
        return "dxa"
    if keys & LAB_CODES:
        return "labs"
    raise ValueError(
        f"Observation {observation.get('id')!r} has no DXA/FRAX or lab code: {sorted(map(str, keys))}"
    )


def _effective_date(resource: dict[str, Any]) -> str:
    value = resource.get("effectiveDateTime") or resource.get("effectivePeriod", {}).get("start") or ""
    return str(value)


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A searchset Bundle holding ``resources``; ``entry`` is omitted when there are none."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:
        bundle["entry"] = [{"resource": copy.deepcopy(r), "search": {"mode": "match"}} for r in resources]
    return bundle


def prefetch_for(bundle: dict[str, Any]) -> dict[str, Any]:
    """Group a scenario transaction Bundle into the service's prefetch keys.

    ``dxa`` and ``labs`` are ordered newest first (as the ``_sort=-date`` queries return them); the
    other searchsets keep the Bundle order. Resource types without a prefetch key (e.g. a
    DiagnosticReport holding a DXA PDF) are not included, exactly as the service's queries would miss them.
    """
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise ValueError(f"expected exactly one Patient in the bundle, found {len(patients)}")
    observations: dict[str, list[dict[str, Any]]] = {"dxa": [], "labs": []}
    for resource in resources:
        if resource["resourceType"] == "Observation":
            observations[observation_group(resource)].append(resource)
    prefetch: dict[str, Any] = {"patient": copy.deepcopy(patients[0])}
    for key, group in observations.items():
        prefetch[key] = searchset(sorted(group, key=_effective_date, reverse=True))
    for key, resource_type in PREFETCH_BY_TYPE.items():
        prefetch[key] = searchset([r for r in resources if r["resourceType"] == resource_type])
    return prefetch


def hook_instance_for(scenario_id: str) -> str:
    """A fixed hookInstance UUID per scenario, so generated requests are reproducible."""
    return str(uuid.uuid5(HOOK_INSTANCE_NAMESPACE, f"patient-view/{scenario_id}"))


def hook_request_for_bundle(
    bundle: dict[str, Any],
    *,
    with_prefetch: bool,
    fhir_server: str | None,
    access_token: str | None,
) -> dict[str, Any]:
    """A CDS Hooks 2.0 patient-view request for the patient of ``bundle``."""
    patients = [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise ValueError(f"expected exactly one Patient in the bundle, found {len(patients)}")
    patient_id = str(patients[0]["id"])
    if access_token is not None and fhir_server is None:
        raise ValueError(
            "an access_token needs a fhir_server (CDS Hooks fhirAuthorization goes with fhirServer)"
        )
    request: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": hook_instance_for(patient_id),
    }
    if fhir_server is not None:
        request["fhirServer"] = fhir_server
        if access_token is not None:
            request["fhirAuthorization"] = {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": READ_SCOPES,
                "subject": SERVICE_SUBJECT,
            }
    request["context"] = {"userId": DEMO_USER, "patientId": patient_id}
    if with_prefetch:
        request["prefetch"] = prefetch_for(bundle)
    return request


def hook_request(
    scenario_id: str,
    *,
    with_prefetch: bool,
    fhir_server: str | None = None,
    access_token: str | None = None,
) -> dict[str, Any]:
    """A patient-view request for a committed scenario (with prefetch and/or a fhirServer base URL)."""
    return hook_request_for_bundle(
        load_scenario_bundle(scenario_id),
        with_prefetch=with_prefetch,
        fhir_server=fhir_server,
        access_token=access_token,
    )
