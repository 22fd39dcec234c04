"""Cheap relevance and status filters on raw FHIR JSON dicts, before any pydantic validation.

Every function here must be total on arbitrary JSON: a malformed element makes a resource look
irrelevant (or, for statuses, not ignored), it never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cds_service.facts.code_match import (
    canonical_system,
    ingredient_in_text,
    is_icd_cancer,
    is_icd_fracture,
    is_snomed_malignancy,
    normalise_code,
)
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import SNOMED

OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})
_REPORT_STATUSES = frozenset({"final", "amended", "corrected", "appended"})
_IGNORED_STATUSES: dict[str, frozenset[str]] = {
    "MedicationStatement": frozenset({"entered-in-error", "not-taken", "intended"}),
    "MedicationRequest": frozenset({"entered-in-error", "draft", "cancelled"}),
    "MedicationAdministration": frozenset({"entered-in-error", "not-done"}),
    "MedicationDispense": frozenset({"entered-in-error", "declined", "cancelled"}),
    # A procedure that was not done did not happen (not in the protocol's list: our reading).
    "Procedure": frozenset({"entered-in-error", "not-done"}),
    "Medication": frozenset({"entered-in-error"}),
    "Device": frozenset({"entered-in-error"}),
}
_IGNORED_INTENTS = frozenset({"proposal", "plan"})
IGNORED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_MEDICATION_USE = frozenset(
    {"MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense"}
)
# A display names a product when it states a strength ("metformin 500 mg tablet", "cholecalciferol 400 IU"):
# then the drug is identified by name. Generic text ("Home medication") identifies nothing (§3c).
_PRODUCT_STRENGTH = re.compile(
    r"\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|ug|micrograms?|g|iu|units?|ml|meq|mmol|%)(?![a-z])", re.IGNORECASE
)
_DXA_REPORT_KINDS = frozenset({"dxa_report", "dxa_procedure", "t_score", "bmd", "z_score"})


def reference_key(reference: str) -> str | None:
    """`Type/id` of a relative or absolute reference (a `_history` suffix dropped); None if contained."""
    if not reference or reference.startswith("#"):
        return None
    path = reference.split("/_history/", maxsplit=1)[0].rstrip("/")
    parts = path.split("/")
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        return None
    return f"{parts[-2]}/{parts[-1]}"


def ignored_by_status(resource: dict[str, Any]) -> bool:
    """True for the protocol's "ignored everywhere" statuses (protocol §2)."""
    rtype = resource.get("resourceType")
    status = _plain(resource.get("status"))  # a list or object is no status (never hashed)
    if rtype == "Observation":
        return status not in OBSERVATION_STATUSES
    if rtype == "DiagnosticReport":
        return status not in _REPORT_STATUSES
    if rtype in ("Condition", "AllergyIntolerance"):
        return verification_ignored(resource.get("verificationStatus"))
    if rtype == "MedicationRequest" and _plain(resource.get("intent")) in _IGNORED_INTENTS:
        return True
    ignored = _IGNORED_STATUSES.get(str(rtype))
    return ignored is not None and status in ignored


def verification_ignored(concept: Any, memo: dict[tuple[str, str], bool] | None = None) -> bool:
    """A refuted or entered-in-error verificationStatus (Condition, AllergyIntolerance). `memo` keeps the
    verdict per raw (system, code) of a coding for one call (a record repeats a few of them)."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return False
    for coding in codings:  # a plain loop: this runs for every Condition of a record
        if not isinstance(coding, dict):
            continue
        key = raw_key(coding)
        found = memo.get(key) if memo is not None else None
        if found is None:
            found = normalise_code(canonical_system(key[0]), key[1]) in IGNORED_VERIFICATION
            if memo is not None:
                memo[key] = found
        if found:
            return True
    return False


def _plain(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _coding_dicts(concept: Any) -> Iterator[dict[str, Any]]:
    """The well-formed Coding objects of a raw CodeableConcept (anything else is skipped)."""
    if not isinstance(concept, dict):
        return
    codings = concept.get("coding")
    if isinstance(codings, list):
        yield from (coding for coding in codings if isinstance(coding, dict))


def raw_codings(concept: Any) -> Iterator[tuple[str, str, str]]:
    """(canonical system, code, display) of a raw CodeableConcept; codes normalised for ICD."""
    for coding in _coding_dicts(concept):
        system = canonical_system(_text(coding.get("system")))
        yield system, normalise_code(system, _text(coding.get("code"))), _text(coding.get("display"))


def raw_code_keys(concept: Any) -> tuple[tuple[str, str], ...]:
    """The (system, code) pairs of a raw CodeableConcept as written: a memo key for what its codes mean."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return ()
    return tuple(raw_key(coding) for coding in codings if isinstance(coding, dict))


