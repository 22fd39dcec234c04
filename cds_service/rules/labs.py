"""Latest labs within the look-back window, albumin-corrected calcium, range checks (§2, §3b, §3c).

A lab may be a bound (`<15`, `>60`, protocol §3c): it stands for every value in that direction. Each
comparison is therefore three-valued: decided true, decided false, or undecided (None). A gate the
bound cannot decide counts as missing (§3a), never as passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from cds_service.core.frozen_init import one_step_init
from cds_service.facts.dates import add_months
from cds_service.facts.patient_record import LabResult
from cds_service.knowledge.indexed import Knowledge

_CA_ALBUMIN_FACTOR = Decimal("0.8")
_NORMAL_ALBUMIN_G_DL = Decimal("4.0")


NOT_DETERMINABLE = "not determinable"  # a corrected calcium whose bounds leave every value open


@one_step_init
@dataclass(frozen=True)
class Reading:
    """The values a result allows: `low`..`high` (None = unbounded), each end open or closed."""

    low: Decimal | None
    high: Decimal | None
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def from_lab(cls, lab: LabResult) -> Reading:
        value, comparator = lab.value, lab.comparator
        if comparator == "<":
            return cls(None, value, high_open=True)
        if comparator == "<=":
            return cls(None, value)
        if comparator == ">":
            return cls(value, None, low_open=True)
        if comparator == ">=":
            return cls(value, None)
        return cls(value, value)

    def below(self, threshold: Decimal) -> bool | None:
        """Is the value < threshold? None when the reading allows both answers."""
        if self.high is not None and (self.high < threshold or (self.high == threshold and self.high_open)):
            return True
        if self.low is not None and self.low >= threshold:
            return False
        return None

    def above(self, threshold: Decimal) -> bool | None:
        """Is the value > threshold? None when the reading allows both answers."""
        if self.low is not None and (self.low > threshold or (self.low == threshold and self.low_open)):
            return True
        if self.high is not None and self.high <= threshold:
            return False
        return None

    def at_least(self, threshold: Decimal) -> bool | None:
        below = self.below(threshold)
        return None if below is None else not below

    @property
    def exact(self) -> Decimal | None:
        return self.low if self.low is not None and self.low == self.high else None


def below(lab: LabResult, threshold: Decimal) -> bool | None:
    """Is the lab's value < threshold (decided by its bound, else None)?"""
    return Reading.from_lab(lab).below(threshold)


def corrected_calcium_reading(calcium: LabResult, albumin: LabResult | None) -> Reading:
    """Ca + 0.8 × (4.0 − albumin), as an interval when either is a bound."""
    calcium_reading = Reading.from_lab(calcium)
    if albumin is None:
        return calcium_reading
    alb = Reading.from_lab(albumin)

    def shifted(value: Decimal | None, albumin_value: Decimal | None) -> Decimal | None:
        if value is None or albumin_value is None:
            return None
        return value + _CA_ALBUMIN_FACTOR * (_NORMAL_ALBUMIN_G_DL - albumin_value)

    # Albumin enters with a negative sign: the lowest corrected value pairs low calcium with high albumin.
    return Reading(
        shifted(calcium_reading.low, alb.high),
        shifted(calcium_reading.high, alb.low),
        low_open=calcium_reading.low_open or alb.high_open,
        high_open=calcium_reading.high_open or alb.low_open,
    )


@one_step_init
@dataclass(frozen=True)
class LabStatus:
    egfr: LabResult | None
    calcium: LabResult | None
    corrected_calcium: Decimal | None  # mg/dL; equals calcium when no albumin is on record; None: a bound
    calcium_corrected_with_albumin: bool
    calcium_high: bool
    calcium_low: bool
    albumin: LabResult | None
    alp: LabResult | None
    alp_high: bool
    vitamin_d: LabResult | None
    vitamin_d_low: bool
    # Three-valued gates (None: the bound cannot decide; the input then counts as missing).
    egfr_below_gate: bool | None = None
    egfr_follow_on: LabResult | None = None  # the eGFR when its follow-on band (§7) is decided
    corrected_calcium_shown: str = ""  # e.g. "9.6" or "<8.0" (mg/dL), for reasons
    undecided: tuple[str, ...] = ()  # missing codes of gates a bound or an unreadable value left open
    notes: tuple[str, ...] = ()  # caveats (unreadable values, undecided caveat-only gates)


def latest(labs: tuple[LabResult, ...], kind: str, as_of: date, months: int) -> LabResult | None:
    """The latest result of `kind` in the window; a readable one wins a tie on the same date."""
    since = add_months(as_of, -months)
    found = [lab for lab in labs if lab.kind == kind and since <= lab.date <= as_of]
    return max(found, key=lambda lab: (lab.date, lab.readable)) if found else None


