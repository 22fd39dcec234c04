"""Observations -> BMD results, FRAX probabilities and labs; DXA reports without discrete values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from cds_service.clinical.extract_common import (
    Caveats,
    calendar_date,
    codings,
    effective_date,
    round_2,
    units_of,
)
from cds_service.clinical.extract_dxa import scanner_of, site_and_side, unit_accepted
from cds_service.clinical.facts import BmdResult, FraxResult, LabKind, LabResult, ScannerId
from cds_service.fhir.parse import ParsedResources
from cds_service.knowledge.loader import Knowledge, ObservationCode

_BMD_KINDS = frozenset({"t_score", "bmd"})
_FRAX_KINDS = {"frax_mof": "mof", "frax_hip": "hip"}
_LAB_KINDS: frozenset[LabKind] = frozenset(
    {"egfr", "calcium", "albumin", "alkaline_phosphatase", "vitamin_d_25oh", "pth"}
)
_WANTED_KINDS = _BMD_KINDS | set(_FRAX_KINDS) | _LAB_KINDS
_ONE = Decimal(1)
# Lab unit (lower case, spaces removed) -> (multiplier, divisor) into the canonical unit.
_LAB_CONVERSIONS: dict[str, dict[str, tuple[Decimal, Decimal]]] = {
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
_CANONICAL_UNIT = {
    "egfr": "mL/min/{1.73_m2}",
    "calcium": "mg/dL",
    "albumin": "g/dL",
    "alkaline_phosphatase": "U/L",
    "vitamin_d_25oh": "ng/mL",
    "pth": "pg/mL",
}
_LAB_LABELS = {
    "egfr": "eGFR",
    "calcium": "calcium",
    "albumin": "albumin",
    "alkaline_phosphatase": "alkaline phosphatase",
    "vitamin_d_25oh": "25-OH vitamin D",
    "pth": "PTH",
}
_MAX_UNIT_SHOWN = 24


@dataclass(frozen=True)
class ObservationFacts:
    bmd: tuple[BmdResult, ...]
    frax: tuple[FraxResult, ...]
    labs: tuple[LabResult, ...]
    dxa_reports_without_values: tuple[date, ...]


@dataclass(frozen=True)
class _Measurement:
    """The observation itself or one of its components: a coded value with its own range."""

    entry: ObservationCode
    code: Any
    quantity: Any
    reference_range: Any


@dataclass(frozen=True)
class _Context:
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

    def observation(self, observation: Any) -> None:
        context = _Context(
            observation.id or "", effective_date(observation), observation.bodySite, observation
        )
        for measurement in _measurements(observation, self.knowledge):
            kind = measurement.entry.kind
            if kind in _BMD_KINDS:
                self._bmd(measurement, context)
            elif kind in _FRAX_KINDS:
                self._frax(measurement, context)
            else:
                self._lab(measurement, context)

    def _scanner(self, observation: Any) -> ScannerId | None:
        key = id(observation)
        if key not in self._scanners:
            self._scanners[key] = scanner_of(observation, self.parsed)
        return self._scanners[key]

    def _bmd(self, measurement: _Measurement, context: _Context) -> None:
        value = _quantity_value(measurement.quantity)
        if value is None:
            return
        kind = measurement.entry.kind
        units = units_of(measurement.quantity)
        if not unit_accepted(kind, units):
            self.caveats.add(f"ignored DXA value with unit {_shown_unit(units)}")
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
        value = _quantity_value(measurement.quantity)
        if value is None:
            return
        units = units_of(measurement.quantity)
        if units and "%" not in units:
            self.caveats.add(f"ignored FRAX value with unit {_shown_unit(units)}")
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
        value = _quantity_value(measurement.quantity)
        if value is None:
            return
        kind: LabKind = measurement.entry.kind  # type: ignore[assignment]
        units = units_of(measurement.quantity)
        factor = _lab_factor(kind, units)
        if factor is None:
            self.caveats.add(f"ignored {_LAB_LABELS[kind]} value with unit {_shown_unit(units)}")
            return
        if context.day is None:
            self.caveats.add(f"ignored {_LAB_LABELS[kind]} value without a date")
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
            )
        )


def extract_observations(parsed: ParsedResources, knowledge: Knowledge, caveats: Caveats) -> ObservationFacts:
    collector = _Collector(parsed, knowledge, caveats)
    for observation in parsed.observations:
        collector.observation(observation)
    bmd = tuple(collector.bmd)
    return ObservationFacts(
        bmd=bmd,
        frax=tuple(collector.frax),
        labs=tuple(collector.labs),
        dxa_reports_without_values=_reports_without_values(parsed, bmd),
    )


def _measurements(observation: Any, knowledge: Knowledge) -> Iterator[_Measurement]:
    """The observation's own value, then every component, each with its first wanted table entry."""
    parts = [(observation.code, observation.valueQuantity, observation.referenceRange)]
    parts.extend(
        (c.code, c.valueQuantity, c.referenceRange) for c in observation.component or () if c.code is not None
    )
    for code, quantity, ranges in parts:
        entry = _table_entry(code, knowledge)
        if entry is not None and quantity is not None:
            yield _Measurement(entry, code, quantity, ranges)


def _table_entry(code: Any, knowledge: Knowledge) -> ObservationCode | None:
    for system, value, _ in codings(code):
        for entry in knowledge.observation_codes(system, value):
            if entry.kind in _WANTED_KINDS:
                return entry
    return None


def _quantity_value(quantity: Any) -> Decimal | None:
    value = getattr(quantity, "value", None)
    return value if isinstance(value, Decimal) else None


def _shown_unit(units: list[str]) -> str:
    return units[0][:_MAX_UNIT_SHOWN] if units else "(none)"


def _lab_factor(kind: LabKind, units: list[str]) -> tuple[Decimal, Decimal] | None:
    for unit in units:
        compact = unit.replace(" ", "").lower()
        if kind == "egfr":
            if compact.startswith("ml/min"):
                return _ONE, _ONE
            continue
        factor = _LAB_CONVERSIONS[kind].get(compact)
        if factor is not None:
            return factor
    return None


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
    value = _quantity_value(quantity)
    if value is None:
        return None
    units = units_of(quantity)
    factor = _lab_factor(kind, units) if units else value_factor
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