def raw_key(coding: dict[str, Any]) -> tuple[str, str]:
    """(system, code) of a raw Coding exactly as written; a non-string is the empty string.

    A memo of a verdict on `raw_key(coding)` may be keyed by the raw values themselves,
    `(coding.get("system"), coding.get("code"))`, when hashable: equal raw values give equal `raw_key`s
    (a string never equals another type, and every other value reads as the empty string)."""
    system = coding.get("system")
    code = coding.get("code")
    return (system if isinstance(system, str) else "", code if isinstance(code, str) else "")


def raw_texts(concept: Any) -> Iterator[str]:
    """`text` and every coding `display` of a raw CodeableConcept."""
    if not isinstance(concept, dict):
        return
    text = _text(concept.get("text"))
    if text:
        yield text
    for _, _, display in raw_codings(concept):
        if display:
            yield display


def _concept_key(concept: Any) -> tuple[Any, ...] | None:
    """What `_names_agent` reads of a raw CodeableConcept, as written: its text and each coding's system,
    code and display (None for a coding that is no object; no tuple of codings when `coding` is no list).
    Equal keys get the same verdict: the check reads strings only, and a string never equals another type."""
    if not isinstance(concept, dict):
        return None
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return (concept.get("text"), None)
    parts: list[tuple[Any, Any, Any] | None] = []  # a plain loop: runs for every medication resource
    for coding in codings:
        if isinstance(coding, dict):
            parts.append((coding.get("system"), coding.get("code"), coding.get("display")))
        else:
            parts.append(None)
    return (concept.get("text"), tuple(parts))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass
