"""facts.extract_observations: DXA, FRAX and lab Observations as EHRs send them (protocol §3b, §3c, §5)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cds_service.facts.extract_common import Caveats
from cds_service.facts.extract_observations import ObservationFacts, extract_observations
from cds_service.facts.parse import parse_resources
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import LOINC

SUBJECT = {"reference": "Patient/p1"}
EPIC_LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282"
DAY = date(2023, 2, 15)


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def coded(code: str, local: str | None = None) -> dict[str, Any]:
    codings = [{"system": LOINC, "code": code}]
    if local:
        codings.insert(0, {"system": EPIC_LOCAL, "code": local})
    return {"coding": codings}


def observation(code: dict[str, Any], **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": value.pop("id", "o1"),
        "status": "final",
        "subject": SUBJECT,
        "code": code,
        **({"effectiveDateTime": "2023-02-15T16:00:00-08:00"} if "effectivePeriod" not in value else {}),
        **value,
    }


def extracted(
    resources: list[dict[str, Any]], knowledge: Knowledge
) -> tuple[ObservationFacts, tuple[str, ...]]:
    caveats = Caveats()
    found = extract_observations(parse_resources(resources, knowledge), knowledge, caveats)
    return found, caveats.as_tuple()


def bmd_summary(found: ObservationFacts) -> list[tuple[Any, ...]]:
    return sorted((r.date, r.site, r.side, r.kind, r.value) for r in found.bmd)


T_SCORE = {"unit": "{T-score}", "system": "http://unitsofmeasure.org", "code": "{T-score}"}


@pytest.mark.protocol("3c-panels", "3c-comparators", "3c-implausible", "3b-site-unknown", "5-dxa")
@pytest.mark.parametrize(
    ("resources", "bmd"),
    [
        pytest.param(
            [observation(coded("38264-8"), valueQuantity={"value": -2.6, **T_SCORE})],
            [(DAY, "total_hip", None, "t_score", Decimal("-2.6"))],
            id="plain-total-hip-t-score-local-date",
        ),
        pytest.param(
            [observation(coded("80946-7"), valueString="-2.5")],
            [(DAY, "total_hip", "left", "t_score", Decimal("-2.5"))],
            id="numeric-value-string-t-score",
        ),
        pytest.param(
            [
                observation(
                    {"coding": [{"system": EPIC_LOCAL, "code": "DXA1"}], "text": "DXA panel"},
                    effectivePeriod={
                        "start": "2023-02-15T09:00:00-05:00",
                        "end": "2023-02-15T09:20:00-05:00",
                    },
                    component=[
                        {"code": coded("38264-8", "TH-T"), "valueQuantity": {"value": -2.4, "unit": "SD"}},
                        {"code": coded("38267-1", "LS-T"), "valueQuantity": {"value": -3.1, "unit": "SD"}},
                        {
                            "code": coded("38261-4", "TH-B"),
                            "valueQuantity": {"value": 0.712, "unit": "g/cm2"},
                        },
                    ],
                )
            ],
            [
                (DAY, "lumbar_spine", None, "t_score", Decimal("-3.1")),
                (DAY, "total_hip", None, "bmd", Decimal("0.712")),
                (DAY, "total_hip", None, "t_score", Decimal("-2.4")),
            ],
            id="epic-panel-components-sd-period",
        ),
        pytest.param(
            [
                observation(coded("38264-8"), id="interface", valueQuantity={"value": -2.6, **T_SCORE}),
                observation(coded("38264-8"), id="transcribed", valueQuantity={"value": -2.6, "unit": "SD"}),
            ],
            [(DAY, "total_hip", None, "t_score", Decimal("-2.6"))],
            id="duplicate-measurement-is-one",
        ),
        pytest.param(
            [observation(coded("38264-8"), valueQuantity={"value": -9.1, **T_SCORE})],
            [],
            id="implausible-t-score-ignored",
        ),
        pytest.param(
            [observation(coded("38261-4"), valueQuantity={"value": 712, "unit": "mg/cm2"})],
            [],
            id="bmd-in-unaccepted-unit-ignored",
        ),
        pytest.param(
            [
                observation(
                    {"coding": [{"system": EPIC_LOCAL, "code": "X"}], "text": "Femoral neck T-score left"},
                    valueQuantity={"value": -2.7, "unit": "SD"},
                )
            ],
            [],
            id="local-code-alone-is-not-a-table-code",
        ),
    ],
)
def test_bmd_shapes(
    resources: list[dict[str, Any]], bmd: list[tuple[Any, ...]], knowledge: Knowledge
) -> None:
    found, _ = extracted(resources, knowledge)
    assert bmd_summary(found) == bmd


@pytest.mark.protocol("3c-comparators", "3c-implausible", "3b-labs")
@pytest.mark.parametrize(
    ("resource", "lab"),
    [
        pytest.param(
            observation(coded("62238-1"), valueString="<15"),
            ("egfr", Decimal(15), "<", True),
            id="egfr-less-than-string",
        ),
        pytest.param(
            observation(
                coded("62238-1"), valueQuantity={"value": 60, "comparator": ">", "unit": "mL/min/1.73m2"}
            ),
            ("egfr", Decimal(60), ">", True),
            id="egfr-comparator-quantity",
        ),
        pytest.param(
            observation(coded("62238-1"), valueString="see comment"),
            ("egfr", None, None, False),
            id="egfr-unreadable-string-reported",
        ),
        pytest.param(
            observation(coded("17861-6"), valueQuantity={"value": 2.5, "unit": "mmol/L"}),
            ("calcium", Decimal("10.020"), None, True),
            id="calcium-mmol-converted-to-mg-dl",
        ),
        pytest.param(
            observation(coded("1989-3"), valueString="<7 ng/mL"),
            ("vitamin_d_25oh", Decimal(7), "<", True),
            id="vitamin-d-bound-with-unit",
        ),
    ],
)
def test_lab_shapes(resource: dict[str, Any], lab: tuple[Any, ...], knowledge: Knowledge) -> None:
    found, _ = extracted([resource], knowledge)
    (result,) = found.labs
    kind, value, comparator, readable = lab
    assert (result.kind, result.comparator, result.readable, result.date) == (kind, comparator, readable, DAY)
    if value is not None:
        assert result.value == value


@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param({"valueQuantity": {"value": 300, "unit": "mL/min/1.73m2"}}, "300", id="above-250"),
        pytest.param({"valueQuantity": {"value": -1, "unit": "mL/min/1.73m2"}}, "-1", id="negative"),
    ],
)
def test_implausible_egfr_ignored_with_a_caveat(
    value: dict[str, Any], shown: str, knowledge: Knowledge
) -> None:
    found, caveats = extracted([observation(coded("62238-1"), **value)], knowledge)
    assert found.labs == ()
    assert caveats == (f"ignored implausible eGFR value {shown}",)
