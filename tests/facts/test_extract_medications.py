"""facts.extract_medications: medication resources as EHRs send them -> records (protocol §2, §3c, §4)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from fhir.resources.R4B.duration import Duration
from fhir.resources.R4B.timing import TimingRepeat

from cds_service.facts.extract_medications import extract_medications, supply_days, timing_days
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import MedicationRecord
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import RXNORM

SUBJECT = {"reference": "Patient/p1"}
PROLIA = {"coding": [{"system": RXNORM, "code": "993452", "display": "Prolia 60 mg/mL syringe"}]}
DENOSUMAB_INGREDIENT = {"coding": [{"system": RXNORM, "code": "993449", "display": "denosumab"}]}
ALENDRONATE_70 = {
    "coding": [{"system": RXNORM, "code": "904431", "display": "alendronic acid 70 MG Oral Tablet"}]
}
ZOMETA = {"coding": [{"system": RXNORM, "code": "1114085"}]}


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def administration(status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": extra.pop("id", "a1"),
        "status": status,
        "subject": SUBJECT,
        "effectiveDateTime": extra.pop("effectiveDateTime", "2023-01-10T09:00:00+01:00"),
        **({"medicationCodeableConcept": PROLIA} if "medicationReference" not in extra else {}),
        **extra,
    }


def statement(
    status: str = "active", medication: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": status,
        "subject": SUBJECT,
        "medicationCodeableConcept": medication or ALENDRONATE_70,
        **extra,
    }


def request(status: str = "active", intent: str = "order", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": status,
        "intent": intent,
        "subject": SUBJECT,
        "authoredOn": "2023-02-01",
        "medicationCodeableConcept": extra.pop("medication", ALENDRONATE_70),
        **extra,
    }


def records(resources: list[dict[str, Any]], knowledge: Knowledge) -> tuple[MedicationRecord, ...]:
    return extract_medications(parse_resources(resources, knowledge), knowledge)


def summary(record: MedicationRecord) -> dict[str, Any]:
    return {
        "agent": record.agent,
        "role": record.role,
        "source": record.source,
        "strength": record.strength,
        "event_date": record.event_date,
        "matched_by_name": record.matched_by_name,
        "interval_days": record.interval_days,
    }


@pytest.mark.protocol("3c-stopped", "3c-brands", "3c-medication-reference", "4-oncology")
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            administration(),
            {
                "agent": "denosumab",
                "role": "first_line",
                "source": "administration",
                "strength": "osteoporosis",
                "event_date": date(2023, 1, 10),
                "matched_by_name": False,
                "interval_days": 183,
            },
            id="prolia-administration-date-as-written",
        ),
        pytest.param(
            administration(medicationCodeableConcept={"text": "XGEVA 120 mg/1.7 mL injection"}),
            {
                "agent": "denosumab",
                "role": "oncology_dose",
                "source": "administration",
                "strength": "oncology",
                "event_date": date(2023, 1, 10),
                "matched_by_name": True,
                "interval_days": 183,
            },
            id="xgeva-by-text-is-oncology",
        ),
        pytest.param(
            administration(
                medicationReference={"reference": "#med"},
                contained=[
                    {
                        "resourceType": "Medication",
                        "id": "med",
                        "code": DENOSUMAB_INGREDIENT,
                        "ingredient": [
                            {
                                "itemCodeableConcept": DENOSUMAB_INGREDIENT,
                                "strength": {
                                    "numerator": {"value": 120, "unit": "mg"},
                                    "denominator": {"value": 1.7, "unit": "mL"},
                                },
                            }
                        ],
                    }
                ],
            ),
            {
                "agent": "denosumab",
                "role": "oncology_dose",
                "source": "administration",
                "strength": "oncology",
                "event_date": date(2023, 1, 10),
                "matched_by_name": False,
                "interval_days": 183,
            },
            id="contained-medication-ingredient-strength-120",
        ),
        pytest.param(
            administration(medicationCodeableConcept=ZOMETA),
            {
                "agent": "zoledronic_acid",
                "role": "oncology_dose",
                "source": "administration",
                "strength": "oncology",
                "event_date": date(2023, 1, 10),
                "matched_by_name": False,
                "interval_days": 365,
            },
            id="zometa-product-code",
        ),
        pytest.param(
            administration(
                medicationCodeableConcept=DENOSUMAB_INGREDIENT,
                dosage={
                    "dose": {"value": 60, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
                },
            ),
            {
                "agent": "denosumab",
                "role": "first_line",
                "source": "administration",
                "strength": "osteoporosis",
                "event_date": date(2023, 1, 10),
                "matched_by_name": False,
                "interval_days": 183,
            },
            id="ingredient-code-with-dose-60mg",
        ),
        pytest.param(
            administration(medicationCodeableConcept=DENOSUMAB_INGREDIENT),
            {
                "agent": "denosumab",
                "role": "first_line",
                "source": "administration",
                "strength": "unknown",
                "event_date": date(2023, 1, 10),
                "matched_by_name": False,
                "interval_days": 183,
            },
            id="ingredient-only-strength-unknown",
        ),
        pytest.param(
            statement(
                medication={"text": "Fosamax 70mg once weekly"}, effectivePeriod={"start": "2022-03-01"}
            ),
            {
                "agent": "alendronate",
                "role": "first_line",
                "source": "statement",
                "strength": "osteoporosis",
                "event_date": None,
                "matched_by_name": True,
                "interval_days": 7,
            },
            id="statement-brand-by-name",
        ),
        pytest.param(
            statement(status="stopped", effectivePeriod={"start": "2020-01-01", "end": "2021-06-30"}),
            {
                "agent": "alendronate",
                "role": "first_line",
                "source": "statement",
                "strength": "osteoporosis",
                "event_date": None,
                "matched_by_name": False,
                "interval_days": 7,
            },
            id="stopped-statement-is-past-exposure",
        ),
        pytest.param(
            statement(status="on-hold", effectiveDateTime="2022-05-01"),
            {
                "agent": "alendronate",
                "role": "first_line",
                "source": "statement",
                "strength": "osteoporosis",
                "event_date": date(2022, 5, 1),
                "matched_by_name": False,
                "interval_days": 7,
            },
            id="on-hold-statement-is-past-exposure",
        ),
        pytest.param(
            request(
                status="stopped",
                dosageInstruction=[{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}}}],
            ),
            {
                "agent": "alendronate",
                "role": "first_line",
                "source": "request",
                "strength": "osteoporosis",
                "event_date": date(2023, 2, 1),
                "matched_by_name": False,
                "interval_days": 7,
            },
            id="stopped-order-is-past-exposure",
        ),
        pytest.param(
            {
                "resourceType": "MedicationDispense",
                "id": "d1",
                "status": "completed",
                "subject": SUBJECT,
                "medicationCodeableConcept": ALENDRONATE_70,
                "whenHandedOver": "2023-03-05T17:00:00-08:00",
                "daysSupply": {"value": 28, "unit": "d"},
            },
            {
                "agent": "alendronate",
                "role": "first_line",
                "source": "dispense",
                "strength": "osteoporosis",
                "event_date": date(2023, 3, 5),
                "matched_by_name": False,
                "interval_days": 7,
            },
            id="dispense-handed-over-local-date",
        ),
    ],
)
def test_medication_shapes(resource: dict[str, Any], expected: dict[str, Any], knowledge: Knowledge) -> None:
    (record,) = records([resource], knowledge)
    assert summary(record) == expected


@pytest.mark.protocol("3c-stopped")
@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(administration(status="not-done"), id="administration-not-done"),
        pytest.param(statement(status="not-taken"), id="statement-not-taken"),
        pytest.param(statement(status="intended"), id="statement-intended"),
        pytest.param(request(status="cancelled"), id="request-cancelled"),
        pytest.param(request(status="draft"), id="request-draft"),
        pytest.param(request(intent="plan"), id="request-plan-is-no-order"),
        pytest.param(request(intent="proposal"), id="request-proposal"),
        pytest.param(
            {
                "resourceType": "MedicationDispense",
                "id": "d1",
                "status": "declined",
                "subject": SUBJECT,
                "medicationCodeableConcept": ALENDRONATE_70,
                "whenHandedOver": "2023-03-05",
            },
            id="dispense-declined",
        ),
        pytest.param(request(medication={"text": "Calcium carbonate 500 mg"}), id="not-a-bone-agent"),
    ],
)
def test_no_exposure(resource: dict[str, Any], knowledge: Knowledge) -> None:
    assert records([resource], knowledge) == ()


@pytest.mark.protocol("3c-stopped")
def test_stopped_and_on_hold_keep_their_status(knowledge: Knowledge) -> None:
    (stopped,) = records([request(status="stopped")], knowledge)
    (on_hold,) = records([statement(status="on-hold")], knowledge)
    assert (stopped.status, on_hold.status) == ("stopped", "on-hold")


@pytest.mark.protocol("4-oncology")
@pytest.mark.parametrize(
    ("second_dose", "oncology"),
    [
        pytest.param("2023-02-07", True, id="28-days-apart-is-oncology"),
        pytest.param("2023-04-09", True, id="89-days-apart-is-oncology"),
        pytest.param("2023-04-10", False, id="90-days-apart-is-not"),
        pytest.param("2023-07-12", False, id="six-monthly"),
    ],
)
def test_oncology_by_interval(second_dose: str, oncology: bool, knowledge: Knowledge) -> None:
    found = records(
        [
            administration(id="a1", effectiveDateTime="2023-01-10"),
            administration(id="a2", effectiveDateTime=second_dose),
        ],
        knowledge,
    )
    assert {r.strength == "oncology" and r.role == "oncology_dose" for r in found} == {oncology}


@pytest.mark.parametrize(
    ("value", "unit", "days"),
    [
        pytest.param(28, "d", 28, id="days"),
        pytest.param(28, "days", 28, id="days-word"),
        pytest.param(4, "wk", 28, id="weeks"),
        pytest.param(3, "mo", 90, id="months-of-30-days"),
        pytest.param(30, None, 30, id="no-unit-is-days"),
        pytest.param(2.5, "d", 3, id="half-up"),
        pytest.param(28, "tablets", None, id="not-a-duration"),
    ],
)
def test_supply_days(value: float, unit: str | None, days: int | None) -> None:
    assert supply_days(Duration(value=value, unit=unit)) == days


@pytest.mark.parametrize(
    ("repeat", "days"),
    [
        pytest.param({"frequency": 1, "period": 1, "periodUnit": "wk"}, 7, id="weekly"),
        pytest.param({"period": 1, "periodUnit": "d"}, 1, id="daily"),
        pytest.param({"frequency": 1, "period": 6, "periodUnit": "mo"}, 183, id="six-monthly"),
        pytest.param({"frequency": 1, "period": 1, "periodUnit": "a"}, 365, id="yearly"),
        pytest.param({"frequency": 1, "period": 1, "periodUnit": "mo"}, 30, id="monthly"),
        pytest.param({"frequency": 2, "period": 1, "periodUnit": "d"}, 1, id="twice-daily-at-least-a-day"),
        pytest.param({"frequency": 1, "period": 3, "periodUnit": "mo"}, 91, id="three-monthly-ibandronate"),
        pytest.param({"frequency": 1}, None, id="no-period"),
    ],
)
def test_timing_days(repeat: dict[str, Any], days: int | None) -> None:
    assert timing_days(TimingRepeat(**repeat)) == days


def test_timing_without_repeat() -> None:
    assert timing_days(None) is None
    assert supply_days(None) is None