class ReferencedIndex:
    """Raw Medication and Device resources of the input, by `Type/id` and by fullUrl."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Iterable[tuple[str | None, dict[str, Any]]]) -> ReferencedIndex:
        index = cls()
        for full_url, resource in items:
            rid = resource.get("id")
            if isinstance(rid, str) and rid:
                index.resources.setdefault(f"{resource.get('resourceType')}/{rid}", resource)
            if full_url:
                index.resources.setdefault(full_url, resource)
        return index

    def find(self, reference: str) -> dict[str, Any] | None:
        found = self.resources.get(reference)
        if found is None:
            key = reference_key(reference)
            found = self.resources.get(key) if key else None
        return found


@dataclass
class RelevanceChecker:
    """Decides, on raw JSON, whether a resource can matter to the protocol."""

    knowledge: Knowledge
    referenced: ReferencedIndex
    wanted_references: set[str] = field(default_factory=set)
    unresolved_medication_references: int = 0
    # References whose display names a product (with its strength) but no osteoporosis drug (§3c).
    medications_named_other: int = 0
    # Per-call memos keyed by the (system, code) of a coding as written (see `raw_key`), or by a text: a
    # record repeats a few dozen codes across thousands of resources. Never shared between calls.
    _observation_memo: dict[tuple[Any, Any], bool] = field(default_factory=dict, repr=False)
    _finding_memo: dict[tuple[Any, Any], tuple[bool, str]] = field(default_factory=dict, repr=False)
    _agent_memo: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)
    _text_memo: dict[str, bool] = field(default_factory=dict, repr=False)
    _concept_memo: dict[tuple[Any, ...], bool] = field(default_factory=dict, repr=False)

    def is_relevant(self, resource: dict[str, Any]) -> bool:
        rtype = resource.get("resourceType")
        if rtype == "Observation":  # most of a record: plain code, no generators, one call per concept
            relevant = self._in_observation_table(resource.get("code"))
            if not relevant and "component" in resource:
                relevant = self._in_components(resource["component"])
            if relevant and "device" in resource:
                self._want_reference(resource["device"])
            return relevant
        if rtype in _MEDICATION_USE:
            return self._medication_use(resource)
        if rtype in ("Condition", "Procedure"):
            return self.finding_concept(resource.get("code"))
        if rtype == "Patient":
            return True
        if rtype == "AllergyIntolerance":
            return self._allergy(resource)
        if rtype == "DiagnosticReport":
            return self._dxa_report(resource)
        return False

    # ----- observations and reports ---------------------------------------------------------
    def _in_components(self, components: Any) -> bool:
        if isinstance(components, list):
            for component in components:
                if isinstance(component, dict) and self._in_observation_table(component.get("code")):
                    return True
        return False

    def _in_observation_table(self, concept: Any) -> bool:
        """Like `any(observation_codes(s, c) for s, c, _ in raw_codings(concept))`, memoised."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return False
        memo = self._observation_memo
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            if _memoised(memo, coding, self._observation_code):
                return True
        return False

    def _observation_code(self, key: tuple[str, str]) -> bool:
        system = canonical_system(key[0])
        return bool(self.knowledge.observation_codes(system, normalise_code(system, key[1])))

    def _dxa_report(self, resource: dict[str, Any]) -> bool:
        return any(
            entry.kind in _DXA_REPORT_KINDS
            for s, c, _ in raw_codings(resource.get("code"))
            for entry in self.knowledge.observation_codes(s, c)
        )

    def _want_reference(self, reference: Any) -> None:
        target = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(target, str) and target and not target.startswith("#"):
            self.wanted_references.add(target)
            key = reference_key(target)
            if key:
                self.wanted_references.add(key)

    # ----- conditions, procedures, allergies -------------------------------------------------
    def finding_concept(self, concept: Any) -> bool:
        """A code in the condition table, an ICD fracture prefix, an ICD cancer or SNOMED malignancy."""
        memo = self._finding_memo
        for coding in _list(concept.get("coding") if isinstance(concept, dict) else None):
            if not isinstance(coding, dict):
                continue
            found = _memoised(memo, coding, self._finding_code)
            if found[0]:
                return True
            if found[1] == SNOMED and is_snomed_malignancy(SNOMED, _text(coding.get("display"))):
                return True
        return False

    def _finding_code(self, key: tuple[str, str]) -> tuple[bool, str]:
        """(whether the code alone makes a finding relevant, the canonical system)."""
        knowledge = self.knowledge
        system = canonical_system(key[0])
        code = normalise_code(system, key[1])
        by_code = bool(
            knowledge.condition_concepts(system, code)
            or is_icd_fracture(system, code, knowledge)
            or is_icd_cancer(system, code)
        )
        return by_code, system

    def _allergy(self, resource: dict[str, Any]) -> bool:
        concepts = [resource.get("code")]
        for reaction in _list(resource.get("reaction")):
            if isinstance(reaction, dict):
                concepts.append(reaction.get("substance"))
        return any(self._names_agent(concept) for concept in concepts)

    def _names_agent(self, concept: Any) -> bool:
        """`_names_agent_of(concept)`, memoised per call by the concept's raw values (`_concept_key`)."""
        key = _concept_key(concept)
        if key is None:
            return self._names_agent_of(concept)
        try:
            found = self._concept_memo.get(key)
        except TypeError:  # a list or object where a string belongs: judged as is, not memoised
            return self._names_agent_of(concept)
        if found is None:
            found = self._concept_memo[key] = self._names_agent_of(concept)
        return found

    def _names_agent_of(self, concept: Any) -> bool:
        medications = self.knowledge.medications
        memo = self._agent_memo
        for key in raw_code_keys(concept):
            found = memo.get(key)
            if found is None:
                system = canonical_system(key[0])
                found = memo[key] = (system, normalise_code(system, key[1])) in medications
            if found:
                return True
        return any(self._names_ingredient(text) for text in raw_texts(concept))

    def _names_ingredient(self, text: str) -> bool:
        found = self._text_memo.get(text)
        if found is None:
            found = self._text_memo[text] = bool(ingredient_in_text(text, self.knowledge))
        return found

    # ----- medications ----------------------------------------------------------------------
    def _medication_use(self, resource: dict[str, Any]) -> bool:
        if self._names_agent(resource.get("medicationCodeableConcept")):
            return True
        reference = resource.get("medicationReference")
        if not isinstance(reference, dict):
            return False
        if self._names_ingredient(_text(reference.get("display"))):
            self._want_reference(reference)
            return True
        medication = self._referenced_medication(resource, _text(reference.get("reference")))
        if medication is None:
            if _PRODUCT_STRENGTH.search(_text(reference.get("display"))):
                self.medications_named_other += 1  # a product named by its display: another drug
            else:
                self.unresolved_medication_references += 1
            return False
        if self._names_agent(medication.get("code")):
            self._want_reference(reference)
            return True
        return False

    def _referenced_medication(self, resource: dict[str, Any], target: str) -> dict[str, Any] | None:
        if not target:
            return None
        if target.startswith("#"):
            for item in _list(resource.get("contained")):
                if isinstance(item, dict) and item.get("id") == target[1:]:
                    return item if item.get("resourceType") == "Medication" else None
            return None
        found = self.referenced.find(target)
        return found if found is not None and found.get("resourceType") == "Medication" else None


_Verdict = TypeVar("_Verdict")


def _memoised(
    memo: dict[tuple[Any, Any], _Verdict],
    coding: dict[str, Any],
    judge: Callable[[tuple[str, str]], _Verdict],
) -> _Verdict:
    """`judge(raw_key(coding))`, remembered for the call by system and code as written (see `raw_key`)."""
    key = (coding.get("system"), coding.get("code"))
    try:
        return memo[key]
    except KeyError:
        verdict = memo[key] = judge(raw_key(coding))
        return verdict
    except TypeError:  # a list or object where a string belongs: judged as is, not memoised
        return judge(raw_key(coding))