def _bounds(lab: LabResult, kind: str, knowledge: Knowledge) -> tuple[Decimal | None, Decimal]:
    default = knowledge.model.lab_defaults[kind]  # type: ignore[index]
    low = lab.ref_low if lab.ref_low is not None else default.low
    high = lab.ref_high if lab.ref_high is not None else default.high
    return low, high


class _Assessor:
    def __init__(self, labs: tuple[LabResult, ...], as_of: date, knowledge: Knowledge) -> None:
        self.labs, self.as_of, self.knowledge = labs, as_of, knowledge
        self.undecided: list[str] = []
        self.notes: list[str] = []

    def latest_readable(self, kind: str, label: str) -> LabResult | None:
        """The latest result; an unreadable latest one is reported and makes the input missing."""
        found = latest(self.labs, kind, self.as_of, self.knowledge.windows.lab_lookback_months)
        if found is not None and not found.readable:
            self.notes.append(f"{label} reported as '{found.text}': not readable")
            return None
        return found

    def undecided_gate(self, code: str | None, note: str) -> None:
        if code is not None and code not in self.undecided:
            self.undecided.append(code)
        self.notes.append(note)


def assess_labs(labs: tuple[LabResult, ...], as_of: date, knowledge: Knowledge) -> LabStatus:
    thresholds = knowledge.thresholds
    run = _Assessor(labs, as_of, knowledge)
    egfr = run.latest_readable("egfr", "eGFR")
    calcium = run.latest_readable("calcium", "calcium")
    albumin = run.latest_readable("albumin", "albumin")
    alp = run.latest_readable("alkaline_phosphatase", "alkaline phosphatase")
    vitamin_d = run.latest_readable("vitamin_d_25oh", "25-OH vitamin D")

    egfr_below_gate: bool | None = None
    egfr_follow_on: LabResult | None = None
    if egfr is not None:
        reading = Reading.from_lab(egfr)
        egfr_below_gate = reading.below(thresholds.egfr_renal_gate)
        band_decided = egfr_below_gate is True or (
            egfr_below_gate is False and reading.below(thresholds.egfr_follow_on_bisphosphonate) is not None
        )
        egfr_follow_on = egfr if band_decided else None
        if egfr_below_gate is None:
            run.undecided_gate("egfr", knowledge.line("egfr_gate_undecided_note", egfr=egfr.shown))
        elif not band_decided:
            run.undecided_gate("egfr", knowledge.line("egfr_band_undecided_note", egfr=egfr.shown))

    corrected: Decimal | None = None
    shown = ""
    high = low = False
    if calcium is not None:
        reading = corrected_calcium_reading(calcium, albumin)
        corrected = reading.exact
        shown = _shown_reading(reading)
        ca_low, ca_high = _bounds(calcium, "calcium", knowledge)
        above = reading.above(ca_high)
        under = reading.below(ca_low) if ca_low is not None else False
        high, low = above is True, under is True
        if above is None or under is None:
            run.undecided_gate(
                "calcium",
                f"corrected calcium {shown}{'' if shown == NOT_DETERMINABLE else ' mg/dL'}: "
                "cannot decide whether within range",
            )

    alp_high = False
    if alp is not None:
        alp_above = Reading.from_lab(alp).above(_bounds(alp, "alkaline_phosphatase", knowledge)[1])
        alp_high = alp_above is True
        if alp_above is None:
            run.undecided_gate(
                "alkaline_phosphatase", f"alkaline phosphatase {alp.shown}: cannot decide whether above range"
            )

    vitamin_d_low = False
    if vitamin_d is not None:
        vd_below = Reading.from_lab(vitamin_d).below(thresholds.vitamin_d_low_ng_ml)
        vitamin_d_low = vd_below is True
        if vd_below is None:
            run.undecided_gate(None, knowledge.line("vitamin_d_undecided_note", vitamin_d=vitamin_d.shown))
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
        egfr_below_gate=egfr_below_gate,
        egfr_follow_on=egfr_follow_on,
        corrected_calcium_shown=shown,
        undecided=tuple(run.undecided),
        notes=tuple(run.notes),
    )


def _shown_reading(reading: Reading) -> str:
    exact = reading.exact
    if exact is not None:
        return str(exact)
    if reading.low is None and reading.high is not None:
        return f"{'<' if reading.high_open else '<='}{reading.high}"
    if reading.high is None and reading.low is not None:
        return f"{'>' if reading.low_open else '>='}{reading.low}"
    if reading.low is None and reading.high is None:  # bounds in opposite senses: nothing is known
        return NOT_DETERMINABLE
    return f"{reading.low}–{reading.high}"
