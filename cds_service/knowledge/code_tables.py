"""The rows of the code tables (CSV) as typed entries: medication strengths, observation kinds and sites."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class MedicationCode:
    ingredient: str  # first ingredient of a combination ("alendronate/cholecalciferol" -> alendronate)
    role: str  # first_line_antiresorptive, anabolic, oncology_dose, other_bone_agent, supplement
    strength_mg: Decimal | None  # dose per unit in mg when the table states it, else None
    display: str
    form: str


@dataclass(frozen=True)
class ObservationCode:
    kind: str  # t_score, bmd, z_score, frax_mof, frax_hip, egfr, calcium, albumin, ...
    site: str  # total_hip, femoral_neck, lumbar_spine, radius, other, unknown, "" for labs
    side: str | None


SITE_MAP: dict[str, tuple[str, str | None]] = {
    "total_hip": ("total_hip", None),
    "hip_left": ("total_hip", "left"),
    "hip_right": ("total_hip", "right"),
    "femur_femoral_neck": ("femoral_neck", None),
    "femur_femoral_neck_left": ("femoral_neck", "left"),
    "femur_femoral_neck_right": ("femoral_neck", "right"),
    "lumbar_spine": ("lumbar_spine", None),
    "radius_ulna": ("radius", None),
    "radius_ulna_left": ("radius", "left"),
    "radius_ulna_right": ("radius", "right"),
    "unspecified": ("unknown", None),
}
# Body-site concepts of observations.csv (`kind == body_site`) -> BMD site.
BODY_SITE_MAP = {
    "femoral_neck": "femoral_neck",
    "hip": "total_hip",
    "hip_joint": "total_hip",
    "proximal_femur": "total_hip",
    "lumbar_spine": "lumbar_spine",
    "lumbar_vertebra": "lumbar_spine",
    "radius": "radius",
    "distal_radius": "radius",
    "radius_ulna": "radius",
    "forearm": "radius",
}
_MG_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*mg\b(?!\s*/)", re.IGNORECASE)
# Concentration strengths whose product is known (codes/SOURCES.md "Medications"): mg/mL -> dose mg.
_CONCENTRATION_DOSE = {
    ("denosumab", "60 mg/mL"): Decimal("60"),
    ("zoledronic_acid", "0.05 mg/mL"): Decimal("5"),
    ("zoledronic_acid", "0.04 mg/mL"): Decimal("4"),
}


def strength_mg(ingredient: str, strength: str) -> Decimal | None:
    text = strength.strip()
    if not text:
        return None
    known = _CONCENTRATION_DOSE.get((ingredient, text))
    if known is not None:
        return known
    match = _MG_RE.match(text)
    if match:
        try:
            return Decimal(match.group(1))
        except InvalidOperation:  # pragma: no cover - regex guarantees a number
            return None
    return None


@lru_cache(maxsize=16)
def csv_rows(path: Path, _mtime_ns: int, _size: int) -> tuple[dict[str, str], ...]:
    """Rows of a code table, read once per file version (the rows are never modified)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return tuple(csv.DictReader(handle))
