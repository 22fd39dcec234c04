"""rules/labs.py, table by table: bounds as readings (§3c), three-valued comparisons, albumin-corrected
calcium, the latest result in the window, and the gates a bound cannot decide (they count as missing)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from cds_service.facts.patient_record import LabResult
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.labs import Reading, assess_labs, below, corrected_calcium_reading, latest

KNOWLEDGE = packaged_knowledge()
AS_OF = date(2025, 6, 1)


def lab(
    kind: str, value: str, comparator: str | None = None, *, day: date = date(2025, 5, 1), **more: object
) -> LabResult:
    units = {"egfr": "mL/min/1.73m2", "calcium": "mg/dL", "albumin": "g/dL", "alkaline_phosphatase": "U/L"}
    return LabResult(
        kind=kind,  # type: ignore[arg-type]
        date=day,
        value=Decimal(value),
        unit=units.get(kind, "ng/mL"),
        ref_low=None,
        ref_high=None,
        resource_id=f"{kind}-{value}",
        comparator=comparator,  # type: ignore[arg-type]
        **more,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("comparator", "expected"),
    [
        (None, Reading(Decimal(30), Decimal(30))),
        ("<", Reading(None, Decimal(30), high_open=True)),
        ("<=", Reading(None, Decimal(30))),
        (">", Reading(Decimal(30), None, low_open=True)),
        (">=", Reading(Decimal(30), None)),
    ],
)
def test_a_result_reads_as_the_values_it_allows(comparator: str | None, expected: Reading) -> None:
    assert Reading.from_lab(lab("egfr", "30", comparator)) == expected


# (comparator, value, threshold) -> below, above, at_least; None: the bound cannot decide.
COMPARISONS = [
    (None, "29", "30", True, False, False),
    (None, "30", "30", False, False, True),
    (None, "31", "30", False, True, True),
    ("<", "30", "30", True, False, False),
    ("<", "31", "30", None, None, None),
    ("<=", "30", "30", None, False, None),
    ("<=", "29", "30", True, False, False),
    (">", "30", "30", False, True, True),
    (">", "29", "30", None, None, None),
    (">=", "30", "30", False, None, True),
    (">=", "31", "30", False, True, True),
]


@pytest.mark.parametrize(
    ("comparator", "value", "threshold", "is_below", "is_above", "is_at_least"), COMPARISONS
)
def test_comparisons_are_three_valued(  # noqa: PLR0917 - one parameter per table column
    comparator: str | None,
    value: str,
    threshold: str,
    is_below: bool | None,
    is_above: bool | None,
    is_at_least: bool | None,
) -> None:
    reading = Reading.from_lab(lab("egfr", value, comparator))
    assert reading.below(Decimal(threshold)) is is_below
    assert reading.above(Decimal(threshold)) is is_above
    assert reading.at_least(Decimal(threshold)) is is_at_least
    assert below(lab("egfr", value, comparator), Decimal(threshold)) is is_below


@pytest.mark.parametrize(
    ("calcium", "albumin", "low", "high"),
    [
        (("9.0", None), None, "9.0", "9.0"),  # no albumin: calcium as measured
        (("9.0", None), ("3.0", None), "9.8", "9.8"),  # 9.0 + 0.8 x (4.0 - 3.0)
        (("9.0", None), ("4.5", None), "8.6", "8.6"),
        (("9.0", None), ("3.0", "<"), "9.8", None),  # albumin below 3.0: corrected above 9.8
        (("9.0", "<"), ("3.0", None), None, "9.8"),
        (("9.0", ">"), ("3.0", ">"), None, None),  # both open in opposite senses: nothing decided
    ],
)
def test_corrected_calcium(
    calcium: tuple[str, str | None], albumin: tuple[str, str | None] | None, low: str | None, high: str | None
) -> None:
    albumin_lab = lab("albumin", *albumin) if albumin else None
    reading = corrected_calcium_reading(lab("calcium", *calcium), albumin_lab)
    assert reading.low == (Decimal(low) if low else None)
    assert reading.high == (Decimal(high) if high else None)


def test_latest_is_in_the_window_and_a_readable_result_wins_a_tie() -> None:
    old = lab("egfr", "50", day=date(2023, 1, 1))
    unreadable = lab("egfr", "0", day=date(2025, 5, 1), readable=False, text="see note")
    readable = lab("egfr", "55", day=date(2025, 5, 1))
    future = lab("egfr", "60", day=date(2025, 7, 1))
    assert latest((old, unreadable, readable, future), "egfr", AS_OF, 12) == readable
    assert latest((old,), "egfr", AS_OF, 12) is None
    assert latest((old,), "egfr", AS_OF, 36) == old


@pytest.mark.parametrize(
    ("result", "gate", "follow_on", "undecided"),
    [
        (("25", None), True, True, ()),
        (("40", None), False, True, ()),
        (("<15", None), True, True, ()),
        ((">60", None), False, True, ()),
        (("<40", None), None, False, ("egfr",)),  # 30 and 35 both undecided
        ((">32", None), False, False, ("egfr",)),  # not under 30, but 35 undecided
    ],
)
def test_egfr_gate_and_follow_on_band(
    result: tuple[str, str | None], gate: bool | None, follow_on: bool, undecided: tuple[str, ...]
) -> None:
    text = result[0]
    comparator = text[0] if text[0] in "<>" else None
    status = assess_labs((lab("egfr", text.lstrip("<>"), comparator),), AS_OF, KNOWLEDGE)
    assert status.egfr_below_gate is gate
    assert (status.egfr_follow_on is not None) is follow_on
    assert status.undecided == undecided


@pytest.mark.parametrize(
    ("calcium", "high", "low", "undecided"),
    [
        (("9.5", None), False, False, ()),
        (("11.5", None), True, False, ()),
        (("7.0", None), False, True, ()),
        (("12", "<"), False, False, ("calcium",)),
        (("11", ">"), True, False, ()),
    ],
)
def test_calcium_range(
    calcium: tuple[str, str | None], high: bool, low: bool, undecided: tuple[str, ...]
) -> None:
    status = assess_labs((lab("calcium", *calcium),), AS_OF, KNOWLEDGE)
    assert (status.calcium_high, status.calcium_low, status.undecided) == (high, low, undecided)
    assert status.calcium_corrected_with_albumin is False


def test_a_reference_range_on_the_result_beats_the_default() -> None:
    calcium = replace(lab("calcium", "10.0"), ref_high=Decimal("9.8"))
    assert assess_labs((calcium,), AS_OF, KNOWLEDGE).calcium_high is True
    assert assess_labs((lab("calcium", "10.0"),), AS_OF, KNOWLEDGE).calcium_high is False


@pytest.mark.parametrize(
    ("alp", "high", "undecided"),
    [(("100", None), False, ()), (("400", None), True, ()), (("100", ">"), False, ("alkaline_phosphatase",))],
)
def test_alkaline_phosphatase_above_range(
    alp: tuple[str, str | None], high: bool, undecided: tuple[str, ...]
) -> None:
    status = assess_labs((lab("alkaline_phosphatase", *alp),), AS_OF, KNOWLEDGE)
    assert (status.alp_high, status.undecided) == (high, undecided)


@pytest.mark.parametrize(
    ("vitamin_d", "low", "noted"),
    [(("12", None), True, False), (("30", None), False, False), (("30", "<"), False, True)],
)
def test_vitamin_d_low_is_a_caveat_gate(vitamin_d: tuple[str, str | None], low: bool, noted: bool) -> None:
    status = assess_labs((lab("vitamin_d_25oh", *vitamin_d),), AS_OF, KNOWLEDGE)
    assert status.vitamin_d_low is low
    assert status.undecided == ()  # never missing data: a caveat only
    assert any("vitamin D" in note for note in status.notes) is noted


def test_an_unreadable_latest_result_is_noted_and_missing() -> None:
    unreadable = lab("egfr", "0", readable=False, text="pending")
    status = assess_labs((unreadable,), AS_OF, KNOWLEDGE)
    assert status.egfr is None
    assert status.notes == ("eGFR reported as 'pending': not readable",)


@pytest.mark.protocol("3c-comparators", "3a-cap")
@pytest.mark.parametrize(
    ("calcium", "albumin", "shown"),
    [
        (("8.0", "<"), ("3.0", None), "<8.80"),  # 8.0 + 0.8 x (4.0 - 3.0), upper bound only
        (("9.0", None), ("3.0", "<"), ">9.80"),
        (("9.0", ">"), ("3.0", ">"), "not determinable"),  # no bound left: never "None–None" on a card
    ],
)
def test_corrected_calcium_as_shown_in_caveats(
    calcium: tuple[str, str | None], albumin: tuple[str, str | None], shown: str
) -> None:
    """§3c: a corrected calcium that bounds cannot decide is named in the caveat by what is known."""
    status = assess_labs((lab("calcium", *calcium), lab("albumin", *albumin)), AS_OF, KNOWLEDGE)
    assert status.corrected_calcium_shown == shown
    assert "calcium" in status.undecided or status.corrected_calcium is None
    assert all("None" not in note for note in status.notes)


def test_an_undeterminable_corrected_calcium_reads_plainly_in_the_caveat() -> None:
    status = assess_labs((lab("calcium", "9.0", ">"), lab("albumin", "3.0", ">")), AS_OF, KNOWLEDGE)
    assert status.notes == ("corrected calcium not determinable: cannot decide whether within range",)
