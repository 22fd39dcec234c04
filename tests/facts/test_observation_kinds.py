"""facts.observation_kinds: lab units converted into the canonical unit (protocol §3b labs)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cds_service.facts.observation_kinds import lab_factor

ONE = Decimal(1)


@pytest.mark.protocol("3b-labs")
@pytest.mark.parametrize(
    ("kind", "units", "factor"),
    [
        pytest.param("egfr", [], (ONE, ONE), id="egfr-bare-number"),
        pytest.param("egfr", ["mL/min/{1.73_m2}"], (ONE, ONE), id="egfr-ucum"),
        pytest.param("egfr", ["mL/min/1.73 m2"], (ONE, ONE), id="egfr-human-unit"),
        pytest.param("egfr", ["mg/dL"], None, id="egfr-wrong-unit"),
        pytest.param("calcium", ["mg/dL"], (ONE, ONE), id="calcium-mg-dl"),
        pytest.param("calcium", ["mmol/L"], (Decimal("4.008"), ONE), id="calcium-mmol-l"),
        pytest.param("albumin", ["g/L"], (ONE, Decimal(10)), id="albumin-g-l"),
        pytest.param("albumin", ["g/dL"], (ONE, ONE), id="albumin-g-dl"),
        pytest.param("vitamin_d_25oh", ["nmol/L"], (ONE, Decimal("2.496")), id="vitamin-d-nmol"),
        pytest.param("vitamin_d_25oh", ["ug/L"], (ONE, ONE), id="vitamin-d-ug-l"),
        pytest.param("alkaline_phosphatase", ["[iU]/L"], (ONE, ONE), id="alp-ucum-iu"),
        pytest.param("alkaline_phosphatase", ["U/L"], (ONE, ONE), id="alp-u-l"),
        pytest.param("pth", ["pg/mL"], (ONE, ONE), id="pth-pg-ml"),
        pytest.param("calcium", [], None, id="calcium-without-unit-unreadable"),
        pytest.param("calcium", ["mEq/L"], None, id="calcium-meq-not-converted"),
        pytest.param("calcium", ["{unknown}", "mg/dL"], (ONE, ONE), id="first-recognised-unit"),
    ],
)
def test_lab_factor(kind: Any, units: list[str], factor: tuple[Decimal, Decimal] | None) -> None:
    assert lab_factor(kind, units) == factor
