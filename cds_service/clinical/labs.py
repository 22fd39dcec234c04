"""Latest labs within the look-back window, albumin-corrected calcium, range checks (§2, §3b)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from cds_service.clinical.dates import add_months
from cds_service.clinical.facts import LabResult
from cds_service.knowledge.loader import Knowledge

_CA_ALBUMIN_FACTOR = Decimal("0.8")
_NORMAL_ALBUMIN_G_DL = Decimal("4.0")


@dataclass(frozen=True)
class LabStatus:
    egfr: LabResult | None
    calcium: LabResult | None
    corrected_calcium: Decimal | None  # mg/dL; equals calcium when no albumin is on record
    calcium_corrected_with_albumin: bool
    calcium_high: bool
    calcium_low: bool
    albumin: LabResult | None
    alp: LabResult | None
    alp_high: bool
    vitamin_d: LabResult | None
    vitamin_d_low: bool


def latest(labs: tuple[LabResult, ...], kind: str, as_of: date, months: int) -> LabResult | None:
    lo = add_months(as_of, -months)
    found = [lab for lab in labs if lab.kind == kind and lo <= lab.date <= as_of]
    return max(found, key=lambda lab: lab.date) if found else None


def _bounds(lab: LabResult, kind: str, knowledge: Knowledge) -> tuple[Decimal | None, Decimal]:
    default = knowledge.model.lab_defaults[kind]  # type: ignore[index]
    low = lab.ref_low if lab.ref_low is not None else default.low
    high = lab.ref_high if lab.ref_high is not None else default.high
    return low, high


def assess_labs(labs: tuple[LabResult, ...], as_of: date, knowledge: Knowledge) -> LabStatus:
    months = knowledge.w.lab_lookback_months
    egfr = latest(labs, "egfr", as_of, months)
    calcium = latest(labs, "calcium", as_of, months)
    albumin = latest(labs, "albumin", as_of, months)
    alp = latest(labs, "alkaline_phosphatase", as_of, months)
    vitamin_d = latest(labs, "vitamin_d_25oh", as_of, months)
    corrected: Decimal | None = None
    high = low = False
    if calcium is not None:
        corrected = calcium.value
        if albumin is not None:
            corrected = calcium.value + _CA_ALBUMIN_FACTOR * (_NORMAL_ALBUMIN_G_DL - albumin.value)
        ca_low, ca_high = _bounds(calcium, "calcium", knowledge)
        high, low = corrected > ca_high, ca_low is not None and corrected < ca_low
    alp_high = False
    if alp is not None:
        alp_high = alp.value > _bounds(alp, "alkaline_phosphatase", knowledge)[1]
    vitamin_d_low = vitamin_d is not None and vitamin_d.value < knowledge.t.vitamin_d_low_ng_ml
    return LabStatus(
        egfr=egfr,
        calcium=calcium,
        corrected_calcium=corrected,
        calcium_corrected_with_albumin=calcium is not None and albumin is not None,
        calcium_high=high,
        calcium_low=low,
        albumin=albumin,
        alp=alp,
        alp_high=alp_high,
        vitamin_d=vitamin_d,
        vitamin_d_low=vitamin_d_low,
    )
