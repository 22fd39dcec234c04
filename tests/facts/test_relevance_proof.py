"""The relevance filter is exact: what it leaves out never changes a decision or a card.

Only the entries the filter selects are validated (fhir.resources, the costly step); the others are read
for counts at most (an ignored status, "a medication feed was supplied" (R6), an unresolved medication
reference) or not at all. Proof over every shared scenario and every offline metamorphic variant
(meaning-preserving and meaning-changing): the record with every entry that is neither validated nor
counted removed gives the same decision object (protocol §9, every field) and the same cards, byte for
byte as validating every entry of the full record without any filter; and removing any single such
entry changes nothing either. A mutation check makes sure the filter is not
"keep everything": it must leave out most of the realistic benchmark record.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import orjson
import pytest

from benchmarks import records
from cds_service.facts import parse as parse_module
from cds_service.facts import relevance
from cds_service.facts.lab_window import LabWindow
from cds_service.facts.parsed_resources import MEDICATION_USE_TYPES
from cds_service.facts.patient_scope import scoped
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.offline import bundle_resources
from cds_service.present.cards import render_cards
from cds_service.wire.service import PatientViewService
from tests.metamorphic import transforms as mt
from tests.metamorphic.paths import as_bundle, offline_settings
from tests.metamorphic.scenarios import AS_OF, SCENARIO_IDS, scenario_record, seeded
from tests.metamorphic.transforms import MEANING_PRESERVING, Record

Resource = dict[str, Any]
KNOWLEDGE = packaged_knowledge()
MEANING_CHANGING = {
    "drop_followup_dxa": lambda record, _as_of: mt.drop_followup_dxa(record),
    "recent_mi": mt.add_recent_mi,
    "recent_hip_fracture": mt.add_recent_hip_fracture,
    "deceased": mt.mark_deceased,
}


@contextmanager
def validated_entries() -> Iterator[list[Resource]]:
    """The raw resources parse_resources hands to validation during the block (spied, not changed)."""
    seen: list[Resource] = []
    original = parse_module._validated

    def spy(wanted: list[Any], *args: Any, **kwargs: Any) -> Any:
        seen.extend(entry.resource for entry in wanted)
        return original(wanted, *args, **kwargs)

    parse_module._validated = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        parse_module._validated = original  # type: ignore[assignment]


@contextmanager
def without_filter() -> Iterator[None]:
    """Every entry of a kept type is validated: relevance says yes to all (after noting the references
    it wants and its counts, as before) and no lab is skipped by the look-back window."""
    checker = relevance.RelevanceChecker
    original_relevant, original_never_read = checker.is_relevant, LabWindow.never_read

    def everything(self: relevance.RelevanceChecker, resource: Resource) -> bool:
        original_relevant(self, resource)
        return True

    checker.is_relevant = everything  # type: ignore[method-assign]
    LabWindow.never_read = lambda _self, _resource: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        checker.is_relevant = original_relevant  # type: ignore[method-assign]
        LabWindow.never_read = original_never_read  # type: ignore[method-assign]


def _counted(resource: Resource) -> bool:
    """Read for a count only: an ignored status (§2), or a medication use (R6 and reference counts)."""
    rtype = resource.get("resourceType")
    return rtype in MEDICATION_USE_TYPES or (
        rtype in parse_module._MODELS and relevance.ignored_by_status(resource)
    )


def _referenced_medications(resources: list[Resource]) -> set[str]:
    """`Medication/id` of every Medication a medication use points at (looked up to judge relevance)."""
    keys = set()
    for resource in resources:
        reference = resource.get("medicationReference")
        target = reference.get("reference") if isinstance(reference, dict) else None
        key = relevance.reference_key(target) if isinstance(target, str) else None
        if key:
            keys.add(key)
    return keys


def left_out(resources: list[Resource], patient_id: str, as_of: date) -> list[int]:
    """Positions of the entries that are neither validated nor counted (the filter's claim: not read)."""
    with validated_entries() as seen:
        parse_module.parse_resources(scoped(resources, patient_id), KNOWLEDGE, as_of=as_of)
    validated = {id(resource) for resource in seen}
    medications = _referenced_medications(resources)
    return [
        index
        for index, resource in enumerate(resources)
        if id(resource) not in validated
        and not _counted(resource)
        and f"{resource.get('resourceType')}/{resource.get('id')}" not in medications
        and not (resource.get("resourceType") == "Patient" and resource.get("id") == patient_id)
    ]


def outcome_of(resources: list[Resource], patient_id: str, as_of: date) -> tuple[bytes, bytes]:
    """(decision object, cards) as canonical JSON; card uuids from a counter so runs compare exactly."""
    settings = offline_settings(as_of.isoformat())
    decision = PatientViewService(settings, KNOWLEDGE).decide(resources, patient_id, as_of)
    counter = itertools.count(1)
    cards = render_cards(
        decision,
        KNOWLEDGE,
        patient_id=patient_id,
        selection_behavior=settings.selection_behavior,
        as_of_pinned=True,
        new_uuid=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
    )
    option = orjson.OPT_SORT_KEYS
    return orjson.dumps(decision.to_json(), option=option), orjson.dumps(cards, option=option)


def check_record(record: Record, as_of: date, label: str, *, one_by_one: bool) -> int:
    resources, patient_id = bundle_resources(as_bundle(record))
    with without_filter():
        reference = outcome_of(resources, patient_id, as_of)
    full = outcome_of(resources, patient_id, as_of)
    assert full == reference, f"{label}: the filter changed the decision or cards"
    dropped = set(left_out(resources, patient_id, as_of))
    kept = [resource for index, resource in enumerate(resources) if index not in dropped]
    assert outcome_of(kept, patient_id, as_of) == full, f"{label}: pruning changed the decision or cards"
    if one_by_one:
        for index in sorted(dropped):
            fewer = resources[:index] + resources[index + 1 :]
            assert outcome_of(fewer, patient_id, as_of) == full, (
                f"{label}: removing entry {index} ({resources[index].get('resourceType')}) changed it"
            )
    return len(dropped)


OFFLINE_VARIANTS = [t for t in MEANING_PRESERVING if t.offline]


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_removing_unread_entries_changes_nothing(scenario_id: str) -> None:
    as_of = AS_OF[scenario_id]
    record = scenario_record(scenario_id)
    check_record(record, as_of, scenario_id, one_by_one=True)
    for transform in OFFLINE_VARIANTS:
        variant = transform(record, seeded(scenario_id, transform.name, "relevance"))
        check_record(variant, as_of, f"{scenario_id}/{transform.name}", one_by_one=False)
    for name, change in MEANING_CHANGING.items():
        check_record(change(record, as_of), as_of, f"{scenario_id}/{name}", one_by_one=False)


def test_unrelated_noise_is_left_out() -> None:
    """The metamorphic noise (other drugs, diagnoses, labs) is exactly what the filter must drop."""
    noise = next(t for t in OFFLINE_VARIANTS if t.name == "unrelated_noise")
    for scenario_id in SCENARIO_IDS:
        record = scenario_record(scenario_id)
        variant = noise(record, random.Random(scenario_id))
        before = check_record(record, AS_OF[scenario_id], scenario_id, one_by_one=False)
        after = check_record(variant, AS_OF[scenario_id], f"{scenario_id}/noise", one_by_one=False)
        assert after > before, f"{scenario_id}: no noise entry was left out"


def test_filter_leaves_out_most_of_the_realistic_record() -> None:
    """Mutation check: a filter that kept (or validated) everything would fail here."""
    as_of = date(2026, 11, 30)
    request = records.request_for("realistic", as_of)
    resources: list[Resource] = []
    for value in request["prefetch"].values():
        if value and value.get("resourceType") == "Bundle":
            resources += [entry["resource"] for entry in value.get("entry") or []]
        elif value:
            resources.append(value)
    patient_id = request["context"]["patientId"]
    with validated_entries() as seen:
        parse_module.parse_resources(scoped(resources, patient_id), KNOWLEDGE, as_of=as_of)
    dropped = left_out(resources, patient_id, as_of)
    assert len(seen) < 0.2 * len(resources), f"{len(seen)} of {len(resources)} validated"
    assert len(dropped) > 0.5 * len(resources), f"only {len(dropped)} of {len(resources)} left out"
    with without_filter():
        reference = outcome_of(resources, patient_id, as_of)
    assert outcome_of(resources, patient_id, as_of) == reference
    kept = [resource for index, resource in enumerate(resources) if index not in set(dropped)]
    assert outcome_of(kept, patient_id, as_of) == reference
