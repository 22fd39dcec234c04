"""Property: no observation value or date shape, however absurd, makes the evaluation raise (protocol §3c:
"No input shape ever turns a call into a 5xx"). Random values and dates are put into scenario s01's
observations and medication records and evaluated end to end (parse, extract, rules)."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.offline import evaluate_bundle
from tests.support.app_settings import test_settings
from tests.support.fixtures import load_scenario_bundle

SETTINGS = test_settings({"CDS_AS_OF": "2025-06-01"})
BASE = load_scenario_bundle("s01")
EDGE_DATES = [
    "0001-01-01",
    "1899-12-31",
    "1900-01-01",
    "2026-06-01",
    "2026-06-02",
    "9999-12-31",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00-12:00",
    "9999-12",
    "0001",
]
dates = st.one_of(
    st.sampled_from(EDGE_DATES),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, -8, 8, 3, 250, 1e30, -1e30, 1e-300, 1e308]),
)
strings = st.one_of(
    st.sampled_from(["<15", ">60", "-2.5", "< 15 mL/min/1.73m2", "NaN", "Infinity", "1e999", "<", "", " "]),
    st.text(max_size=12),
)
comparators = st.sampled_from([None, "<", "<=", ">", ">="])
units = st.sampled_from([None, "mmol/L", "mg/dL", "g/L", "nmol/L", "g/cm2", "SD", "%", "mL/min"])


def _quantity(value: Any, comparator: str | None, unit: str | None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value}
    if comparator:
        quantity["comparator"] = comparator
    if unit:
        quantity["unit"] = unit
    return quantity


value_shapes = st.one_of(
    st.builds(lambda v, c, u: {"valueQuantity": _quantity(v, c, u)}, numbers, comparators, units),
    st.builds(lambda s: {"valueString": s}, strings),
    st.builds(
        lambda v, low, high, u: {
            "valueQuantity": _quantity(v, None, u),
            "referenceRange": [{"low": _quantity(low, None, u), "high": _quantity(high, None, u)}],
        },
        numbers,
        numbers,
        numbers,
        units,
    ),
)


def _mutated(
    observation_changes: list[tuple[int, dict[str, Any], str]], medication_dates: list[tuple[int, str, str]]
) -> dict[str, Any]:
    bundle = copy.deepcopy(BASE)
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    medications = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"].startswith("Medication")
    ]
    for index, value, day in observation_changes:
        target = observations[index % len(observations)]
        target.pop("valueQuantity", None)
        target.update(value)
        target["effectiveDateTime"] = day
    for index, start, end in medication_dates:
        target = medications[index % len(medications)]
        target.pop("effectiveDateTime", None)
        target["effectivePeriod"] = {"start": start, "end": end}
    return bundle


@pytest.mark.protocol("3c-implausible", "3c-comparators", "3b-dates")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    observation_changes=st.lists(st.tuples(st.integers(0, 50), value_shapes, dates), max_size=4),
    medication_dates=st.lists(st.tuples(st.integers(0, 10), dates, dates), max_size=2),
)
def test_no_value_or_date_shape_makes_the_evaluation_raise(
    observation_changes: list[tuple[int, dict[str, Any], str]], medication_dates: list[tuple[int, str, str]]
) -> None:
    decision = evaluate_bundle(_mutated(observation_changes, medication_dates), date(2025, 6, 1), SETTINGS)
    assert decision["outcome"]
