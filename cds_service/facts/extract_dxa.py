"""DXA specifics: site and side of a value, unit acceptance, and scanner identity (protocol §2, §5)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cds_service.facts.extract_common import Coding3, codings, concept_texts
from cds_service.facts.parsed_resources import ParsedResources, resolve_device
from cds_service.facts.patient_record import BmdSite, ScannerId, Side
from cds_service.facts.relevance import reference_key
from cds_service.knowledge.indexed import Knowledge

T_SCORE_UNITS = frozenset({"{t-score}", "sd", "{sd}"})  # compared lower case; no unit is accepted too
BMD_UNITS = frozenset({"g/cm2", "g/cm-2", "g/cm^2"})
# Site words of `code.text` (first match wins): femoral neck before hip, spine levels, forearm.
_TEXT_SITES: tuple[tuple[re.Pattern[str], BmdSite], ...] = (
    (re.compile(r"\bfemoral\s+neck\b|\bneck\s+of\s+(?:the\s+)?femur\b", re.I), "femoral_neck"),
    (re.compile(r"\blumbar\b|\bl[1-5]\s*[-–]\s*l?[1-5]\b|\bspine\b", re.I), "lumbar_spine"),
    (re.compile(r"\bradius\b|\bforearm\b|\bulna\b", re.I), "radius"),
    (re.compile(r"\btotal\s+hip\b|\bhip\b", re.I), "total_hip"),
)
_BODY_SITE_VALUES: dict[str, BmdSite] = {
    "total_hip": "total_hip",
    "femoral_neck": "femoral_neck",
    "lumbar_spine": "lumbar_spine",
    "radius": "radius",
}
_SERIAL = re.compile(
    r"\b(?:s/?n|serial(?:\s*(?:no\.?|number|#))?)\s*[:#.]?\s*([a-z0-9][a-z0-9-]*)", re.IGNORECASE
)
_NON_WORD = re.compile(r"[\W_]+")
_LEFT = re.compile(r"\bleft\b")
_RIGHT = re.compile(r"\bright\b")


def site_and_side(
    code_site: str,
    code_side: str | None,
    code: Any,
    body_site: Any,
    knowledge: Knowledge,
    *,
    coded: list[Coding3] | None = None,
) -> tuple[BmdSite, Side | None]:
    """Site from the code, else `bodySite`, else `code.text` words; side likewise.

    `coded`: the code's `codings`, when already read."""
    site = _as_site(code_site)
    if site == "unknown":
        site = _body_site(body_site, knowledge) or _text_site(concept_texts(code, coded)) or "unknown"
    side = (
        _as_side(code_side) or _body_site_side(body_site, knowledge) or _text_side(concept_texts(code, coded))
    )
    return site, side


def _as_site(value: str) -> BmdSite:
    if value in ("total_hip", "femoral_neck", "lumbar_spine", "radius", "other"):
        return value  # type: ignore[return-value]
    return "unknown"


def _as_side(value: str | None) -> Side | None:
    if value == "left":
        return "left"
    if value == "right":
        return "right"
    return None


def _body_site(body_site: Any, knowledge: Knowledge) -> BmdSite | None:
    for system, code, _ in codings(body_site):
        mapped = knowledge.body_sites.get((system, code))
        if mapped in _BODY_SITE_VALUES:
            return _BODY_SITE_VALUES[mapped]
    texts = [getattr(body_site, "text", None) or ""]
    return _text_site(texts)


def _text_site(texts: list[str]) -> BmdSite | None:
    for text in texts:
        for pattern, site in _TEXT_SITES:
            if pattern.search(text):
                return site
    return None


def _body_site_side(body_site: Any, knowledge: Knowledge) -> Side | None:
    """Laterality from a bodySite coding, a qualifier extension's CodeableConcept, or its text."""
    if body_site is None:
        return None
    concepts = [body_site] + [
        ext.valueCodeableConcept
        for ext in getattr(body_site, "extension", None) or ()
        if getattr(ext, "valueCodeableConcept", None) is not None
    ]
    for concept in concepts:
        for system, code, _ in codings(concept):
            side = _as_side(knowledge.lateralities.get((system, code)))
            if side:
                return side
    return _text_side([getattr(body_site, "text", None) or ""])


