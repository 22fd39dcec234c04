"""rules/exposure.py `record_coverage`, one row per branch of protocol §4: the days one medication record
covers (both ends inclusive), or None when it cannot be dated or does not count."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cds_service.facts.patient_record import MedicationRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.exposure import is_dose_record, record_coverage

KNOWLEDGE = packaged_knowledge()
AS_OF = date(2025, 6, 1)


def record(source: str, agent: str = "alendronate", **fields: Any) -> MedicationRecord:
    role = "anabolic" if agent in ("teriparatide", "abaloparatide", "romosozumab") else "first_line"
    return MedicationRecord(agent=agent, role=role, source=source, resource_id="m1", **fields)  # type: ignore[arg-type]


D = date.fromisoformat
# (case, record fields, first covered day, last covered day) — None, None: no coverage.
CASES: list[tuple[str, MedicationRecord, str | None, str | None]] = [
    (
        "administration: one interval",
        record(
            "administration",
            "zoledronic_acid",
            status="completed",
            event_date=D("2024-01-10"),
            interval_days=365,
        ),
        "2024-01-10",
        "2025-01-08",
    ),
    ("administration without a date", record("administration", status="completed"), None, None),
    ("dispense without a date", record("dispense", status="completed", days_supply=28), None, None),
    (
        "dispense of a per-date agent: one dose, never per unit",
        record(
            "dispense",
            "denosumab",
            status="completed",
            event_date=D("2024-01-01"),
            interval_days=182,
            quantity=Decimal(3),
        ),
        "2024-01-01",
        "2024-06-30",
    ),
    (
        "dispense: days supply",
        record("dispense", status="completed", event_date=D("2024-01-01"), days_supply=28),
        "2024-01-01",
        "2024-01-28",
    ),
    (
        "dispense: quantity x interval",
        record(
            "dispense", status="completed", event_date=D("2024-01-01"), quantity=Decimal(4), interval_days=7
        ),
        "2024-01-01",
        "2024-01-28",
    ),
    (
        "dispense: pens cover the pen's days",
        record(
            "dispense",
            "teriparatide",
            status="completed",
            event_date=D("2024-01-01"),
            quantity=Decimal(1),
            per_pen=True,
            interval_days=1,
        ),
        "2024-01-01",
        "2024-01-28",
    ),
    (
        "dispense: nothing but the date",
        record("dispense", status="completed", event_date=D("2024-01-01"), interval_days=7),
        "2024-01-01",
        "2024-01-07",
    ),
    (
        "statement: period",
        record("statement", status="completed", period_start=D("2022-01-01"), period_end=D("2023-01-01")),
        "2022-01-01",
        "2023-01-01",
    ),
    (
        "statement: period ending before it starts",
        record("statement", status="completed", period_start=D("2023-01-01"), period_end=D("2022-01-01")),
        None,
        None,
    ),
    (
        "statement: active, open period runs to as_of",
        record("statement", status="active", period_start=D("2022-01-01")),
        "2022-01-01",
        "2025-06-01",
    ),
    (
        "statement: not active, open period is one interval",
        record("statement", status="completed", period_start=D("2022-01-01"), interval_days=7),
        "2022-01-01",
        "2022-01-07",
    ),
    (
        "statement: a date only",
        record("statement", "denosumab", status="completed", event_date=D("2024-01-01"), interval_days=182),
        "2024-01-01",
        "2024-06-30",
    ),
    ("statement: undated", record("statement", status="active"), None, None),
    (
        "request: a proposal never covers",
        record("request", status="active", intent="proposal", event_date=D("2024-01-01"), days_supply=90),
        None,
        None,
    ),
    (
        "request: cancelled never covers",
        record("request", status="cancelled", intent="order", event_date=D("2024-01-01"), days_supply=90),
        None,
        None,
    ),
    ("request: undated", record("request", status="active", intent="order", days_supply=90), None, None),
    (
        "request: stopped with a period ends at its end",
        record(
            "request",
            status="stopped",
            intent="order",
            event_date=D("2024-01-01"),
            period_start=D("2024-01-05"),
            period_end=D("2024-03-01"),
        ),
        "2024-01-05",
        "2024-03-01",
    ),
    (
        "request: stopped with an inverted period",
        record(
            "request",
            status="stopped",
            intent="order",
            event_date=D("2024-01-01"),
            period_end=D("2023-12-01"),
        ),
        None,
        None,
    ),
    (
        "request: stopped without a period is one interval",
        record("request", status="stopped", intent="order", event_date=D("2024-01-01"), interval_days=7),
        "2024-01-01",
        "2024-01-07",
    ),
    (
        "request: supply with repeats",
        record(
            "request",
            status="completed",
            intent="order",
            event_date=D("2024-01-01"),
            days_supply=30,
            repeats=2,
        ),
        "2024-01-01",
        "2024-03-30",
    ),
    (
        "request: validity period",
        record(
            "request",
            status="completed",
            intent="original-order",
            event_date=D("2024-01-01"),
            period_start=D("2024-01-01"),
            period_end=D("2024-06-30"),
        ),
        "2024-01-01",
        "2024-06-30",
    ),
    (
        "request: active without supply runs to as_of",
        record("request", status="active", intent="order", event_date=D("2024-01-01")),
        "2024-01-01",
        "2025-06-01",
    ),
    (
        "request: completed without supply is one interval",
        record(
            "request",
            status="completed",
            intent="instance-order",
            event_date=D("2024-01-01"),
            interval_days=7,
        ),
        "2024-01-01",
        "2024-01-07",
    ),
]


@pytest.mark.protocol("4-coverage")
@pytest.mark.parametrize(("case", "medication", "first", "last"), CASES, ids=[case[0] for case in CASES])
def test_record_coverage(
    case: str, medication: MedicationRecord, first: str | None, last: str | None
) -> None:
    covered = record_coverage(medication, AS_OF, KNOWLEDGE)
    if first is None:
        assert covered is None, case
    else:
        assert covered is not None, case
        assert (covered.start.isoformat(), covered.end.isoformat()) == (first, last), case


@pytest.mark.parametrize(
    ("medication", "is_dose"),
    [
        (record("administration", status="completed", event_date=D("2024-01-01")), True),
        (record("dispense", status="completed", event_date=D("2024-01-01")), True),
        (record("statement", "denosumab", status="completed", event_date=D("2024-01-01")), True),
        (record("statement", "alendronate", status="completed", event_date=D("2024-01-01")), False),
        (
            record(
                "statement",
                "denosumab",
                status="completed",
                event_date=D("2024-01-01"),
                period_start=D("2024-01-01"),
            ),
            False,
        ),
        (record("administration", status="completed"), False),
    ],
)
def test_is_dose_record(medication: MedicationRecord, is_dose: bool) -> None:
    assert is_dose_record(medication) is is_dose
