"""Observations -> BMD results, FRAX probabilities and labs; DXA reports without discrete values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from cds_service.facts.extract_common import (
    Caveats,
    Coding3,
    PerCall,
    calendar_date,
    codings,
    effective_date,
    round_2,
    units_of,
)
from cds_service.facts.extract_dxa import from_display, scanner_of, site_and_side, unit_accepted
from cds_service.facts.observation_kinds import BMD_KINDS, FRAX_KINDS, WANTED_KINDS, lab_factor
from cds_service.facts.observation_values import (
    MAX_MAGNITUDE,
    Implausible,
    Measured,
    ObservedValue,
    Unreadable,
    observed_value,
)
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.patient_record import LAB_LABELS, BmdResult, FraxResult, LabKind, LabResult, ScannerId
from cds_service.knowledge.code_tables import ObservationCode
from cds_service.knowledge.indexed import Knowledge

_ONE = Decimal(1)
_ZERO = Decimal(0)
_CANONICAL_UNIT = {
    "egfr": "mL/min/{1.73_m2}",
    "calcium": "mg/dL",
    "albumin": "g/dL",
    "alkaline_phosphatase": "U/L",
    "vitamin_d_25oh": "ng/mL",
    "pth": "pg/mL",
}
_MAX_UNIT_SHOWN = 24
# Plausible ranges (protocol §3c); a value outside is ignored with a caveat naming it. FRAX is a
# probability in %, and no lab concentration is negative (our reading, recorded in `interpretations`).
_T_SCORE_RANGE = (Decimal(-8), Decimal(8))
_BMD_MAX = Decimal(3)
_EGFR_RANGE = (Decimal(0), Decimal(250))
_FRAX_RANGE = (Decimal(0), Decimal(100))
_KIND_LABELS = {"t_score": "T-score", "bmd": "BMD (g/cm²)", "frax_mof": "FRAX MOF", "frax_hip": "FRAX hip"}
_SCANNER_RANK = {"identifier": 2, "display": 1}


@dataclass(frozen=True)
class ObservationFacts:
    bmd: tuple[BmdResult, ...]
    frax: tuple[FraxResult, ...]
    labs: tuple[LabResult, ...]
    dxa_reports_without_values: tuple[date, ...]


class _Measurement(NamedTuple):
    """The observation itself or one of its components: a coded value with its own range."""

    entry: ObservationCode
    code: Any
    coded: list[Coding3]  # codings(code)
    value: ObservedValue
    reference_range: Any

    @property
    def label(self) -> str:
        kind = self.entry.kind
        return _KIND_LABELS.get(kind) or LAB_LABELS.get(kind, kind)


class _Context(NamedTuple):
    resource_id: str
    day: date | None
    body_site: Any
    observation: Any


class _Collector:
    def __init__(self, parsed: ParsedResources, knowledge: Knowledge, caveats: Caveats) -> None:
        self.parsed = parsed
        self.knowledge = knowledge
        self.caveats = caveats
        self.bmd: list[BmdResult] = []
        self.frax: list[FraxResult] = []
        self.labs: list[LabResult] = []
        self._scanners: dict[int, ScannerId | None] = {}
        self._display_scanners: PerCall[ScannerId] = PerCall(from_display)

    def observation(self, observation: Any) -> None:
        context = _Context(
            observation.id or "", effective_date(observation), observation.bodySite, observation
        )
        for measurement in _measurements(observation, self.knowledge):
            kind = measurement.entry.kind
            if kind in BMD_KINDS:
                self._bmd(measurement, context)
            elif kind in FRAX_KINDS:
                self._frax(measurement, context)
            else:
                self._lab(measurement, context)

    def _scanner(self, observation: Any) -> ScannerId | None:
        key = id(observation)
        if key not in self._scanners:
            self._scanners[key] = scanner_of(observation, self.parsed, self._display_scanners)
        return self._scanners[key]

    def _readable(self, measurement: _Measurement) -> Measured | None:
        """The measured value, or None after reporting an unreadable or implausible one."""
        value = measurement.value
        if isinstance(value, Unreadable):
            self.caveats.add(f"{measurement.label} reported as '{value.text}': not readable")
            return None
        if isinstance(value, Implausible):
            self.caveats.add(f"ignored implausible {measurement.label} value {value.text}")
            return None
        return value

    def _implausible(self, measurement: _Measurement, measured: Measured) -> bool:
        if _plausible(measurement.entry.kind, measured.value):
            return False
        shown = f"{measured.comparator or ''}{measured.value}"
        self.caveats.add(f"ignored implausible {measurement.label} value {shown}")
        return True

    def _bound_not_used(self, measurement: _Measurement, measured: Measured) -> bool:
        """A DXA or FRAX value given only as a bound is not a measurement the protocol can use."""
        if measured.comparator is None:
            return False
        shown = f"{measured.comparator}{measured.value}"
        self.caveats.add(f"{measurement.label} reported as '{shown}': a bound, not used")
        return True

    def _bmd(self, measurement: _Measurement, context: _Context) -> None:
        measured = self._readable(measurement)
        if measured is None:
            return
        value = measured.value
        kind = measurement.entry.kind
        units = measured.units
        if not unit_accepted(kind, units):
            self.caveats.add(f"ignored DXA value with unit {_shown_unit(units)}")
            return
        if self._bound_not_used(measurement, measured) or self._implausible(measurement, measured):
            return
        if context.day is None:
            self.caveats.add("ignored DXA value without a date")
            return
        site, side = site_and_side(
            measurement.entry.site,
            measurement.entry.side,
            measurement.code,
            context.body_site,
            self.knowledge,
            coded=measurement.coded,
        )
        if site == "unknown":
            label = "T-score" if kind == "t_score" else "BMD (g/cm²)"
            self.caveats.add(f"{label} site could not be determined (counts for diagnosis only)")
        self.bmd.append(
            BmdResult(
                date=context.day,
                site=site,
                side=side,
                kind="t_score" if kind == "t_score" else "bmd",
                value=value,
                scanner=self._scanner(context.observation),
                resource_id=context.resource_id,
            )
        )

    def _frax(self, measurement: _Measurement, context: _Context) -> None:
        measured = self._readable(measurement)
        if measured is None:
            return
        value, units = measured.value, measured.units
        if units and "%" not in units:
            self.caveats.add(f"ignored FRAX value with unit {_shown_unit(units)}")
            return
        if self._bound_not_used(measurement, measured) or self._implausible(measurement, measured):
            return
        if context.day is None:
            self.caveats.add("ignored FRAX value without a date")
            return
        self.frax.append(
            FraxResult(
                date=context.day, kind="mof" if measurement.entry.kind == "frax_mof" else "hip", value=value
            )
        )

    def _lab(self, measurement: _Measurement, context: _Context) -> None:
        kind: LabKind = measurement.entry.kind  # type: ignore[assignment]
        if isinstance(measurement.value, Unreadable):
            self._unreadable_lab(kind, measurement.value, context)
            return
        measured = self._readable(measurement)
        if measured is None:
            return
        value, units = measured.value, measured.units
        factor = lab_factor(kind, units)
        if factor is None:
            self.caveats.add(f"ignored {LAB_LABELS[kind]} value with unit {_shown_unit(units)}")
            return
        if self._implausible(measurement, measured):
            return
        if context.day is None:
            self.caveats.add(f"ignored {LAB_LABELS[kind]} value without a date")
            return
        low, high = _reference_bounds(kind, measurement.reference_range, factor)
        self.labs.append(
            LabResult(
                kind=kind,
                date=context.day,
                value=_convert(value, factor),
                unit=_CANONICAL_UNIT[kind],
                ref_low=low,
                ref_high=high,
                resource_id=context.resource_id,
                comparator=measured.comparator,
            )
        )

    def _unreadable_lab(self, kind: LabKind, value: Unreadable, context: _Context) -> None:
        """Kept as an unreadable result: when it is the latest, the lab counts as missing (§3c)."""
        if context.day is None:
            self.caveats.add(f"{LAB_LABELS[kind]} reported as '{value.text}': not readable")
            return
        self.labs.append(
            LabResult(
                kind=kind,
                date=context.day,
                value=Decimal(0),
                unit=_CANONICAL_UNIT[kind],
                ref_low=None,
                ref_high=None,
                resource_id=context.resource_id,
                readable=False,
                text=value.text,
            )
        )


def extract_observations(parsed: ParsedResources, knowledge: Knowledge, caveats: Caveats) -> ObservationFacts:
    collector = _Collector(parsed, knowledge, caveats)
    for observation in parsed.observations:
        collector.observation(observation)
    bmd = _without_duplicates(collector.bmd)
    return ObservationFacts(
        bmd=bmd,
        frax=tuple(collector.frax),
        labs=tuple(collector.labs),
        dxa_reports_without_values=_reports_without_values(parsed, bmd),
    )


def _measurements(observation: Any, knowledge: Knowledge) -> Iterator[_Measurement]:
    """The observation's own value, then every component, each with its first wanted table entry."""
    parts = [observation]
    if observation.component:
        parts.extend(c for c in observation.component if c.code is not None)
    for part in parts:
        coded = codings(part.code)
        entry = _table_entry(coded, knowledge)
        if entry is None:
            continue
        value = observed_value(part.valueQuantity, part.valueString)
        if value is not None:
            yield _Measurement(entry, part.code, coded, value, part.referenceRange)


