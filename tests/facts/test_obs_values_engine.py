"""Engine-level tests of observation values and dates (protocol §3c, §5): comparators and strings,
implausible values and dates, duplicates and scanner identity, panels, DXA units.

Table-driven at, just below and just above each boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cds_service.facts import dates
from cds_service.facts.extract import extract_record
from cds_service.facts.fhir_dates import calendar_date
from cds_service.facts.observation_values import Implausible, Measured, Unreadable, from_string
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import LabResult, PatientRecord, ScannerId
from cds_service.facts.plausible_dates import plausible_record
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import LOINC
from cds_service.rules.labs import Reading, assess_labs
from cds_service.rules.protocol import evaluate
from tests.clinical_builders import AS_OF, STANDARD_LABS, base_record, lab, statement

SUBJECT = {"reference": "Patient/p1"}


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def bound(kind: str, comparator: str | None, value: str, day: str = "2025-03-01") -> LabResult:
    return replace(lab(kind, value, day), comparator=comparator)  # type: ignore[arg-type]


def unreadable(kind: str, text: str, day: str = "2025-03-01") -> LabResult:
    return replace(lab(kind, "0", day), readable=False, text=text)


def with_lab(kind: str, result: LabResult) -> PatientRecord:
    labs = (*tuple(x for x in STANDARD_LABS if x.kind != kind), result)
    return base_record(labs=labs)


def observation(code: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": extra.pop("id", "o1"),
        "status": "final",
        "subject": SUBJECT,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": "2025-03-01",
    }
    resource.update(extra)
    return resource


def record_of(resources: list[dict[str, Any]], knowledge: Knowledge) -> PatientRecord:
    return extract_record(parse_resources(resources, knowledge, as_of=AS_OF), knowledge)


# ----- numeric strings ---------------------------------------------------------------------------
@pytest.mark.protocol("3c-comparators")
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<15", Measured(Decimal("15"), "<", [])),
        (">60", Measured(Decimal("60"), ">", [])),
        ("-2.5", Measured(Decimal("-2.5"), None, [])),
        ("< 15 mL/min/1.73m2", Measured(Decimal("15"), "<", ["mL/min/1.73m2"])),
        (" >= 35 ", Measured(Decimal("35"), ">=", [])),
        ("≤7", Measured(Decimal("7"), "<=", [])),
        ("9,4 mg/dL", Measured(Decimal("9.4"), None, ["mg/dL"])),
        ("+0.5 SD", Measured(Decimal("0.5"), None, ["SD"])),
        ("see comment", Unreadable("see comment")),
        ("", Unreadable("")),
        ("<", Unreadable("<")),
        ("NaN", Unreadable("NaN")),
        ("1e30", Measured(Decimal("1"), None, ["e30"])),
        ("99999999999", Implausible("99999999999")),
    ],
)
def test_numeric_strings(text: str, expected: object) -> None:
    assert from_string(text) == expected


# ----- three-valued comparisons: at, just below, just above the threshold --------------------------
@pytest.mark.protocol("3c-comparators", "3b-labs")
@pytest.mark.parametrize(
    ("comparator", "value", "below_30"),
    [
        (None, "29.9", True),
        (None, "30", False),
        (None, "30.1", False),
        ("<", "30", True),  # every value < 30
        ("<", "30.1", None),  # 30.05 or 29 both allowed
        ("<", "29.9", True),
        ("<=", "30", None),  # 30 itself allowed
        ("<=", "29.9", True),
        (">", "29.9", None),
        (">", "30", False),
        (">=", "30", False),
        (">=", "29.9", None),
    ],
)
def test_reading_below(comparator: str | None, value: str, below_30: bool | None) -> None:
    assert Reading.of(bound("egfr", comparator, value)).below(Decimal(30)) is below_30


@pytest.mark.protocol("3c-comparators", "3b-labs")
@pytest.mark.parametrize(
    ("comparator", "value", "above_120"),
    [
        (None, "120", False),
        (None, "120.1", True),
        (">", "120", True),
        (">=", "120", None),
        (">=", "120.1", True),
        ("<", "121", None),
        ("<=", "120", False),
        ("<", "100", False),
    ],
)
def test_reading_above(comparator: str | None, value: str, above_120: bool | None) -> None:
    assert Reading.of(bound("alkaline_phosphatase", comparator, value)).above(Decimal(120)) is above_120


# ----- lab gates through the protocol --------------------------------------------------------------
@pytest.mark.protocol("3c-comparators", "RENAL", "3a-cap")
@pytest.mark.parametrize(
    ("comparator", "value", "outcome", "egfr_missing"),
    [
        ("<", "15", "SPECIALIST_REVIEW", False),  # decided < 30: renal gate
        ("<", "30", "SPECIALIST_REVIEW", False),
        ("<=", "29", "SPECIALIST_REVIEW", False),
        ("<", "31", "CONSIDER", True),  # cannot decide the gate: missing, capped
        ("<=", "30", "CONSIDER", True),
        (">", "60", "ESCALATE", False),  # decided >= 35
        (">=", "35", "ESCALATE", False),
        (">", "30", "CONSIDER", True),  # >= 30 decided, but the follow-on band (30-34 or >= 35) is not
        (">=", "30", "CONSIDER", True),
        (None, "29", "SPECIALIST_REVIEW", False),
        (None, "30", "ESCALATE", False),
    ],
)
def test_egfr_bound_decides_only_what_it_can(
    comparator: str | None, value: str, outcome: str, egfr_missing: bool, knowledge: Knowledge
) -> None:
    decision = evaluate(with_lab("egfr", bound("egfr", comparator, value)), knowledge, AS_OF)
    assert decision.outcome == outcome, decision
    assert ("egfr" in decision.missing) is egfr_missing
    if outcome == "SPECIALIST_REVIEW":
        assert decision.rule == "renal"
        assert any(f"eGFR {comparator or ''}{value}" in r for r in decision.reasons)


@pytest.mark.protocol("3c-comparators", "R9c")
@pytest.mark.parametrize(
    ("comparator", "value", "flagged", "caveat"),
    [
        ("<", "7", True, False),
        ("<", "20", True, False),
        ("<=", "20", False, True),  # 20 allowed: cannot decide < 20, caveat only
        ("<", "21", False, True),
        (">", "19", False, True),
        (">=", "20", False, False),
        (None, "19.9", True, False),
        (None, "20", False, False),
    ],
)
def test_vitamin_d_bound(
    comparator: str | None, value: str, flagged: bool, caveat: bool, knowledge: Knowledge
) -> None:
    decision = evaluate(
        with_lab("vitamin_d_25oh", bound("vitamin_d_25oh", comparator, value)), knowledge, AS_OF
    )
    assert decision.outcome == ("CONSIDER" if flagged else "ESCALATE"), decision
    assert any("25-OH vitamin D" in r and "correct first" in r for r in decision.reasons) is flagged
    assert any("cannot decide whether < 20" in c for c in decision.caveats) is caveat
    assert "vitamin_d_25oh" not in decision.missing


@pytest.mark.protocol("3c-comparators", "R9a", "R9c", "3b-labs")
@pytest.mark.parametrize(
    ("calcium", "albumin", "outcome", "calcium_missing"),
    [
        ((">", "10.2"), None, "SPECIALIST_REVIEW", False),  # above range: R9a
        ((">=", "10.2"), None, "CONSIDER", True),  # 10.2 itself is in range: undecided
        (("<", "8.5"), None, "CONSIDER", False),  # decided low: R9c flag
        (("<", "10"), None, "CONSIDER", True),  # within range or low: undecided
        ((None, "9.4"), ("<", "3.0"), "SPECIALIST_REVIEW", False),  # corrected > 10.2: decided above range
        ((None, "9.4"), ("<", "3.5"), "CONSIDER", True),  # corrected > 9.8: in range or above, open
        ((None, "9.0"), (">", "3.5"), "CONSIDER", True),  # corrected < 9.4: in range or low, open
        ((None, "9.0"), (">", "6.0"), "CONSIDER", False),  # corrected < 7.4: decided low (R9c flag)
    ],
)
def test_calcium_bounds_and_correction(
    calcium: tuple[str | None, str],
    albumin: tuple[str | None, str] | None,
    outcome: str,
    calcium_missing: bool,
    knowledge: Knowledge,
) -> None:
    labs = (*tuple(x for x in STANDARD_LABS if x.kind != "calcium"), bound("calcium", *calcium))
    if albumin is not None:
        labs += (bound("albumin", *albumin),)
    decision = evaluate(base_record(labs=labs), knowledge, AS_OF)
    assert decision.outcome == outcome, decision
    assert ("calcium" in decision.missing) is calcium_missing


@pytest.mark.protocol("3c-comparators", "R9b", "3a-cap")
@pytest.mark.parametrize(
    ("comparator", "value", "outcome", "missing"),
    [(">", "120", "CONSIDER", False), (">=", "120", "CONSIDER", True), ("<", "120", "ESCALATE", False)],
)
def test_alp_bound(comparator: str, value: str, outcome: str, missing: bool, knowledge: Knowledge) -> None:
    result = replace(bound("alkaline_phosphatase", comparator, value), ref_high=Decimal(120))
    decision = evaluate(with_lab("alkaline_phosphatase", result), knowledge, AS_OF)
    assert decision.outcome == outcome, decision
    assert ("alkaline_phosphatase" in decision.missing) is missing


@pytest.mark.protocol("3c-comparators", "3a-cap")
def test_unreadable_latest_lab_is_reported_and_missing(knowledge: Knowledge) -> None:
    labs = (*STANDARD_LABS, unreadable("egfr", "see comment", "2025-05-01"))
    decision = evaluate(base_record(labs=labs), knowledge, AS_OF)
    assert decision.outcome == "CONSIDER"
    assert "egfr" in decision.missing
    assert "eGFR reported as 'see comment': not readable" in decision.caveats
    # An older unreadable value does not hide a later readable one.
    older = (*STANDARD_LABS, unreadable("egfr", "see comment", "2024-12-01"))
    assert evaluate(base_record(labs=older), knowledge, AS_OF).outcome == "ESCALATE"


@pytest.mark.protocol("3c-comparators", "5-dxa")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"valueString": "<15"}, ("egfr", Decimal(15), "<", True)),
        ({"valueString": "< 15 mL/min/1.73m2"}, ("egfr", Decimal(15), "<", True)),
        (
            {"valueQuantity": {"value": 15, "comparator": "<", "unit": "mL/min/1.73m2"}},
            ("egfr", Decimal(15), "<", True),
        ),
        ({"valueString": ">60"}, ("egfr", Decimal(60), ">", True)),
        ({"valueString": "pending"}, ("egfr", Decimal(0), None, False)),
    ],
)
def test_extraction_reads_bounds_and_strings(
    value: dict[str, Any], expected: tuple[object, ...], knowledge: Knowledge
) -> None:
    result = record_of([observation("33914-3", **value)], knowledge)
    assert [(x.kind, x.value, x.comparator, x.readable) for x in result.labs] == [expected]


@pytest.mark.protocol("3c-comparators", "5-dxa")
def test_numeric_string_t_score_is_a_t_score_and_text_is_reported(knowledge: Knowledge) -> None:
    result = record_of(
        [
            observation("38264-8", id="a", valueString="-2.5"),
            observation("38267-1", id="b", valueString="see report"),
            observation("38263-0", id="c", valueString="<-2.5"),
        ],
        knowledge,
    )
    assert [(b.site, b.kind, b.value) for b in result.bmd] == [("total_hip", "t_score", Decimal("-2.5"))]
    assert "T-score reported as 'see report': not readable" in result.caveats
    assert "T-score reported as '<-2.5': a bound, not used" in result.caveats


@pytest.mark.protocol("3c-comparators", "3b-labs")
def test_lab_window_prefilter_keeps_string_values(knowledge: Knowledge) -> None:
    """An out-of-window lab with a valueString is validated, not skipped unseen (it may be unreadable)."""
    old = observation("33914-3", effectiveDateTime="2020-01-01", valueString="see comment")
    parsed = parse_resources([old], knowledge, as_of=AS_OF)
    assert len(parsed.observations) == 1


# ----- implausible values -----------------------------------------------------------------------------
@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(
    ("code", "value", "unit", "kept"),
    [
        ("38264-8", -8, "{T-score}", True),
        ("38264-8", -8.01, "{T-score}", False),
        ("38264-8", 8, "{T-score}", True),
        ("38264-8", 8.01, "{T-score}", False),
        ("38264-8", 1e30, "{T-score}", False),
        ("38261-4", 0, "g/cm2", False),
        ("38261-4", 0.001, "g/cm2", True),
        ("38261-4", 3, "g/cm2", True),
        ("38261-4", 3.01, "g/cm2", False),
        ("33914-3", 0, "mL/min/1.73m2", True),
        ("33914-3", -0.1, "mL/min/1.73m2", False),
        ("33914-3", 250, "mL/min/1.73m2", True),
        ("33914-3", 250.1, "mL/min/1.73m2", False),
        ("90265-0", 100, "%", True),
        ("90265-0", 100.1, "%", False),
        ("17861-6", 1e300, "mg/dL", False),
    ],
)
def test_implausible_values_are_ignored_with_a_caveat(
    code: str, value: float, unit: str, kept: bool, knowledge: Knowledge
) -> None:
    result = record_of([observation(code, valueQuantity={"value": value, "unit": unit})], knowledge)
    found = len(result.bmd) + len(result.labs) + len(result.frax)
    assert found == (1 if kept else 0)
    assert any("implausible" in c for c in result.caveats) is (not kept)


# ----- implausible dates ------------------------------------------------------------------------------
@pytest.mark.protocol("3c-implausible", "3b-dates")
@pytest.mark.parametrize(
    ("day", "kept"),
    [
        ("1899-12-31", False),
        ("1900-01-01", True),
        ("2026-06-01", True),  # as_of + 1 year
        ("2026-06-02", False),
        ("9999-12-31", False),
        ("0001-01-01", False),
    ],
)
def test_implausible_measurement_dates(day: str, kept: bool) -> None:
    record = base_record(labs=(lab("egfr", "60", day),))
    cleaned = plausible_record(record, AS_OF)
    assert (len(cleaned.labs) == 1) is kept
    assert any(f"eGFR dated {date.fromisoformat(day).isoformat()}" in c for c in cleaned.caveats) is (
        not kept
    )


@pytest.mark.protocol("3c-implausible", "3b-dates")
def test_open_period_end_and_undated_medication() -> None:
    sentinel = statement("alendronate", "2021-03-01", "9999-12-31")
    bad_start = statement("alendronate", "0001-01-01")
    cleaned = plausible_record(base_record(medications=(sentinel, bad_start)), AS_OF)
    assert cleaned.medications[0].period_end == AS_OF  # open: still running on as_of
    assert cleaned.medications[1].period_start is None
    assert "ignored alendronate record dated 0001-01-01: implausible date" in cleaned.caveats
    assert not any("9999" in c for c in cleaned.caveats)


@pytest.mark.protocol("3c-implausible", "3b-dates", "R0b")
@pytest.mark.parametrize("birth", ["0001-01-01", "1899-12-31", "2025-06-02", "9999-12-31"])
def test_implausible_birth_date_is_missing(birth: str, knowledge: Knowledge) -> None:
    demographics = replace(base_record().demographics, birth_date=date.fromisoformat(birth))  # type: ignore[type-var]
    decision = evaluate(base_record(demographics=demographics), knowledge, AS_OF)
    assert (decision.outcome, decision.missing) == ("INSUFFICIENT_DATA", ("birth_date",))


@pytest.mark.protocol("3b-dates", "3b-months")
@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(9999, 12, 31), 1, date.max),
        (date(9999, 11, 30), 1, date(9999, 12, 30)),
        (date(1, 1, 1), -1, date.min),
        (date(1, 2, 28), -1, date(1, 1, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
    ],
)
def test_add_months_is_total(day: date, months: int, expected: date) -> None:
    assert dates.add_months(day, months) == expected


@pytest.mark.protocol("3b-dates")
def test_day_arithmetic_is_total() -> None:
    assert dates.add_days(date.max, 183) == date.max
    assert dates.add_days(date.min, -1) == date.min
    assert dates.add_days(date(2024, 2, 28), 1) == date(2024, 2, 29)
    merged = dates.merge(
        [dates.Interval(date(2020, 1, 1), date.max), dates.Interval(date(2021, 1, 1), date.max)]
    )
    assert merged == [dates.Interval(date(2020, 1, 1), date.max)]
    assert dates.gaps(merged, date(2019, 12, 30), date.max) == [
        dates.Interval(date(2019, 12, 30), date(2019, 12, 31))
    ]


@pytest.mark.protocol("3b-dates")
@pytest.mark.parametrize(
    "value", ["2021-02-15T23:30:00-05:00", "2021-02-15T23:30:00+14:00", "2021-02-15T00:10:00Z", "2021-02-15"]
)
def test_calendar_date_is_the_date_as_written(value: str) -> None:
    assert calendar_date(value) == date(2021, 2, 15)


# ----- duplicates and scanner identity ----------------------------------------------------------------
def _dxa(obs_id: str, day: str, value: float, **extra: Any) -> dict[str, Any]:
    return observation(
        "38264-8",
        id=obs_id,
        effectiveDateTime=day,
        valueQuantity={"value": value, "unit": "{T-score}"},
        **extra,
    )


@pytest.mark.protocol("3c-duplicates", "5-dxa")
def test_transcribed_duplicate_is_one_measurement(knowledge: Knowledge) -> None:
    interface = _dxa("a", "2021-02-15", -2.6, device={"display": "Hologic Horizon A (SN 1001)"})
    transcribed = _dxa("b", "2021-02-15", -2.60, device={"display": "Transcribed: Hologic"})
    other_value = _dxa("c", "2021-02-15", -2.7)
    result = record_of([interface, transcribed, other_value], knowledge)
    values = sorted((b.value, b.scanner.kind if b.scanner else None) for b in result.bmd)
    assert values == [(Decimal("-2.7"), None), (Decimal("-2.6"), "identifier")]


@pytest.mark.protocol("3c-duplicates", "R8", "5-dxa")
def test_transcribed_baseline_copy_creates_no_scanner_change(knowledge: Knowledge) -> None:
    """Same facts as s01, plus a transcribed copy of the baseline naming the scanner by model only."""
    plain = base_record()
    copy = replace(plain.bmd[0], scanner=ScannerId("display", "zz transcribed", "ZZ transcribed"))
    copies = tuple(replace(b, scanner=copy.scanner) for b in plain.bmd if b.date == date(2021, 2, 15))
    from cds_service.facts.extract_observations import _without_duplicates

    deduplicated = _without_duplicates([*plain.bmd, *copies])
    assert evaluate(replace(plain, bmd=deduplicated), knowledge, AS_OF) == evaluate(plain, knowledge, AS_OF)


@pytest.mark.protocol("3c-duplicates", "5-dxa")
@pytest.mark.parametrize(
    ("performer", "expected"),
    [
        ([{"reference": "Practitioner/r1", "display": "Dr Reader"}], None),
        ([{"display": "Dr Reader"}], None),
        ([{"reference": "PractitionerRole/x", "display": "Radiology"}], None),
        (
            [{"reference": "Organization/o1", "display": "Bone Clinic"}],
            ScannerId("display", "bone clinic", "Bone Clinic"),
        ),
        (
            [{"type": "Organization", "display": "Bone Clinic"}],
            ScannerId("display", "bone clinic", "Bone Clinic"),
        ),
        (
            [
                {"reference": "Practitioner/r1", "display": "Dr Reader"},
                {"reference": "Organization/o1", "display": "Bone Clinic"},
            ],
            ScannerId("display", "bone clinic", "Bone Clinic"),
        ),
    ],
)
def test_a_practitioner_is_never_a_scanner(
    performer: list[dict[str, Any]], expected: ScannerId | None, knowledge: Knowledge
) -> None:
    result = record_of([_dxa("a", "2021-02-15", -2.6, performer=performer)], knowledge)
    assert [b.scanner for b in result.bmd] == [expected]


@pytest.mark.protocol("3c-duplicates", "5-dxa")
def test_device_identity_kinds(knowledge: Knowledge) -> None:
    by_identifier = _dxa("a", "2021-02-15", -2.6, device={"identifier": {"value": "ASSET-9"}, "display": "X"})
    by_serial = _dxa("b", "2021-02-16", -2.6, device={"reference": "Device/d1"})
    device = {"resourceType": "Device", "id": "d1", "serialNumber": "77A"}
    by_display = _dxa("c", "2021-02-17", -2.6, device={"display": "  Hologic   Horizon-A "})
    result = record_of([by_identifier, by_serial, device, by_display], knowledge)
    assert sorted((b.scanner.kind, b.scanner.value) for b in result.bmd if b.scanner) == [
        ("display", "hologic horizon a"),
        ("identifier", "ASSET-9"),
        ("identifier", "sn:77a"),
    ]


# ----- panels and units -------------------------------------------------------------------------------
@pytest.mark.protocol("3c-panels", "5-dxa")
def test_epic_panel_components_with_local_codes_sd_and_period(knowledge: Knowledge) -> None:
    local = "urn:oid:1.2.840.114350.1.13.999.2.7.2.768282"

    def component(loinc: str, value: Any, unit: str | None) -> dict[str, Any]:
        code = {"coding": [{"system": local, "code": f"L{loinc}"}, {"system": LOINC, "code": loinc}]}
        quantity: dict[str, Any] = {"value": value}
        if unit:
            quantity["unit"] = unit
        return {"code": code, "valueQuantity": quantity}

    panel = {
        "resourceType": "Observation",
        "id": "panel-1",
        "status": "final",
        "subject": SUBJECT,
        "code": {"coding": [{"system": local, "code": "DXA-PANEL"}], "text": "DXA"},
        "effectivePeriod": {"start": "2021-02-15T23:10:00-05:00", "end": "2021-02-15T23:50:00-05:00"},
        "device": {"display": "Hologic Horizon A (SN 1001)"},
        "component": [
            component("38264-8", -2.6, "SD"),
            component("38267-1", -2.9, "{SD}"),
            {"code": component("38263-0", 0, None)["code"], "valueString": "-2.7"},
            component("38261-4", 0.712, "g/cm^2"),
            component("24966-4", 0.801, "mg/cm2"),
        ],
    }
    result = record_of([panel], knowledge)
    assert sorted((b.site, b.kind, b.value, b.date) for b in result.bmd) == [
        ("femoral_neck", "t_score", Decimal("-2.7"), date(2021, 2, 15)),
        ("lumbar_spine", "t_score", Decimal("-2.9"), date(2021, 2, 15)),
        ("total_hip", "bmd", Decimal("0.712"), date(2021, 2, 15)),
        ("total_hip", "t_score", Decimal("-2.6"), date(2021, 2, 15)),
    ]
    assert {b.scanner for b in result.bmd} == {
        ScannerId("identifier", "sn:1001", "Hologic Horizon A (SN 1001)")
    }
    assert "ignored DXA value with unit mg/cm2" in result.caveats


@pytest.mark.protocol("5-dxa")
@pytest.mark.parametrize(
    ("code", "unit", "kept"),
    [
        ("38264-8", "{T-score}", True),
        ("38264-8", "{T-Score}", True),
        ("38264-8", "SD", True),
        ("38264-8", "sd", True),
        ("38264-8", "{SD}", True),
        ("38264-8", None, True),
        ("38264-8", "%", False),
        ("38264-8", "g/cm2", False),
        ("38261-4", "g/cm2", True),
        ("38261-4", "G/CM2", True),
        ("38261-4", "g/cm-2", True),
        ("38261-4", "g/cm^2", True),
        ("38261-4", "mg/cm2", False),
        ("38261-4", None, False),
        ("38261-4", "{T-score}", False),
    ],
)
def test_dxa_units(code: str, unit: str | None, kept: bool, knowledge: Knowledge) -> None:
    quantity: dict[str, Any] = {"value": 0.8 if code == "38261-4" else -2.6}
    if unit is not None:
        quantity["unit"] = unit
    result = record_of([observation(code, valueQuantity=quantity)], knowledge)
    assert (len(result.bmd) == 1) is kept
    assert any("ignored DXA value with unit" in c for c in result.caveats) is (not kept)


@pytest.mark.protocol("3c-comparators")
def test_lab_status_keeps_undecided_gates_apart(knowledge: Knowledge) -> None:
    status = assess_labs((bound("egfr", ">", "32"),), AS_OF, knowledge)
    assert status.egfr_below_gate is False
    assert status.egfr_follow_on is None
    assert status.undecided == ("egfr",)


@pytest.mark.protocol("3c-implausible", "3b-labs")
@pytest.mark.parametrize("limit", [1e300, -1e300, 1e10])
def test_absurd_reference_limit_falls_back_to_the_default(limit: float, knowledge: Knowledge) -> None:
    """A converted (mmol/L) absurd limit used to overflow decimal rounding (HTTP 500)."""
    calcium = observation(
        "17861-6",
        valueQuantity={"value": 2.3, "unit": "mmol/L"},
        referenceRange=[
            {"low": {"value": limit, "unit": "mmol/L"}, "high": {"value": 2.6, "unit": "mmol/L"}}
        ],
    )
    [result] = record_of([calcium], knowledge).labs
    assert (result.value, result.ref_low, result.ref_high) == (Decimal("9.22"), None, Decimal("10.42"))


@pytest.mark.protocol("3c-panels", "3b-dates")
@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ({"start": "2021-02-15T23:10:00-05:00", "end": "2021-02-16T00:10:00-05:00"}, date(2021, 2, 15)),
        ({"end": "2021-02-15T23:50:00+14:00"}, date(2021, 2, 15)),
        ({"start": "2021-02-15"}, date(2021, 2, 15)),
    ],
)
def test_effective_period_dates_a_dxa_as_written(
    period: dict[str, str], expected: date, knowledge: Knowledge
) -> None:
    dxa = observation("38264-8", valueQuantity={"value": -2.6, "unit": "SD"}, effectivePeriod=period)
    dxa.pop("effectiveDateTime")
    assert [b.date for b in record_of([dxa], knowledge).bmd] == [expected]


@pytest.mark.protocol("3c-duplicates", "R8", "5-dxa")
@pytest.mark.parametrize("copy_value", ["-2.5", "-2.45", "-2.3"])
def test_scannerless_copy_never_hides_a_scanner_change(copy_value: str, knowledge: Knowledge) -> None:
    """Baseline on scanner A, follow-up on scanner B, plus a transcribed copy of the follow-up without a
    device (hip rounded differently or not): still a scanner change (it was 'assumed same scanner')."""
    from tests.clinical_builders import dxa

    scanner_b = ScannerId("identifier", "sn:2002", "DXA-2 (SN 2002)")
    values = (
        *dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.7"),
        *dxa("2024-05-20", th="-2.5", ls="-2.7", fn="-2.6", scanner=scanner_b),
        *dxa("2024-05-20", th=copy_value, ls="-2.7", scanner=None),
    )
    decision = evaluate(base_record(bmd=values), knowledge, AS_OF)
    assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "R8"), decision
