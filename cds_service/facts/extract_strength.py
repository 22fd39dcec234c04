"""Dose strength of a medication record: mg per dose, and oncology vs osteoporosis use (protocol §4).

Denosumab 120 mg (Xgeva) and zoledronic acid 4 mg (Zometa) are oncology doses, not osteoporosis
therapy. Strength comes from the product code, else structured doses and the text; the interval
rule (doses too close together) needs several records and is applied by the exposure step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from cds_service.facts.extract_common import decimal_text
from cds_service.facts.patient_record import StrengthClass
from cds_service.knowledge.code_tables import MedicationCode
from cds_service.knowledge.indexed import Knowledge

STRENGTH_DEPENDENT = frozenset({"denosumab", "zoledronic_acid"})
# Concentrations (mg/mL) whose product, hence dose, is known: Prolia 60 mg/mL (1 mL), Xgeva 70 mg/mL
# (1.7 mL = 120 mg), Reclast 0.05 mg/mL (100 mL = 5 mg), Zometa 0.04 mg/mL (100 mL) or 0.8 mg/mL (5 mL).
_CONCENTRATION_DOSE = {
    ("denosumab", "60"): Decimal(60),
    ("denosumab", "70"): Decimal(120),
    ("zoledronic_acid", "0.05"): Decimal(5),
    ("zoledronic_acid", "0.04"): Decimal(4),
    ("zoledronic_acid", "0.8"): Decimal(4),
}
# "70 mg", "120 mg/1.7 mL" (amount in a volume = dose), "60 mg/mL" (concentration); not "5 mg/kg".
_DOSE_TEXT = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*mg\b(?P<per>\s*/\s*(?P<volume>\d+(?:\.\d+)?)?\s*ml\b)?"
    r"(?!\s*/\s*(?:kg|m2|day|d\b|h\b|hr))",
    re.IGNORECASE,
)


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def doses_in_text(agent: str, text: str) -> list[Decimal]:
    """Doses in mg written in `text`; a bare concentration counts only when its product is known."""
    doses: list[Decimal] = []
    for match in _DOSE_TEXT.finditer(text):
        amount = _decimal(match.group(1))
        if amount is None:
            continue
        if match.group("per") and not match.group("volume"):
            known = _CONCENTRATION_DOSE.get((agent, decimal_text(amount)))
            if known is not None:
                doses.append(known)
            continue
        doses.append(amount)
    return doses


def structured_doses(
    agent: str, dose_quantities: Iterable[Any], ingredient_strengths: Iterable[Any]
) -> list[Decimal]:
    """Doses from `doseQuantity`/`dose` in mg and from Medication.ingredient.strength ratios."""
    doses: list[Decimal] = []
    for quantity in dose_quantities:
        value = _mg_value(quantity)
        if value is not None:
            doses.append(value)
    for ratio in ingredient_strengths:
        amount = _mg_value(getattr(ratio, "numerator", None))
        if amount is None:
            continue
        denominator = getattr(ratio, "denominator", None)
        volume = getattr(denominator, "value", None)
        unit = str(getattr(denominator, "code", None) or getattr(denominator, "unit", None) or "").lower()
        if unit == "ml" and volume == 1:
            known = _CONCENTRATION_DOSE.get((agent, decimal_text(amount)))
            if known is not None:
                doses.append(known)
        else:
            doses.append(amount)
    return doses


def _mg_value(quantity: Any) -> Decimal | None:
    value = getattr(quantity, "value", None)
    unit = str(getattr(quantity, "code", None) or getattr(quantity, "unit", None) or "").lower()
    return value if isinstance(value, Decimal) and unit == "mg" else None


def strength_class(
    agent: str,
    entry: MedicationCode | None,
    doses: list[Decimal],
    texts: list[str],
    knowledge: Knowledge,
) -> StrengthClass:
    """Oncology or osteoporosis use of denosumab / zoledronic acid; other agents: osteoporosis."""
    if entry is not None and entry.role == "oncology_dose":
        return "oncology"
    if agent not in STRENGTH_DEPENDENT:
        return "osteoporosis"
    oncology_mg = set(knowledge.model.oncology_strengths_mg.get(agent, ()))
    dosing = knowledge.model.dosing.get(agent)
    osteoporosis_mg = set(dosing.by_strength_mg) if dosing else set()
    if entry is not None and entry.strength_mg is not None:
        product = decimal_text(entry.strength_mg)
        if product in oncology_mg:
            return "oncology"
        if product in osteoporosis_mg:
            return "osteoporosis"
    written = {decimal_text(dose) for dose in doses}
    # A brand name decides the strength (knowledge file `medication_brands`, protocol §3c).
    named = {brand.strength_mg for brand in knowledge.brands_of(agent) if _names_brand(texts, (brand.brand,))}
    if (written | named) & oncology_mg:  # any oncology evidence wins: the safe reading of conflicting text
        return "oncology"
    if (written | named) & osteoporosis_mg:
        return "osteoporosis"
    return "unknown"


def _names_brand(texts: list[str], brands: Iterable[str]) -> bool:
    words = [re.compile(rf"\b{re.escape(brand)}\b", re.IGNORECASE) for brand in brands]
    return any(word.search(text) for word in words for text in texts)
