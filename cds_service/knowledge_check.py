"""`cds-service knowledge check FILE`: what a site's edited knowledge file would change.

Every demo and scenario patient shipped in `fhir_fixtures/scenarios/` (a FHIR Bundle each, dated by
`index.json`) is evaluated offline twice, with the shipped knowledge and with the edited one, and what a
clinician would see is compared: outcome, rank-1 agent, warnings, caveats and card summaries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.config import Settings, SettingsError, load_settings
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.json_schema import schema_errors
from cds_service.knowledge.loader import load_knowledge, read_yaml
from cds_service.knowledge.schema import KnowledgeError
from cds_service.offline import bundle_resources
from cds_service.present.cards import render_cards
from cds_service.wire.service import PatientViewService

# The repository's fixtures beside the package (a source checkout or an editable install).
DEFAULT_PATIENTS_DIR = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "scenarios"
NO_AGENT = "(none)"


class PatientsNotFound(ValueError):
    """The folder of demo patients is missing or unreadable; the message is one line."""


@dataclass(frozen=True)
class DemoPatient:
    scenario: str
    title: str
    as_of: date
    resources: list[dict[str, Any]]
    patient_id: str


@dataclass(frozen=True)
class Seen:
    """What a clinician sees of one decision (the fields compared, in print order)."""

    outcome: str
    rank_1_agent: str
    warnings: tuple[str, ...]
    caveats: tuple[str, ...]
    card_summaries: tuple[str, ...]


@dataclass(frozen=True)
class PatientChange:
    patient: DemoPatient
    before: Seen
    after: Seen


def demo_patients(folder: Path = DEFAULT_PATIENTS_DIR) -> list[DemoPatient]:
    """The scenario Bundles listed in `folder/index.json`, in its order."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        patients = []
        for entry in index:
            bundle = json.loads((folder / f"{entry['id']}.json").read_text(encoding="utf-8"))
            resources, patient_id = bundle_resources(bundle)
            as_of = date.fromisoformat(entry["as_of"])
            patients.append(DemoPatient(entry["id"], entry["title"], as_of, resources, patient_id))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PatientsNotFound(f"cannot read the demo patients in {folder}: {error}") from None
    return patients


def seen(service: PatientViewService, patient: DemoPatient) -> Seen:
    """The decision and cards of one patient under `service`'s knowledge."""
    decision = service.decide(patient.resources, patient.patient_id, patient.as_of)
    cards = render_cards(
        decision,
        service.knowledge,
        patient_id=patient.patient_id,
        selection_behavior=service.settings.selection_behavior,
        as_of_pinned=True,
        new_uuid=lambda: "00000000-0000-0000-0000-000000000000",
    )
    ranked_first = [assessment.agent for assessment in decision.agents if assessment.rank == 1]
    return Seen(
        outcome=decision.outcome,
        rank_1_agent=ranked_first[0] if ranked_first else NO_AGENT,
        warnings=tuple(warning.code for warning in decision.warnings),
        caveats=decision.caveats,
        card_summaries=tuple(card.summary for card in cards),
    )


def decision_changes(
    settings: Settings, shipped: Knowledge, edited: Knowledge, patients: list[DemoPatient]
) -> list[PatientChange]:
    """The patients whose decision or cards differ between the two knowledge files."""
    before_service = PatientViewService(settings, shipped)
    after_service = PatientViewService(settings, edited)
    changes = []
    for patient in patients:
        before, after = seen(before_service, patient), seen(after_service, patient)
        if before != after:
            changes.append(PatientChange(patient, before, after))
    return changes


def report_lines(
    changes: list[PatientChange], patients: int, shipped: Knowledge, edited: Knowledge
) -> Iterator[str]:
    """The human-readable diff: per changed patient, each changed field before -> after."""
    yield f"protocol_version {shipped.protocol_version} -> {edited.protocol_version}"
    if not changes:
        yield f"{patients} demo patients evaluated: no decision changes"
        return
    yield f"{patients} demo patients evaluated: {len(changes)} with decision changes"
    for change in changes:
        patient = change.patient
        yield ""
        yield f"{patient.scenario}: {patient.title} (as of {patient.as_of.isoformat()})"
        for field in fields(Seen):
            before, after = getattr(change.before, field.name), getattr(change.after, field.name)
            if before != after:
                yield from _field_lines(field.name.replace("_", " "), before, after)


def _field_lines(label: str, before: str | tuple[str, ...], after: str | tuple[str, ...]) -> Iterator[str]:
    if isinstance(before, str) and isinstance(after, str):
        yield f"  {label}: {before} -> {after}"
        return
    removed = [f"    - {item}" for item in before if item not in after]
    added = [f"    + {item}" for item in after if item not in before]
    yield f"  {label}:" if removed or added else f"  {label}: same items, another order"
    yield from removed
    yield from added


def run_check(file: str, against: str | None, patients_dir: Path | None) -> int:
    """Exit 2 with one line per error when a file is invalid; else print the diff and exit 0."""
    try:
        settings = load_settings()
        shipped = load_knowledge(against)
    except (SettingsError, KnowledgeError) as error:
        print(f"cds-service: {error}", file=sys.stderr)
        return 2
    errors = validation_errors(file)
    if errors:
        print(f"{file}: invalid knowledge file ({len(errors)} error(s)):", file=sys.stderr)
        for error_line in errors:
            print(f"  {error_line}", file=sys.stderr)
        return 2
    edited = load_knowledge(file)
    try:
        patients = demo_patients(patients_dir or DEFAULT_PATIENTS_DIR)
    except PatientsNotFound as error:
        print(f"cds-service: {error} (give --patients DIR)", file=sys.stderr)
        return 2
    print(f"{file}: valid")
    changes = decision_changes(settings, shipped, edited, patients)
    for line in report_lines(changes, len(patients), shipped, edited):
        print(line)
    return 0


def validation_errors(file: str) -> list[str]:
    """Every error the start-up checks find: the loader's first error, then each schema violation."""
    try:
        load_knowledge(file)
    except KnowledgeError as error:
        first = str(error)
    else:
        return []
    try:
        data = read_yaml(Path(file))
    except KnowledgeError:
        return [first]
    return [first, *(f"schema: {line}" for line in schema_errors(data) if line not in first)]
