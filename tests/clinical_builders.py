"""Small builders of clinical facts for table-driven protocol tests (no FHIR involved)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from cds_service.facts.patient_record import (
    BmdResult,
    ClinicalFinding,
    Demographics,
    FraxResult,
    LabResult,
    MedicationRecord,
    PatientRecord,
    ScannerId,
)

AS_OF = date(2025, 6, 1)
SCANNER = ScannerId("identifier", "sn:1001", "DXA-1 (SN 1001)")


def d(text: str) -> date:
    return date.fromisoformat(text)


def dxa(
    day: str,
    *,
    th: str | None = None,
    ls: str | None = None,
    fn: str | None = None,
    th_bmd: str | None = None,
    ls_bmd: str | None = None,
    scanner: ScannerId | None = SCANNER,
) -> list[BmdResult]:
    out = []
    for site, value, kind in (
        ("total_hip", th, "t_score"),
        ("lumbar_spine", ls, "t_score"),
        ("femoral_neck", fn, "t_score"),
        ("total_hip", th_bmd, "bmd"),
        ("lumbar_spine", ls_bmd, "bmd"),
    ):
        if value is not None:
            out.append(
                BmdResult(d(day), site, None, kind, Decimal(value), scanner, f"obs-{day}-{site}-{kind}")
            )  # type: ignore[arg-type]
    return out


def statement(
    agent: str, start: str, end: str | None = None, role: str = "first_line", **kw: Any
) -> MedicationRecord:
    return MedicationRecord(
        agent=agent,
        role=role,
        source="statement",
        status="active" if end is None else "completed",  # type: ignore[arg-type]
        resource_id=f"ms-{agent}-{start}",
        period_start=d(start),
        period_end=d(end) if end else None,
        interval_days=kw.pop("interval_days", 7),
        **kw,
    )


def administration(
    agent: str, day: str, interval_days: int, role: str = "first_line", **kw: Any
) -> MedicationRecord:
    return MedicationRecord(
        agent=agent,
        role=role,
        source="administration",
        status="completed",  # type: ignore[arg-type]
        resource_id=f"ma-{agent}-{day}",
        event_date=d(day),
        interval_days=interval_days,
        **kw,
    )


def dispense(agent: str, day: str, days_supply: int) -> MedicationRecord:
    return MedicationRecord(
        agent=agent,
        role="first_line",
        source="dispense",
        status="completed",
        resource_id=f"md-{agent}-{day}",
        event_date=d(day),
        days_supply=days_supply,
        interval_days=7,
    )


def lab(
    kind: str, value: str, day: str = "2025-03-01", low: str | None = None, high: str | None = None
) -> LabResult:
    units = {
        "egfr": "mL/min/1.73m2",
        "calcium": "mg/dL",
        "alkaline_phosphatase": "U/L",
        "vitamin_d_25oh": "ng/mL",
        "albumin": "g/dL",
    }
    return LabResult(
        kind,
        d(day),
        Decimal(value),
        units[kind],
        Decimal(low) if low else None,  # type: ignore[arg-type]
        Decimal(high) if high else None,
        f"lab-{kind}-{day}",
    )


def finding(concepts: set[str], onset: str | None, label: str = "finding", **kw: Any) -> ClinicalFinding:
    return ClinicalFinding(
        resource_type=kw.pop("resource_type", "Condition"),
        resource_id=f"c-{label}-{onset}",
        concepts=frozenset(concepts),
        codes=kw.pop("codes", ()),
        label=label,
        onset=d(onset) if onset else None,
        recorded=kw.pop("recorded", None),
        clinical_status=kw.pop("clinical_status", "active"),
        **kw,
    )


STANDARD_LABS = (
    lab("egfr", "75"),
    lab("calcium", "9.4", high="10.2"),
    lab("alkaline_phosphatase", "80", high="120"),
    lab("vitamin_d_25oh", "32"),
)


def base_record(**changes: Any) -> PatientRecord:
    """Scenario s01: alendronate since 2021-03-01, hip and spine targets missed -> ESCALATE."""
    record = PatientRecord(
        demographics=Demographics(d("1957-04-01"), "female", False),
        bmd=tuple(
            dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.7")
            + dxa("2024-05-20", th="-2.5", ls="-2.7", fn="-2.6")
        ),
        frax=(),
        medications=(statement("alendronate", "2021-03-01"),),
        any_medication_resource=True,
        findings=(),
        labs=STANDARD_LABS,
    )
    return replace(record, **changes)


def frax(day: str, mof: str | None = None, hip: str | None = None) -> tuple[FraxResult, ...]:
    out = []
    if mof is not None:
        out.append(FraxResult(d(day), "mof", Decimal(mof)))
    if hip is not None:
        out.append(FraxResult(d(day), "hip", Decimal(hip)))
    return tuple(out)
