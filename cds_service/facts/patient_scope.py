"""Keep only resources about the patient in context (a prefetch or search may carry others)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

_UNSCOPED_TYPES = frozenset({"Medication", "Device", "Organization", "Practitioner", "Location"})


def _reference(resource: dict[str, Any]) -> str | None:
    for key in ("subject", "patient"):
        value = resource.get(key)
        if isinstance(value, dict):
            ref = value.get("reference")
            return ref if isinstance(ref, str) else None
    return None


def belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    """False only when the resource is provably about another patient."""
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return True  # not a resource of any known type: the parse layer drops it (never hashed here)
    if kind == "Patient":
        return resource.get("id") == patient_id
    if kind in _UNSCOPED_TYPES:
        return True
    ref = _reference(resource)
    if ref is None or "Patient/" not in ref:
        return True  # no subject, or a urn:uuid reference inside a single-patient Bundle
    ref = ref.split("/_history/", maxsplit=1)[0]  # a version-specific reference names the same patient
    return ref == f"Patient/{patient_id}" or ref.endswith(f"/Patient/{patient_id}")


def scoped(resources: Iterable[dict[str, Any]], patient_id: str) -> Iterator[dict[str, Any]]:
    return (r for r in resources if isinstance(r, dict) and belongs_to(r, patient_id))
