"""The observation kinds extraction reads and the lab units it converts: one table for parse and extract."""

from __future__ import annotations

from decimal import Decimal

from cds_service.facts.patient_record import LabKind

BMD_KINDS = frozenset({"t_score", "bmd"})
FRAX_KINDS = {"frax_mof": "mof", "frax_hip": "hip"}
LAB_KINDS: frozenset[LabKind] = frozenset(
    {"egfr", "calcium", "albumin", "alkaline_phosphatase", "vitamin_d_25oh", "pth"}
)
WANTED_KINDS = BMD_KINDS | set(FRAX_KINDS) | LAB_KINDS
_ONE = Decimal(1)
# Lab unit (lower case, spaces removed) -> (multiplier, divisor) into the canonical unit.
LAB_CONVERSIONS: dict[str, dict[str, tuple[Decimal, Decimal]]] = {
    "calcium": {"mg/dl": (_ONE, _ONE), "mmol/l": (Decimal("4.008"), _ONE)},
    "albumin": {"g/dl": (_ONE, _ONE), "g/l": (_ONE, Decimal(10))},
    "alkaline_phosphatase": {"u/l": (_ONE, _ONE), "iu/l": (_ONE, _ONE), "[iu]/l": (_ONE, _ONE)},
    "vitamin_d_25oh": {
        "ng/ml": (_ONE, _ONE),
        "ug/l": (_ONE, _ONE),
        "µg/l": (_ONE, _ONE),
        "nmol/l": (_ONE, Decimal("2.496")),
    },
    "pth": {"pg/ml": (_ONE, _ONE), "ng/l": (_ONE, _ONE)},
}


def lab_factor(kind: LabKind, units: list[str]) -> tuple[Decimal, Decimal] | None:
    if kind == "egfr" and not units:
        return _ONE, _ONE  # eGFR has one unit: a bare number (often a string like "<15") is in it
    for unit in units:
        compact = unit.replace(" ", "").lower()
        if kind == "egfr":
            if compact.startswith("ml/min"):
                return _ONE, _ONE
            continue
        factor = LAB_CONVERSIONS[kind].get(compact)
        if factor is not None:
            return factor
    return None
