"""facts.lab_window: lab Observations outside the lab window are skipped only when skipping is invisible.

Labs are read within `lab_lookback_months` (12) before as_of, both ends included (protocol §3b). A lab
outside that window may be skipped unvalidated only when validation would succeed and extraction would add
no caveat (a date, a recognised unit): anything unusual is validated as before, so that an unreadable
resource is still counted (protocol §3a) and a caveat is still given.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.facts.lab_window import LabWindow
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import LOINC

AS_OF = date(2024, 6, 1)  # window 2023-06-01 .. 2024-06-01
UCUM = "http://unitsofmeasure.org"
EGFR_CODE = {"coding": [{"system": LOINC, "code": "62238-1", "display": "eGFR CKD-EPI"}]}
EGFR_VALUE = {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"}
OLD = "2022-01-10"


def lab(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "egfr-1",
        "status": "final",
        "code": EGFR_CODE,
        "effectiveDateTime": OLD,
        "valueQuantity": EGFR_VALUE,
    }
    resource.update(changes)
    return {key: value for key, value in resource.items() if value is not None}


@pytest.fixture(scope="module")
def window() -> LabWindow:
    return LabWindow.build(packaged_knowledge(), AS_OF)


def test_window_is_twelve_months_before_as_of(window: LabWindow) -> None:
    assert (window.start, window.end) == (date(2023, 6, 1), AS_OF)


@pytest.mark.protocol("3b-months", "3b-labs")
@pytest.mark.parametrize(
    ("resource", "skipped"),
    [
        pytest.param(lab(), True, id="old-plain-egfr"),
        pytest.param(lab(effectiveDateTime="2023-05-31"), True, id="day-before-window"),
        pytest.param(lab(effectiveDateTime="2023-06-01"), False, id="first-day-of-window-is-read"),
        pytest.param(lab(effectiveDateTime="2024-06-01"), False, id="as-of-is-read"),
        pytest.param(lab(effectiveDateTime="2024-06-02"), True, id="after-as-of"),
        pytest.param(lab(effectiveDateTime="2022-01-10T08:30:00-05:00"), True, id="old-datetime-with-zone"),
        pytest.param(
            lab(effectiveDateTime="2023-06-01T00:30:00+14:00"),
            False,
            id="date-as-written-not-utc-is-in-window",
        ),
        pytest.param(lab(status="amended"), True, id="amended"),
        pytest.param(
            lab(interpretation=[{"text": "normal"}], note=[{"text": "x"}]), True, id="unread-elements"
        ),
        pytest.param(lab(valueQuantity=None), True, id="no-value-at-all"),
        pytest.param(lab(valueQuantity={"unit": "mL/min/1.73m2"}), True, id="quantity-without-value"),
        pytest.param(lab(valueQuantity={"value": 15, "comparator": "<"}), True, id="comparator-bare-egfr"),
        pytest.param(
            lab(referenceRange=[{"low": {"value": 60, "unit": "mL/min/1.73m2"}, "text": ">60"}]),
            True,
            id="valid-reference-range",
        ),
        pytest.param(
            lab(
                code={"coding": [{"system": LOINC, "code": "17861-6"}]},
                valueQuantity={"value": 9.4, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
            ),
            True,
            id="old-calcium-mg-dl",
        ),
    ],
)
def test_skipped_only_outside_the_window(window: LabWindow, resource: dict[str, Any], skipped: bool) -> None:
    assert window.never_read(resource) is skipped


@pytest.mark.protocol("3c-comparators", "3c-implausible", "3a-cap")
@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(lab(valueString="<15", valueQuantity=None), id="value-string-read-as-usual"),
        pytest.param(lab(modifierExtension=[{"url": "http://x.org/m", "valueBoolean": True}]), id="modifier"),
        pytest.param(lab(effectiveDateTime=None, effectivePeriod={"start": OLD}), id="period-not-datetime"),
        pytest.param(lab(effectiveDateTime=None), id="undated-gives-a-caveat"),
        pytest.param(lab(effectiveDateTime="2022-01"), id="partial-date"),
        pytest.param(lab(effectiveDateTime="2022-02-30"), id="impossible-date"),
        pytest.param(lab(effectiveDateTime="2022-01-10T08:30:00"), id="time-without-zone-invalid-fhir"),
        pytest.param(lab(effectiveDateTime="2022-01-10T25:30:00Z"), id="hour-25"),
        pytest.param(lab(effectiveDateTime="2022-01-10T08:30:00+15:00"), id="offset-beyond-14"),
        pytest.param(lab(status="preliminary"), id="not-final"),
        pytest.param(lab(id="bad id!"), id="invalid-id"),
        pytest.param(
            lab(code={"coding": [{"system": LOINC, "code": "38264-8"}]}), id="dxa-t-score-not-a-lab"
        ),
        pytest.param(
            lab(code={"coding": [{"system": LOINC, "code": "62238-1", "userSelected": True}]}),
            id="coding-with-other-elements",
        ),
        pytest.param(
            lab(code={"coding": [{"system": LOINC, "code": "62238-1"}], "text": " "}), id="blank-text"
        ),
        pytest.param(lab(valueQuantity={"value": 62, "unit": "furlongs"}), id="unknown-unit-gives-a-caveat"),
        pytest.param(lab(valueQuantity={"value": "62"}), id="value-as-json-string"),
        pytest.param(lab(valueQuantity={"value": True}), id="value-as-boolean"),
        pytest.param(lab(valueQuantity={"value": 62, "comparator": "~"}), id="invalid-comparator"),
        pytest.param(lab(valueQuantity={"value": 62, "code": "mL/min"}), id="unit-code-without-system"),
        pytest.param(lab(valueQuantity={"value": 62, "unit": ""}), id="empty-unit"),
        pytest.param(lab(referenceRange=[]), id="empty-reference-range-list"),
        pytest.param(lab(referenceRange=[{"appliesTo": [{"text": "women"}]}]), id="range-with-applies-to"),
        pytest.param(
            lab(referenceRange=[{"low": {"value": 60, "comparator": ">"}}]), id="range-bound-comparator"
        ),
        pytest.param({"resourceType": "Condition", "id": "c1"}, id="not-an-observation"),
    ],
)
def test_anything_unusual_is_validated_as_before(window: LabWindow, resource: dict[str, Any]) -> None:
    assert window.never_read(resource) is False


def test_lab_kind_is_memoised_per_code(window: LabWindow) -> None:
    assert window.never_read(lab()) is True
    assert window.never_read(lab(id="egfr-2")) is True
    assert list(window.kind_memo.values()).count("egfr") == 1


def test_memoised_code_and_range_verdicts_follow_the_exact_json() -> None:
    """One window judges many labs: a verdict is reused only for the same JSON text of code and range."""
    window = LabWindow.build(packaged_knowledge(), AS_OF)
    low = {"value": 60, "unit": "mL/min/1.73m2"}
    blank_display = {"coding": [{"system": LOINC, "code": "62238-1", "display": " "}]}
    assert window.never_read(lab(referenceRange=[{"low": low}]))
    assert not window.never_read(lab(referenceRange=[{"low": {**low, "unit": " "}}]))
    assert window.never_read(lab())
    assert not window.never_read(lab(code=blank_display))  # same codes as EGFR_CODE, invalid display
    # orjson writes NaN as null: a NaN low (a float, well-formed) and a null low must not share a verdict.
    assert window.never_read(lab(referenceRange=[{"low": {"value": float("nan")}}]))
    assert not window.never_read(lab(referenceRange=[{"low": {"value": None}}]))
    assert window.never_read(lab(referenceRange=[{"low": low}]))  # the first verdict, reused
