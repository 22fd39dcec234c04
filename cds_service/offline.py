"""Offline evaluator: one patient's FHIR Bundle -> the decision object (protocol §9)."""

from __future__ import annotations

from datetime import date
from typing import Any

from cds_service.config import Settings
from cds_service.core.errors import InvalidBundle
from cds_service.knowledge.loader import load_knowledge
from cds_service.wire.service import PatientViewService, today_utc

BUNDLE_TYPES = frozenset({"collection", "transaction", "batch", "searchset"})


def bundle_resources(bundle: Any) -> tuple[list[dict[str, Any]], str]:
    """The Bundle's resources and its single Patient's id; InvalidBundle otherwise."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidBundle("input is not a FHIR Bundle")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise InvalidBundle(f"Bundle.type must be one of {', '.join(sorted(BUNDLE_TYPES))}")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidBundle("Bundle.entry must be an array")
    resources = [
        e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise InvalidBundle(f"the Bundle must hold exactly one Patient (found {len(patients)})")
    patient_id = patients[0].get("id")
    if not isinstance(patient_id, str) or not patient_id:
        raise InvalidBundle("the Patient has no id")
    return resources, patient_id


def evaluate_bundle(bundle: Any, as_of: date | None, settings: Settings) -> dict[str, Any]:
    resources, patient_id = bundle_resources(bundle)
    service = PatientViewService(settings, load_knowledge(settings.knowledge_file))
    when = as_of or settings.as_of or today_utc()
    return service.decide(resources, patient_id, when).to_json()
