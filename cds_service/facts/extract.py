"""Validated FHIR resources + code tables -> the typed, frozen `PatientRecord` the protocol reads.

Pure: no clock, no I/O. Each kind of fact has its own module (observations, medications,
findings); this one assembles them with the demographics and the extraction caveats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds_service.facts.extract_common import Caveats, calendar_date
from cds_service.facts.extract_findings import extract_findings
from cds_service.facts.extract_medications import extract_medications
from cds_service.facts.extract_observations import extract_observations
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.patient_record import Demographics, PatientRecord, Sex
from cds_service.knowledge.indexed import Knowledge

_SEXES: dict[str, Sex] = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
_FULL_DATE_LENGTH = len("YYYY-MM-DD")


def extract_record(
    parsed: ParsedResources, knowledge: Knowledge, unavailable: Iterable[str] = ()
) -> PatientRecord:
    """`unavailable`: data categories (prefetch keys) the EHR could not provide (a §3a gap, not "none")."""
    caveats = Caveats()
    demographics = _demographics(parsed.patients, caveats)
    observations = extract_observations(parsed, knowledge, caveats)
    unreadable = dict(parsed.unreadable)
    if parsed.unresolved_medication_references:
        # Neither contained, supplied, fetched from fhirServer nor named by its display (§3c): the drug is
        # unknown, so it may be an osteoporosis drug: as unreadable as a broken entry (§3a).
        unreadable["medication (unresolved reference)"] = parsed.unresolved_medication_references
        caveats.add(
            f"{parsed.unresolved_medication_references} medication entries reference a Medication "
            "that could not be found or fetched and whose display names no drug: drug not identified"
        )
    if parsed.medications_named_other:
        caveats.add(
            f"{parsed.medications_named_other} medication entries identified only by their display, a "
            "product that is no osteoporosis drug: taken as other drugs"
        )
    return PatientRecord(
        demographics=demographics,
        bmd=observations.bmd,
        frax=observations.frax,
        medications=extract_medications(parsed, knowledge),
        any_medication_resource=parsed.any_medication_resource,
        findings=extract_findings(parsed, knowledge),
        labs=observations.labs,
        unreadable=tuple(sorted(unreadable.items())),
        unavailable=tuple(sorted(set(unavailable))),
        caveats=caveats.as_tuple(),
        dxa_reports_without_values=observations.dxa_reports_without_values,
    )


def _demographics(patients: tuple[Any, ...], caveats: Caveats) -> Demographics | None:
    """The first Patient (the service passes one patient); several distinct ones add a caveat."""
    if not patients:
        return None
    patient = patients[0]
    if len({p.id for p in patients}) > 1:
        caveats.add("several Patient resources supplied: the first was used")
    birth = patient.birthDate
    if isinstance(birth, str) and len(birth) < _FULL_DATE_LENGTH:
        caveats.add("birth date recorded without a day: the first day of the period was assumed")
    deceased = patient.deceasedBoolean is True or patient.deceasedDateTime is not None
    return Demographics(
        birth_date=calendar_date(birth),
        sex=_SEXES.get(str(patient.gender or "unknown"), "unknown"),
        deceased=deceased,
    )
