"""Re-encode a scenario Bundle's observations in real-world shapes (protocol §3c), keeping the facts.

Each function returns a new transaction Bundle (the input is not changed) whose observations say the
same thing as the original in the shape some EHR sends:

- `as_dxa_panels`: one panel Observation per DXA scan (same date and device), Epic style: a local panel
  code, the values only as components with a local code beside the LOINC code, T-scores in unit `SD`,
  and `effectivePeriod` instead of `effectiveDateTime`.
- `with_transcribed_copies`: every DXA value recorded twice: the interface copy (device, and the reading
  radiologist as performer) and a transcribed copy without a device.
- `labs_as_strings`: lab values as `valueString` ("62 mL/min/1.73m2").
- `renamed`: the same record under another patient id (to load it beside the original on a server).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from tests.support.fixtures import DXA_CODES, LAB_CODES

LOCAL_SYSTEM = "urn:oid:1.2.840.114350.1.13.999.2.7.2.768282"  # a site-local code system (test only)
PANEL_CODE = {"coding": [{"system": LOCAL_SYSTEM, "code": "DXA-PANEL", "display": "DXA bone density"}]}
PANEL_CODE["text"] = "DXA bone density"
RADIOLOGIST = {"reference": "Practitioner/reader-1", "display": "Dr Reader"}
_BMD_KINDS_UNIT = {"{t-score}": "SD"}
_FRAX_LOINC = frozenset({"90265-0", "90266-8"})


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle.get("entry", [])]


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['resourceType'] + '/' + r['id'])}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def _codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c.get("system"), c.get("code")) for c in concept.get("coding", [])}


def is_dxa_value(resource: dict[str, Any]) -> bool:
    """A DXA T-score or BMD Observation (not FRAX) of the scenario fixtures."""
    if resource["resourceType"] != "Observation" or "valueQuantity" not in resource:
        return False
    codes = _codes(resource.get("code", {}))
    return bool(codes & DXA_CODES) and not any(code in _FRAX_LOINC for _, code in codes)


def is_lab(resource: dict[str, Any]) -> bool:
    return resource["resourceType"] == "Observation" and bool(_codes(resource.get("code", {})) & LAB_CODES)


def _component(observation: dict[str, Any]) -> dict[str, Any]:
    code = copy.deepcopy(observation["code"])
    loinc = code["coding"][0]["code"]
    code["coding"].append({"system": LOCAL_SYSTEM, "code": f"DXA-{loinc}", "display": code.get("text", "")})
    side = _side_text(observation.get("bodySite"))
    if side:
        code["text"] = f"{code.get('text', '')} ({side})"
    quantity = observation["valueQuantity"]
    unit = str(quantity.get("unit", "")).lower()
    if unit in _BMD_KINDS_UNIT:
        value_quantity: dict[str, Any] = {"value": quantity["value"], "unit": _BMD_KINDS_UNIT[unit]}
    else:
        value_quantity = copy.deepcopy(quantity)
    return {"code": code, "valueQuantity": value_quantity}


def _side_text(body_site: dict[str, Any] | None) -> str:
    text = json.dumps(body_site or {}).lower()
    if "left" in text:
        return "left"
    if "right" in text:
        return "right"
    return ""


def as_dxa_panels(bundle: dict[str, Any]) -> dict[str, Any]:
    """One panel Observation per scan (same date and device): values only as components."""
    resources = copy.deepcopy(_resources(bundle))
    scans: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    kept: list[dict[str, Any]] = []
    for resource in resources:
        if is_dxa_value(resource):
            scans[(resource["effectiveDateTime"], json.dumps(resource.get("device")))].append(resource)
        else:
            kept.append(resource)
    for number, ((day, _), values) in enumerate(sorted(scans.items()), start=1):
        first = values[0]
        panel: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{first['id']}-panel-{number}",
            "status": "final",
            "category": first.get("category", []),
            "code": copy.deepcopy(PANEL_CODE),
            "subject": first["subject"],
            "effectivePeriod": {"start": f"{day}T09:00:00-05:00", "end": f"{day}T09:40:00-05:00"},
            "performer": [RADIOLOGIST],
            "component": [_component(v) for v in values],
        }
        if "device" in first:
            panel["device"] = first["device"]
        kept.append(panel)
    return _bundle(kept)


def with_transcribed_copies(bundle: dict[str, Any], device_display: str | None = None) -> dict[str, Any]:
    """Each DXA value twice: the interface copy (+ radiologist performer) and a transcribed copy without
    a device, or naming the scanner only by a model display (`device_display`)."""
    out: list[dict[str, Any]] = []
    for resource in copy.deepcopy(_resources(bundle)):
        out.append(resource)
        if is_dxa_value(resource):
            resource["performer"] = [RADIOLOGIST]
            transcribed = copy.deepcopy(resource)
            transcribed["id"] = f"{resource['id']}-transcribed"
            transcribed.pop("device", None)
            transcribed.pop("performer", None)
            if device_display is not None:
                transcribed["device"] = {"display": device_display}
            transcribed["valueQuantity"] = {"value": resource["valueQuantity"]["value"]}
            if str(resource["valueQuantity"].get("unit", "")).lower().startswith("g/"):
                transcribed["valueQuantity"]["unit"] = "g/cm2"
            out.append(transcribed)
    return _bundle(out)


def labs_as_strings(bundle: dict[str, Any]) -> dict[str, Any]:
    """Lab values as numeric strings with the unit after the number."""
    out: list[dict[str, Any]] = []
    for resource in copy.deepcopy(_resources(bundle)):
        if is_lab(resource) and "valueQuantity" in resource:
            quantity = resource.pop("valueQuantity")
            number = format(Decimal(str(quantity["value"])), "f")
            resource["valueString"] = f"{number} {quantity.get('unit', '')}".strip()
        out.append(resource)
    return _bundle(out)


def renamed(bundle: dict[str, Any], old_id: str, new_id: str) -> dict[str, Any]:
    """The same record for patient `new_id` (every id and reference that starts with `old_id`)."""
    text = json.dumps(bundle).replace(f'"{old_id}', f'"{new_id}').replace(f"/{old_id}", f"/{new_id}")
    renamed_bundle: dict[str, Any] = json.loads(text)
    return renamed_bundle
