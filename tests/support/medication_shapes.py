"""Builders for real-world medication shapes (protocol §3c) and a one-call engine evaluation.

Scenario bundles from fhir_fixtures/scenarios are re-encoded in another shape (statement instead of
administration, medicationReference instead of a CodeableConcept, two syringes per date...) so that
tests can check that the same facts give the same decision object.
"""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from cds_service.facts.extract import extract_record
from cds_service.facts.parse import parse_resources
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import load_knowledge
from cds_service.rules.protocol import evaluate
from tests.support.fixtures import load_scenario_bundle

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
AS_OF = date(2025, 6, 1)
KNOWLEDGE: Knowledge = load_knowledge()

# Product codes as the scenario bundles use them (codes/medications.csv).
DENOSUMAB_60 = {"system": RXNORM, "code": "993452", "display": "1 ML denosumab 60 MG/ML Prefilled Syringe"}
ALENDRONATE_70 = {"system": RXNORM, "code": "904431", "display": "alendronic acid 70 MG Oral Tablet"}
ZOLEDRONIC_5 = {"system": RXNORM, "code": "705824", "display": "100 ML zoledronic acid 0.05 MG/ML Injection"}
TERIPARATIDE_PEN = {
    "system": RXNORM,
    "code": "1435115",
    "display": "28 ACTUAT teriparatide 0.02 MG/ACTUAT Pen Injector",
}
ROMOSOZUMAB = {
    "system": RXNORM,
    "code": "2123184",
    "display": "1.17 ML romosozumab-aqqg 89.7 MG/ML Prefilled Syringe",
}


def resources_of(scenario_id: str) -> list[dict[str, Any]]:
    bundle = load_scenario_bundle(scenario_id)
    return [copy.deepcopy(entry["resource"]) for entry in bundle["entry"]]


def decide(resources: list[dict[str, Any]], as_of: date = AS_OF) -> dict[str, Any]:
    """The decision object (§9) of the engine for these raw resources."""
    parsed = parse_resources(resources, KNOWLEDGE, as_of=as_of)
    record = extract_record(parsed, KNOWLEDGE)
    decision: dict[str, Any] = evaluate(record, KNOWLEDGE, as_of).to_json()
    return decision


def without(decision: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in decision.items() if key not in keys}


def patient_ref(resources: list[dict[str, Any]]) -> dict[str, str]:
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return {"reference": f"Patient/{patient['id']}"}


def concept(coding: dict[str, str] | None = None, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if coding is not None:
        out["coding"] = [dict(coding)]
    if text is not None:
        out["text"] = text
    return out


def administration(rid: str, subject: dict[str, str], drug: dict[str, Any], day: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": rid,
        "status": "completed",
        "medicationCodeableConcept": drug,
        "subject": subject,
        "effectiveDateTime": day,
    }


def dispense(
    rid: str,
    subject: dict[str, str],
    drug: dict[str, Any],
    day: str,
    quantity: int,
    *,
    days_supply: int | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "id": rid,
        "status": "completed",
        "medicationCodeableConcept": drug,
        "subject": subject,
        "whenHandedOver": day,
        "quantity": {"value": quantity, "unit": "syringe"},
    }
    if days_supply is not None:
        out["daysSupply"] = {
            "value": days_supply,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    return out


def statement(
    rid: str,
    subject: dict[str, str],
    drug: dict[str, Any],
    *,
    status: str = "completed",
    day: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": status,
        "medicationCodeableConcept": drug,
        "subject": subject,
    }
    if day is not None:
        out["effectiveDateTime"] = day
    if start is not None or end is not None:
        out["effectivePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    return out


def request(
    rid: str,
    subject: dict[str, str],
    drug: dict[str, Any],
    *,
    status: str,
    authored: str,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": drug,
        "subject": subject,
        "authoredOn": authored,
    }
    if start is not None or end is not None:
        period = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        out["dispenseRequest"] = {"validityPeriod": period}
    return out


def as_reference(resource: dict[str, Any], reference: str, display: str | None) -> dict[str, Any]:
    """The same resource naming its drug by `medicationReference` instead of a CodeableConcept."""
    out = copy.deepcopy(resource)
    out.pop("medicationCodeableConcept")
    out["medicationReference"] = {"reference": reference}
    if display is not None:
        out["medicationReference"]["display"] = display
    return out


def medication(mid: str, drug: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": copy.deepcopy(drug)}
