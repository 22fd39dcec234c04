"""Implausible dates are ignored with a caveat naming them (protocol §3c).

A date before 1900 or after `as_of` + 1 year is not a clinical date (a typo, `0001-01-01`, the sentinel
`9999-12-31`): the fact it dates is ignored (a measurement) or left undated (an event whose existence
still matters: a medication record, a finding), and a caveat names it. A Period `end` after `as_of` is
open: an end beyond the plausible range is read as "still running on `as_of`".

Pure: `as_of` is injected. Applied to a whole `PatientRecord` before any rule reads it, so that every
later date computation stays within the calendar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date
from typing import TypeVar

from cds_service.facts.dates import add_months
from cds_service.facts.patient_record import (
    LAB_LABELS,
    BmdResult,
    ClinicalFinding,
    FraxResult,
    LabResult,
    MedicationRecord,
    PatientRecord,
)

_Dated = TypeVar("_Dated", BmdResult, FraxResult, LabResult)
EARLIEST_PLAUSIBLE = date(1900, 1, 1)
LATEST_AFTER_AS_OF_MONTHS = 12

_BMD_LABELS = {"t_score": "T-score", "bmd": "BMD"}


class _Range:
    def __init__(self, as_of: date) -> None:
        self.as_of = as_of
        self.latest = add_months(as_of, LATEST_AFTER_AS_OF_MONTHS)

    def plausible(self, day: date | None) -> bool:
        return day is None or EARLIEST_PLAUSIBLE <= day <= self.latest


def _caveat(label: str, day: date) -> str:
    return f"ignored {label} dated {day.isoformat()}: implausible date"


def plausible_record(record: PatientRecord, as_of: date) -> PatientRecord:
    """`record` with implausible dates removed (see the module docstring); unchanged when all are fine."""
    window = _Range(as_of)
    caveats: list[str] = []
    bmd = _measurements(record.bmd, window, caveats, lambda r: _BMD_LABELS[r.kind])
    frax = _measurements(record.frax, window, caveats, lambda r: f"FRAX {r.kind}")
    labs = _measurements(record.labs, window, caveats, lambda r: LAB_LABELS.get(r.kind, r.kind))
    medications = tuple(_medication(m, window, caveats) for m in record.medications)
    findings = tuple(_finding(f, window, caveats) for f in record.findings)
    reports = tuple(d for d in record.dxa_reports_without_values if window.plausible(d))
    for day in record.dxa_reports_without_values:
        if not window.plausible(day):
            caveats.append(_caveat("DXA report", day))
    demographics = record.demographics
    birth = demographics.birth_date if demographics is not None else None
    if demographics is not None and birth is not None and not _plausible_birth(birth, window):
        caveats.append(_caveat("birth date", birth))
        demographics = replace(demographics, birth_date=None)
    if not caveats and medications == record.medications:  # an open end is rewritten without a caveat
        return record
    return replace(
        record,
        demographics=demographics,
        bmd=bmd,
        frax=frax,
        labs=labs,
        medications=medications,
        findings=findings,
        dxa_reports_without_values=reports,
        caveats=record.caveats + tuple(dict.fromkeys(caveats)),
    )


def _plausible_birth(birth: date, window: _Range) -> bool:
    return EARLIEST_PLAUSIBLE <= birth <= window.as_of


def _measurements(
    items: tuple[_Dated, ...], window: _Range, caveats: list[str], label: Callable[[_Dated], str]
) -> tuple[_Dated, ...]:
    kept: list[_Dated] = []
    latest = window.latest
    for item in items:
        day = item.date
        if day is None or EARLIEST_PLAUSIBLE <= day <= latest:  # window.plausible, written out
            kept.append(item)
        else:
            caveats.append(_caveat(label(item), item.date))
    return tuple(kept)


def _medication(record: MedicationRecord, window: _Range, caveats: list[str]) -> MedicationRecord:
    changes: dict[str, date | None] = {}
    latest = window.latest
    for name, day in (("event_date", record.event_date), ("period_start", record.period_start)):
        if day is not None and not EARLIEST_PLAUSIBLE <= day <= latest:  # not window.plausible(day)
            caveats.append(_caveat(_medication_label(record), day))
            changes[name] = None
    end = record.period_end
    if end is not None and end > latest:
        start = changes.get("period_start", record.period_start)
        # An open end: still running on as_of (never before its own start).
        changes["period_end"] = max(window.as_of, start) if start is not None else window.as_of
    elif end is not None and end < EARLIEST_PLAUSIBLE:
        caveats.append(_caveat(_medication_label(record), end))
        changes["period_end"] = None
    return replace(record, **changes) if changes else record  # type: ignore[arg-type]


def _medication_label(record: MedicationRecord) -> str:
    return f"{record.agent.replace('_', ' ')} record"


def _finding(finding: ClinicalFinding, window: _Range, caveats: list[str]) -> ClinicalFinding:
    changes: dict[str, date | None] = {}
    for name, day in (("onset", finding.onset), ("recorded", finding.recorded)):
        if day is not None and not window.plausible(day):
            caveats.append(_caveat(f"{finding.resource_type} date", day))
            changes[name] = None
    return replace(finding, **changes) if changes else finding  # type: ignore[arg-type]
