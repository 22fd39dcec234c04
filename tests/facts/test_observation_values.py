"""facts.observation_values: an Observation value as EHRs send it (protocol §3c comparators, implausible)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fhir.resources.R4B.quantity import Quantity

from cds_service.facts.observation_values import (
    MAX_SHOWN_TEXT,
    Implausible,
    Measured,
    ObservedValue,
    Unreadable,
    from_string,
    observed_value,
    shown_text,
)


@pytest.mark.protocol("3c-comparators")
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("-2.5", Measured(Decimal("-2.5"), None, []), id="t-score-string"),
        pytest.param("+1.0", Measured(Decimal("1.0"), None, []), id="explicit-plus-sign"),
        pytest.param("<15", Measured(Decimal(15), "<", []), id="egfr-less-than"),
        pytest.param(">60", Measured(Decimal(60), ">", []), id="egfr-greater-than"),
        pytest.param(">= 60", Measured(Decimal(60), ">=", []), id="greater-or-equal-with-space"),
        pytest.param("<=7", Measured(Decimal(7), "<=", []), id="less-or-equal"),
        pytest.param("≤ 7", Measured(Decimal(7), "<=", []), id="unicode-less-or-equal"),
        pytest.param("≥90", Measured(Decimal(90), ">=", []), id="unicode-greater-or-equal"),
        pytest.param("=<7", Measured(Decimal(7), "<=", []), id="reversed-less-or-equal"),
        pytest.param("=>90", Measured(Decimal(90), ">=", []), id="reversed-greater-or-equal"),
        pytest.param(
            "< 15 mL/min/1.73m2", Measured(Decimal(15), "<", ["mL/min/1.73m2"]), id="bound-with-egfr-unit"
        ),
        pytest.param("  9.4 mg/dL ", Measured(Decimal("9.4"), None, ["mg/dL"]), id="padded-value-and-unit"),
        pytest.param("2,35 mmol/L", Measured(Decimal("2.35"), None, ["mmol/L"]), id="decimal-comma"),
        pytest.param(".85", Measured(Decimal("0.85"), None, []), id="leading-decimal-point"),
        pytest.param("-2.5 SD", Measured(Decimal("-2.5"), None, ["SD"]), id="t-score-with-sd-unit"),
    ],
)
def test_numeric_strings_are_values(text: str, expected: Measured) -> None:
    assert from_string(text) == expected


@pytest.mark.protocol("3c-comparators")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("see report", id="free-text"),
        pytest.param("pending", id="pending"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("< >", id="comparator-without-number"),
        pytest.param("n/a", id="not-applicable"),
        pytest.param("low", id="qualitative-word"),
    ],
)
def test_strings_that_are_not_numbers_are_unreadable(text: str) -> None:
    assert isinstance(from_string(text), Unreadable)


@pytest.mark.protocol("3c-comparators")
def test_unreadable_text_is_kept_for_the_card_shortened_and_flattened() -> None:
    long_text = "result  to follow\nafter " + "x" * 80
    result = from_string(long_text)
    assert isinstance(result, Unreadable)
    assert len(result.text) == MAX_SHOWN_TEXT
    assert result.text.startswith("result to follow after ")
    assert result.text.endswith("…")
    assert from_string("see report") == Unreadable("see report")


@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("99999999999", id="absurd-magnitude"),
        pytest.param("-10000000000", id="absurd-negative"),
    ],
)
def test_absurd_numeric_strings_are_implausible(text: str) -> None:
    assert from_string(text) == Implausible(text)


@pytest.mark.protocol("3c-comparators")
@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        pytest.param(
            {"value": -2.6, "unit": "{T-score}"},
            Measured(Decimal("-2.6"), None, ["{T-score}"]),
            id="plain-quantity",
        ),
        pytest.param(
            {
                "value": 15,
                "comparator": "<",
                "unit": "mL/min/1.73m2",
                "system": "http://unitsofmeasure.org",
                "code": "mL/min/{1.73_m2}",
            },
            Measured(Decimal(15), "<", ["mL/min/{1.73_m2}", "mL/min/1.73m2"]),
            id="comparator-code-and-unit",
        ),
        pytest.param(
            {"value": 60, "comparator": ">="}, Measured(Decimal(60), ">=", []), id="comparator-no-unit"
        ),
        pytest.param(
            {"value": 7, "comparator": "ad", "unit": "ng/mL"},
            Measured(Decimal(7), None, ["ng/mL"]),
            id="ad-comparator-is-no-bound",
        ),
    ],
)
def test_value_quantity(quantity: dict[str, object], expected: ObservedValue) -> None:
    assert observed_value(Quantity(**quantity), None) == expected


def test_value_quantity_wins_over_value_string() -> None:
    result = observed_value(Quantity(value=30, unit="ng/mL"), "<7")
    assert result == Measured(Decimal(30), None, ["ng/mL"])


@pytest.mark.protocol("3c-implausible")
def test_absurd_quantity_is_implausible() -> None:
    assert isinstance(observed_value(Quantity(value=Decimal("1e12")), None), Implausible)


@pytest.mark.parametrize(
    ("quantity", "string"),
    [
        pytest.param(None, None, id="no-value"),
        pytest.param(None, 42, id="string-of-wrong-type"),
        pytest.param(Quantity(unit="mg/dL"), None, id="quantity-without-value"),
    ],
)
def test_no_value(quantity: Quantity | None, string: object) -> None:
    assert observed_value(quantity, string) is None


def test_shown_text_keeps_short_text() -> None:
    assert shown_text(" a\tb ") == "a b"