def _text_side(texts: list[str]) -> Side | None:
    sides: set[Side] = set()
    for text in texts:
        lowered = text.lower()
        # The substring test only skips a search that could not match.
        if "left" in lowered and _LEFT.search(lowered):
            sides.add("left")
        if "right" in lowered and _RIGHT.search(lowered):
            sides.add("right")
        if sides:
            break
    return sides.pop() if len(sides) == 1 else None


def unit_accepted(kind: str, units: list[str]) -> bool:
    """Protocol §5 units: T-score `{T-score}`/`SD`/`{SD}` or none; BMD g/cm2 (case-insensitive)."""
    if kind == "t_score" and not units:
        return True
    accepted = T_SCORE_UNITS if kind == "t_score" else BMD_UNITS
    return any(unit.lower() in accepted for unit in units)


# ----- scanner identity ---------------------------------------------------------------------------
def scanner_of(
    observation: Any, parsed: ParsedResources, read_display: Callable[[str], ScannerId] | None = None
) -> ScannerId | None:
    """Scanner from `device` (Device resource, reference identifier, display), else the performer.

    `read_display`: `from_display`, or a per-call memo of it (every value of a scan names the same device).
    """
    reference = observation.device
    if reference is not None:
        read = read_display or from_display
        device = resolve_device(observation, parsed)
        found = _from_device(device, reference.display, read) if device is not None else None
        if found is None:
            found = _from_reference(reference, read)
        if found is not None:
            return found
    return _from_performer(observation.performer)


def _from_device(
    device: Any, reference_display: str | None, read_display: Callable[[str], ScannerId]
) -> ScannerId | None:
    label = reference_display or _device_name(device)
    for identifier in device.identifier or ():
        value = (identifier.value or "").strip()
        if value:
            return ScannerId("identifier", value, label or value)
    serial = (device.serialNumber or "").strip()
    if serial:
        return ScannerId("identifier", f"sn:{serial.lower()}", label or f"serial {serial}")
    return read_display(label) if label else None


def _device_name(device: Any) -> str:
    for name in device.deviceName or ():
        if name.name and name.name.strip():
            return str(name.name).strip()
    parts = [device.manufacturer or "", device.modelNumber or ""]
    return " ".join(p for p in parts if p).strip()


def _from_reference(reference: Any, read_display: Callable[[str], ScannerId]) -> ScannerId | None:
    identifier = reference.identifier
    value = (identifier.value or "").strip() if identifier is not None else ""
    if value:
        return ScannerId("identifier", value, reference.display or value)
    if reference.display and reference.display.strip():
        return read_display(reference.display)
    target = (reference.reference or "").strip()
    if target and not target.startswith("#"):
        return ScannerId("display", normalise_display(target), target)
    return None


def from_display(display: str) -> ScannerId:
    """A serial number in the display (`SN 1001`, `S/N: 1001`, `serial 1001`) is an identifier."""
    label = " ".join(display.split())
    match = _SERIAL.search(display)
    if match and any(ch.isdigit() for ch in match.group(1)):
        return ScannerId("identifier", f"sn:{match.group(1).lower()}", label)
    return ScannerId("display", normalise_display(display), label)


def normalise_display(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _from_performer(performers: Any) -> ScannerId | None:
    """The performing Organization, as a display-kind scanner (protocol §3c Duplicates).

    A Practitioner (the reading radiologist), or a performer whose type cannot be told, is never a
    scanner: it would turn a change of reader into a false scanner change.
    """
    for performer in performers or ():
        if not _is_organization(performer):
            continue
        label = (performer.display or performer.reference or "").strip()
        if label:
            return ScannerId("display", normalise_display(label), label)
    return None


def _is_organization(reference: Any) -> bool:
    if reference.type == "Organization":
        return True
    key = reference_key((reference.reference or "").strip())
    return key is not None and key.split("/", 1)[0] == "Organization"