def _plausible(kind: str, value: Decimal) -> bool:
    if kind == "t_score":
        return _T_SCORE_RANGE[0] <= value <= _T_SCORE_RANGE[1]
    if kind == "bmd":
        return _ZERO < value <= _BMD_MAX
    if kind == "egfr":
        return _EGFR_RANGE[0] <= value <= _EGFR_RANGE[1]
    if kind in FRAX_KINDS:
        return _FRAX_RANGE[0] <= value <= _FRAX_RANGE[1]
    return value >= 0


def _without_duplicates(results: list[BmdResult]) -> tuple[BmdResult, ...]:
    """One result per measurement (date, site, side, kind, value) (protocol §3c Duplicates).

    An interface copy and a transcribed copy of the same value are one measurement: the copy with the
    strongest scanner identity (identifier, then display, then none) is kept, so a copy without a
    device never forms a scan of its own nor a scanner change.
    """
    best: dict[tuple[Any, ...], BmdResult] = {}
    for result in results:
        key = (result.date, result.site, result.side, result.kind, result.value)
        kept = best.get(key)
        if kept is None or _scanner_rank(result) > _scanner_rank(kept):
            best[key] = result
    return tuple(best.values())


def _scanner_rank(result: BmdResult) -> int:
    return _SCANNER_RANK[result.scanner.kind] if result.scanner is not None else 0


