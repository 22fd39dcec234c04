"""facts.extract_strength: mg per dose and oncology vs osteoporosis use (protocol §4 oncology, §3c brands)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.ratio import Ratio

from cds_service.facts.extract_strength import doses_in_text, strength_class, structured_doses
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import RXNORM

UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


@pytest.mark.protocol("4-oncology")
@pytest.mark.parametrize(
    ("agent", "text", "doses"),
    [
        pytest.param("alendronate", "Alendronate 70 mg tablet weekly", [Decimal(70)], id="plain-mg"),
        pytest.param("denosumab", "Prolia 60MG/ML injection", [Decimal(60)], id="prolia-concentration"),
        pytest.param("denosumab", "denosumab 70 mg/mL", [Decimal(120)], id="xgeva-concentration-is-120-mg"),
        pytest.param("denosumab", "XGEVA 120 mg/1.7 mL", [Decimal(120)], id="amount-in-volume"),
        pytest.param("denosumab", "denosumab 60 mg/1 mL prefilled syringe", [Decimal(60)], id="per-one-ml"),
        pytest.param("zoledronic_acid", "zoledronic acid 5 mg/100 mL", [Decimal(5)], id="reclast-bag"),
        pytest.param(
            "zoledronic_acid", "zoledronic acid 0.05 mg/mL", [Decimal(5)], id="reclast-concentration"
        ),
        pytest.param("zoledronic_acid", "zoledronic acid 0.04 MG/ML", [Decimal(4)], id="zometa-ready-to-use"),
        pytest.param("zoledronic_acid", "zoledronic acid 0.8 mg/mL", [Decimal(4)], id="zometa-concentrate"),
        pytest.param("zoledronic_acid", "zoledronic acid 4 mg/5 mL", [Decimal(4)], id="zometa-vial"),
        pytest.param("denosumab", "denosumab 25 mg/mL", [], id="unknown-concentration-ignored"),
        pytest.param("zoledronic_acid", "0.1 mg/kg", [], id="weight-based-dose-ignored"),
        pytest.param("denosumab", "2 mg/m2", [], id="body-surface-dose-ignored"),
        pytest.param("alendronate", "10 mg/day", [], id="daily-amount-ignored"),
        pytest.param("denosumab", "1.2 mg", [Decimal("1.2")], id="decimal-mg"),
        pytest.param("denosumab", "120mcg", [], id="micrograms-not-mg"),
        pytest.param("alendronate", "70 mg and 35 mg", [Decimal(70), Decimal(35)], id="several"),
        pytest.param("denosumab", "Prolia injection", [], id="no-number"),
    ],
)
def test_doses_in_text(agent: str, text: str, doses: list[Decimal]) -> None:
    assert doses_in_text(agent, text) == doses


def quantity(value: float, unit: str) -> Quantity:
    return Quantity(value=value, unit=unit, system=UCUM, code=unit)


@pytest.mark.protocol("4-oncology")
@pytest.mark.parametrize(
    ("agent", "dose_quantities", "strengths", "doses"),
    [
        pytest.param("denosumab", [quantity(60, "mg")], [], [Decimal(60)], id="dose-quantity-mg"),
        pytest.param(
            "denosumab", [Quantity(value=120, unit="MG")], [], [Decimal(120)], id="unit-only-upper-case"
        ),
        pytest.param("denosumab", [quantity(1, "mL")], [], [], id="dose-in-ml-not-a-strength"),
        pytest.param("denosumab", [Quantity(value=60)], [], [], id="dose-without-unit"),
        pytest.param(
            "denosumab",
            [],
            [Ratio(numerator=quantity(120, "mg"), denominator=quantity(1.7, "mL"))],
            [Decimal(120)],
            id="ingredient-120mg-per-1.7ml",
        ),
        pytest.param(
            "denosumab",
            [],
            [Ratio(numerator=quantity(60, "mg"), denominator=quantity(1, "mL"))],
            [Decimal(60)],
            id="ingredient-60mg-per-ml-is-prolia",
        ),
        pytest.param(
            "denosumab",
            [],
            [Ratio(numerator=quantity(70, "mg"), denominator=quantity(1, "mL"))],
            [Decimal(120)],
            id="ingredient-70mg-per-ml-is-xgeva",
        ),
        pytest.param(
            "denosumab",
            [],
            [Ratio(numerator=quantity(25, "mg"), denominator=quantity(1, "mL"))],
            [],
            id="unknown-concentration",
        ),
        pytest.param(
            "zoledronic_acid",
            [],
            [Ratio(numerator=quantity(5, "mg"), denominator=quantity(100, "mL"))],
            [Decimal(5)],
            id="ingredient-5mg-per-100ml",
        ),
        pytest.param(
            "alendronate",
            [],
            [Ratio(numerator=quantity(70, "mg"), denominator=Quantity(value=1, unit="tablet"))],
            [Decimal(70)],
            id="ingredient-per-tablet",
        ),
        pytest.param(
            "zoledronic_acid",
            [],
            [Ratio(numerator=quantity(5000, "ug"), denominator=quantity(100, "mL"))],
            [],
            id="micrograms-not-read",
        ),
    ],
)
def test_structured_doses(
    agent: str, dose_quantities: list[Any], strengths: list[Any], doses: list[Decimal]
) -> None:
    assert structured_doses(agent, dose_quantities, strengths) == doses


def table_entry(knowledge: Knowledge, code: str) -> Any:
    return knowledge.medications[(RXNORM, code)]


@pytest.mark.protocol("4-oncology", "3c-brands")
@pytest.mark.parametrize(
    ("agent", "code", "doses", "texts", "expected"),
    [
        pytest.param("alendronate", None, [Decimal(70)], [], "osteoporosis", id="not-strength-dependent"),
        pytest.param("zoledronic_acid", "1114085", [], [], "oncology", id="oncology-product-code"),
        pytest.param("denosumab", "993450", [], [], "osteoporosis", id="prolia-product-code"),
        pytest.param("zoledronic_acid", "705823", [], [], "osteoporosis", id="reclast-product-code"),
        pytest.param("denosumab", None, [Decimal(60)], [], "osteoporosis", id="60-mg-dose"),
        pytest.param("denosumab", None, [Decimal(120)], [], "oncology", id="120-mg-dose"),
        pytest.param("zoledronic_acid", None, [Decimal(4)], [], "oncology", id="4-mg-zoledronic"),
        pytest.param("zoledronic_acid", None, [Decimal(5)], [], "osteoporosis", id="5-mg-zoledronic"),
        pytest.param(
            "denosumab", None, [Decimal("60.0")], [], "osteoporosis", id="60.0-written-with-decimal"
        ),
        pytest.param("denosumab", None, [], ["XGEVA injection"], "oncology", id="oncology-brand-name"),
        pytest.param("denosumab", None, [], ["Wyost (denosumab-bbdz)"], "oncology", id="oncology-biosimilar"),
        pytest.param("denosumab", None, [], ["Jubbonti"], "osteoporosis", id="osteoporosis-biosimilar"),
        pytest.param("zoledronic_acid", None, [], ["Zometa"], "oncology", id="zometa-brand"),
        pytest.param("zoledronic_acid", None, [], ["Aclasta infusion"], "osteoporosis", id="aclasta-brand"),
        pytest.param(
            "denosumab", None, [Decimal(60)], ["Xgeva"], "oncology", id="conflicting-evidence-reads-oncology"
        ),
        pytest.param("denosumab", None, [], ["denosumab injection"], "unknown", id="no-strength-evidence"),
        pytest.param("denosumab", None, [Decimal(30)], [], "unknown", id="unlisted-strength"),
        pytest.param("denosumab", None, [], ["Xgevax"], "unknown", id="brand-must-be-a-whole-word"),
    ],
)
def test_strength_class(
    agent: str,
    code: str | None,
    doses: list[Decimal],
    texts: list[str],
    expected: str,
    *,
    knowledge: Knowledge,
) -> None:
    entry = table_entry(knowledge, code) if code else None
    assert strength_class(agent, entry, doses, texts, knowledge) == expected
