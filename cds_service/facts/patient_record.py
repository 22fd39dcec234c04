"""Typed, frozen clinical facts: what the protocol reads, extracted from FHIR by `extract.py`.

No FHIR, no HTTP, no clock here. Dates are calendar dates as written in the record (protocol §3b);
numbers are `Decimal` so that rounding at the protocol's boundaries is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from cds_service.core.frozen_init import one_step_init
from cds_service.knowledge.schema import FractureSiteName

Sex = Literal["female", "male", "other", "unknown"]
# Deciding and diagnostic DXA sites. `unknown` = site could not be determined (counts for R5 only).
BmdSite = Literal["total_hip", "femoral_neck", "lumbar_spine", "radius", "other", "unknown"]
Side = Literal["left", "right"]
BmdKind = Literal["t_score", "bmd"]
MedicationSource = Literal["administration", "dispense", "statement", "request"]
MedicationRole = Literal["first_line", "anabolic", "oncology_dose", "other_bone_agent", "supplement"]
StrengthClass = Literal["osteoporosis", "oncology", "unknown"]
LabKind = Literal["egfr", "calcium", "albumin", "alkaline_phosphatase", "vitamin_d_25oh", "pth"]
# How cards and caveats name each lab.
LAB_LABELS: dict[str, str] = {
    "egfr": "eGFR",
    "calcium": "calcium",
    "albumin": "albumin",
    "alkaline_phosphatase": "alkaline phosphatase",
    "vitamin_d_25oh": "25-OH vitamin D",
    "pth": "PTH",
}
# Data categories an EHR may not provide (the published prefetch keys) and how caveats name them.
UNAVAILABLE_LABELS: dict[str, str] = {
    "patient": "Patient record",
    "dxa": "DXA results",
    "labs": "lab results",
    "conditions": "conditions",
    "procedures": "procedures",
    "allergies": "allergies",
    "medicationStatements": "medication statements",
    "medicationRequests": "medication orders",
    "medicationAdministrations": "medication administrations",
    "medicationDispenses": "medication dispenses",
}
MEDICATION_CATEGORIES = frozenset(
    {"medicationStatements", "medicationRequests", "medicationAdministrations", "medicationDispenses"}
)
# One list of fracture sites: the knowledge file's fracture-site rules are validated against the same one.
FractureSite = FractureSiteName


@one_step_init
@dataclass(frozen=True)
class Demographics:
    birth_date: date | None
    sex: Sex
    deceased: bool


@one_step_init
@dataclass(frozen=True)
class ScannerId:
    """Scanner identity of a DXA result (protocol §5 Scanner).

    `kind` is `identifier` (device identifier or serial number: strong) or `display` (normalised
    display text: same display means same scanner only when no identifier exists on either side).
    """

    kind: Literal["identifier", "display"]
    value: str
    label: str  # human-readable, already free of PHI (device display or identifier), shown on the card


@one_step_init
@dataclass(frozen=True)
class BmdResult:
    """One DXA value (T-score or g/cm²) at one site and side on one date."""

    date: date
    site: BmdSite
    side: Side | None
    kind: BmdKind
    value: Decimal
    scanner: ScannerId | None
    resource_id: str


@one_step_init
@dataclass(frozen=True)
class FraxResult:
    date: date
    kind: Literal["mof", "hip"]
    value: Decimal  # percent


@one_step_init
@dataclass(frozen=True)
class MedicationRecord:
    """One medication resource about a bone-relevant drug, normalised.

    Coverage is NOT computed here (it depends on `as_of`): `exposure.py` does that from these fields.
    """

    agent: str  # ingredient key: alendronate, risedronate, ibandronate, zoledronic_acid, denosumab,
    # teriparatide, abaloparatide, romosozumab, raloxifene, calcium, vitamin_d
    role: MedicationRole
    source: MedicationSource
    status: str
    resource_id: str
    # The single date of the record: administration effective date, dispense whenHandedOver,
    # statement effectiveDateTime, request authoredOn.
    event_date: date | None = None
    # Statement effectivePeriod / request validityPeriod (end = last covered day, inclusive).
    period_start: date | None = None
    period_end: date | None = None
    days_supply: int | None = None  # dispense daysSupply, or request expectedSupplyDuration in days
    quantity: Decimal | None = None  # dispense quantity (units dispensed)
    repeats: int = 0  # request numberOfRepeatsAllowed
    intent: str | None = None  # MedicationRequest.intent
    interval_days: int | None = None  # dosing interval (timing, else the product default)
    interval_months: int | None = None  # romosozumab: 1 month per dose date
    strength: StrengthClass = "osteoporosis"
    dose_text: str = ""  # e.g. "70 mg weekly" (from code/display/text), for the evidence
    per_pen: bool = False  # teriparatide/abaloparatide pen: one dispensed unit covers a pen's days
    matched_by_name: bool = False  # identified by ingredient name in text/display only
    label: str = ""  # display text of the medication (escaped later by the card renderer)


@one_step_init
@dataclass(frozen=True)
class ClinicalFinding:
    """A Condition, Procedure or AllergyIntolerance mapped to protocol concepts."""

    resource_type: Literal["Condition", "Procedure", "AllergyIntolerance"]
    resource_id: str
    concepts: frozenset[str]  # code-table concepts (e.g. myocardial_infarction, vertebral_fracture)
    codes: tuple[tuple[str, str], ...]  # (system, code)
    label: str  # display/text for the evidence
    onset: date | None  # onset (Condition) or performed date (Procedure); never recordedDate
    recorded: date | None
    clinical_status: str | None  # active, recurrence, relapse, inactive, remission, resolved
    is_cancer: bool = False  # ICD-10 C00–C96 or SNOMED malignant neoplasm
    fracture_site: FractureSite | None = None
    fracture_initial: bool | None = None  # ICD-10-CM 7th character A/B/C; None = not stated
    fracture_osteoporotic: bool = False  # coded as osteoporotic
    vertebral_level: str | None = None  # e.g. "L1" when named
    allergy_agents: frozenset[str] = frozenset()  # agents this allergy is to


@one_step_init
@dataclass(frozen=True)
class LabResult:
    kind: LabKind
    date: date
    value: Decimal  # converted to the canonical unit (calcium mg/dL, albumin g/dL, vitamin D ng/mL)
    unit: str
    ref_low: Decimal | None  # from referenceRange, converted; None = use the configured default
    ref_high: Decimal | None
    resource_id: str
    # A bound, not an exact value (valueQuantity.comparator or "<15" as a string, protocol §3c):
    # the true value is `comparator value`. Rules decide only when the bound decides.
    comparator: Literal["<", "<=", ">", ">="] | None = None
    # False: a string that is not a number (`text`); the latest result of its kind is then missing.
    readable: bool = True
    text: str = ""

    @property
    def shown(self) -> str:
        """The value as reported: `<15`, `62`, or the unreadable text in quotes."""
        if not self.readable:
            return f"'{self.text}'"
        return f"{self.comparator or ''}{self.value}"


@one_step_init
@dataclass(frozen=True)
class PatientRecord:
    """Everything the protocol reads for one patient."""

    demographics: Demographics | None  # None: no Patient resource
    bmd: tuple[BmdResult, ...] = ()
    frax: tuple[FraxResult, ...] = ()
    medications: tuple[MedicationRecord, ...] = ()
    # True when any medication resource (of any drug) exists: distinguishes R6's two outcomes.
    any_medication_resource: bool = False
    findings: tuple[ClinicalFinding, ...] = ()
    labs: tuple[LabResult, ...] = ()
    unreadable: tuple[tuple[str, int], ...] = ()  # (resource type, count) dropped by validation
    # Data categories (UNAVAILABLE_LABELS keys) this EHR could not provide: unknown, never "none" (§3a gap).
    unavailable: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()  # extraction caveats (ignored units, undetermined sites, ...)
    dxa_reports_without_values: tuple[date, ...] = field(default=())  # DXA only as a document