def _table_entry(coded: list[Coding3], knowledge: Knowledge) -> ObservationCode | None:
    for system, value, _ in coded:
        for entry in knowledge.observation_codes(system, value):
            if entry.kind in WANTED_KINDS:
                return entry
    return None


def _shown_unit(units: list[str]) -> str:
    return units[0][:_MAX_UNIT_SHOWN] if units else "(none)"


def _convert(value: Decimal, factor: tuple[Decimal, Decimal]) -> Decimal:
    multiplier, divisor = factor
    if multiplier == _ONE and divisor == _ONE:
        return value
    return round_2(value * multiplier / divisor)


def _reference_bounds(
    kind: LabKind, ranges: Any, value_factor: tuple[Decimal, Decimal]
) -> tuple[Decimal | None, Decimal | None]:
    """Low and high of the first referenceRange that has either, converted like the value."""
    for reference_range in ranges or ():
        if reference_range.low is None and reference_range.high is None:
            continue
        return (
            _bound(kind, reference_range.low, value_factor),
            _bound(kind, reference_range.high, value_factor),
        )
    return None, None


def _bound(kind: LabKind, quantity: Any, value_factor: tuple[Decimal, Decimal]) -> Decimal | None:
    value = getattr(quantity, "value", None)
    if not isinstance(value, Decimal) or not value.is_finite() or abs(value) > MAX_MAGNITUDE:
        return None  # an absurd range limit is no limit: the configured default applies
    units = units_of(quantity)
    factor = lab_factor(kind, units) if units else value_factor
    return _convert(value, factor) if factor is not None else None


def _reports_without_values(parsed: ParsedResources, bmd: tuple[BmdResult, ...]) -> tuple[date, ...]:
    """Dates of DXA DiagnosticReports with no BMD result on the same date (a document only)."""
    measured = {result.date for result in bmd}
    dates: set[date] = set()
    for report in parsed.diagnostic_reports:
        day = effective_date(report) or calendar_date(report.issued)
        if day is not None and day not in measured:
            dates.add(day)
    return tuple(sorted(dates))
