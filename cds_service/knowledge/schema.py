"""The knowledge file's schema: every section, key and value the service reads, validated strictly.

An unknown key is refused with the nearest valid one (`KnowledgeError`); the names of agents, sites,
outcomes, labs and card placeholders that code reads are listed here, once.
"""

from __future__ import annotations

import difflib
import re
import string
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cds_service.knowledge.texts import Texts

PACKAGED_DIR = Path(__file__).resolve().parent
PACKAGED_FILE = PACKAGED_DIR / "osteoporosis.yaml"

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD_SYSTEMS = frozenset({ICD10, ICD10CM})


class KnowledgeError(ValueError):
    """The knowledge file is missing or invalid; the message is one line."""


# Agents whose exposure the protocol computes (dosing intervals are read only for these).
FIRST_LINE_AGENTS = ("alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab")
ANABOLIC_AGENTS = ("romosozumab", "teriparatide", "abaloparatide")
EXPOSURE_AGENTS = FIRST_LINE_AGENTS + ANABOLIC_AGENTS
PEN_AGENTS = ("teriparatide", "abaloparatide")
# Agents whose strength separates oncology from osteoporosis use (protocol §4).
STRENGTH_DEPENDENT_AGENTS = ("denosumab", "zoledronic_acid")
FractureSiteName = Literal[
    "hip_femur",
    "vertebra",
    "forearm",
    "humerus",
    "pelvis",
    "rib",
    "clavicle",
    "tibia_ankle",
    "shoulder",  # osteoporotic (M80) codes only
    "unspecified",  # osteoporotic (M80) codes only
    "other",
]
# Labs whose default reference range a rule reads, with their canonical unit (the unit values are
# converted to, so the unit of the default range) and the bounds read: calcium both (R9a high, R9c low),
# alkaline phosphatase the upper one (R9b). No rule reads an albumin range.
LAB_UNITS = {"calcium": "mg/dL", "alkaline_phosphatase": "U/L"}
LAB_BOUNDS_READ = {"calcium": ("low", "high"), "alkaline_phosphatase": ("high",)}
FOLLOW_ON_KINDS = {
    "alendronate": "bisphosphonate",
    "risedronate": "bisphosphonate",
    "ibandronate": "bisphosphonate",
    "zoledronic_acid": "bisphosphonate",
    "denosumab": "denosumab",
}


def nearest(key: str, valid: Any) -> str:
    """The valid name closest to `key` (for one-line start-up errors)."""
    names = sorted(str(v) for v in valid)
    found = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
    return found[0] if found else "(none)"


def unknown_key_error(where: str, key: str, valid: Any) -> KnowledgeError:
    return KnowledgeError(
        f"{where}: unknown key {key!r} is read by nothing (nearest valid: {nearest(key, valid)!r})"
    )


def placeholders(text: str) -> list[str]:
    """`{name}` placeholders of a card text (`{{`/`}}` are literal braces)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise KnowledgeError(
            f"card text {text[:40]!r}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    min_age_years: int
    t_score_osteoporosis: Decimal
    t_score_low_bone_mass: Decimal
    frax_mof_high_risk: Decimal
    frax_hip_high_risk: Decimal
    target_delta_t_total_hip: Decimal
    target_delta_t_lumbar_spine: Decimal
    target_pct_total_hip: Decimal
    target_pct_lumbar_spine: Decimal
    personalised_target_t: Decimal
    personalised_target_t_after_fracture: Decimal
    egfr_renal_gate: Decimal
    egfr_follow_on_bisphosphonate: Decimal
    vitamin_d_low_ng_ml: Decimal
    coverage_ratio_min: Decimal = Field(gt=0, le=1)
    aace_t_score: Decimal
    aace_frax_mof: Decimal
    aace_frax_hip: Decimal


class Windows(_Strict):
    therapy_min_months: int = Field(ge=1)
    baseline_before_start_months: int = Field(ge=0)
    baseline_after_start_months: int = Field(ge=0)
    followup_max_age_months: int = Field(ge=1)
    lab_lookback_months: int = Field(ge=1)
    recent_fracture_months: int = Field(ge=1)
    distinct_vertebral_days: int = Field(ge=0)
    cv_event_exclusion_months: int = Field(ge=1)
    episode_gap_months: int = Field(ge=1)
    adherence_gap_days: int = Field(ge=1)
    denosumab_max_interval_days: int = Field(ge=1)
    denosumab_overdue_max_months: int = Field(ge=1)
    holiday_bisphosphonate_months: int = Field(ge=1)
    pth_allowance_days: int = Field(ge=1)
    abaloparatide_allowance_days: int = Field(ge=1)
    on_anabolic_card_days: int = Field(ge=0)
    follow_on_missing_months: int = Field(ge=1)
    dialysis_lookback_days: int = Field(ge=1)
    alp_fracture_months: int = Field(ge=0)
    prior_denosumab_min_days: int = Field(ge=1)
    denosumab_tail_days: int = Field(ge=1)
    pth_caution_denosumab_months: int = Field(ge=1)
    denosumab_transition_months: int = Field(ge=1)


class Policy(_Strict):
    romosozumab_prior_cv_event: Literal["caution", "exclude"]
    romosozumab_in_men: Literal["exclude", "allow"]
    abaloparatide_in_men: Literal["exclude", "allow"]
    response_met_card: bool
    duration_card: bool


class LabDefault(_Strict):
    low: Decimal | None = None  # calcium only: R9c reads the lower bound of calcium alone
    high: Decimal
    unit: str  # must be the lab's canonical unit (LAB_UNITS): checked at load


class Dosing(_Strict):
    """Dosing interval of an agent: days (by strength, else the default), or months per dose (romosozumab,
    whose coverage is counted in calendar months): exactly one of `default_days` and `months_per_dose`."""

    default_days: int | None = Field(None, ge=1)
    by_strength_mg: dict[str, int] = Field(default_factory=dict)
    months_per_dose: int | None = Field(None, ge=1)
    pen_days: int | None = None

    @model_validator(mode="after")
    def _one_interval(self) -> Dosing:
        if (self.default_days is None) == (self.months_per_dose is None):
            raise ValueError(
                "give exactly one of default_days and months_per_dose (a monthly agent's coverage is "
                "counted in months; default_days would be read by nothing)"
            )
        return self


class CodeAddition(_Strict):
    """Codes added beyond the tables, each group with its cited source (protocol §2).

    Either one full `row` (the table's columns), or a group of condition `codes` (pairs of code and
    display as the source spells them) that share `system`, `concept` and `source`.
    """

    table: Literal["conditions", "medications", "observations"]
    source: str = Field(min_length=5)
    row: dict[str, str] | None = None
    system: str | None = None
    concept: str | None = None
    codes: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> CodeAddition:
        grouped = self.system is not None or self.concept is not None or bool(self.codes)
        if (self.row is None) == (not grouped):
            raise ValueError("give either `row`, or `system` + `concept` + `codes`")
        if grouped and (self.table != "conditions" or not self.system or not self.concept or not self.codes):
            raise ValueError("grouped codes need table conditions, `system`, `concept` and `codes`")
        return self

    def rows(self) -> list[dict[str, str]]:
        """The table rows this addition stands for, each carrying its source."""
        if self.row is not None:
            return [{**self.row, "source": self.source}]
        return [
            {
                "system": self.system or "",
                "code": code,
                "display": display,
                "concept": self.concept or "",
                "source": self.source,
            }
            for code, display in self.codes
        ]


class ConceptGap(_Strict):
    concept: str
    note: str
    checked: str | None = None  # shown on the card: what is checked for a partly covered concept


class PrefixRule(_Strict):
    """An ICD fracture-site rule: a code `prefix` or a regular-expression `pattern` (matched at the start),
    optionally for one ICD `system` only; `source` cites where the category was read."""

    site: FractureSiteName
    prefix: str | None = None
    pattern: str | None = None
    system: Literal["http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"] | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _prefix_or_pattern(self) -> PrefixRule:
        if (self.prefix is None) == (self.pattern is None):
            raise ValueError("give exactly one of `prefix` and `pattern`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"invalid pattern {self.pattern!r}: {exc}") from exc
        return self

    def matches(self, system: str, code: str) -> bool:
        if self.system is not None and self.system != system:
            return False
        if self.prefix is not None:
            return code.startswith(self.prefix)
        return re.match(self.pattern or "", code) is not None


class WordRule(_Strict):
    word: str
    site: FractureSiteName


class FractureSites(_Strict):
    icd_prefixes: list[PrefixRule]
    snomed_words: list[WordRule]
    not_counted_words: list[str]


NonEmpty = Annotated[str, Field(min_length=1, pattern=r"\S")]
AbsoluteUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+\S*$")]


class CodingSpec(_Strict):
    """A Coding shown on cards (CDS Hooks requires system, code and display)."""

    system: NonEmpty
    code: NonEmpty
    display: NonEmpty


class AgentSpec(_Strict):
    display: str
    code: CodingSpec
    regimen: str


class FollowOnSpec(_Strict):
    display: str
    kind: Literal["bisphosphonate", "denosumab"]


class CardSource(_Strict):
    label: NonEmpty
    url: AbsoluteUrl | None = None
    topic_system: NonEmpty


class SourceRef(_Strict):
    label: NonEmpty
    url: AbsoluteUrl | None = None


class BrandSpec(_Strict):
    """A brand or biosimilar name: its ingredient, the dose per unit it decides, and where it is stated."""

    brand: NonEmpty  # lower case, matched as whole words in text/display
    ingredient: NonEmpty
    strength_mg: str | None = None  # dose per unit (e.g. "60", "120"); None when it does not decide use
    source: str = Field(min_length=5)


class Interpretation(_Strict):
    topic: str
    choice: str


class KnowledgeModel(_Strict):
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: str
    code_tables: dict[Literal["conditions", "medications", "observations"], str]
    code_additions: list[CodeAddition]
    concept_gaps: list[ConceptGap]
    interpretations: list[Interpretation] = Field(default_factory=list)
    thresholds: Thresholds
    windows: Windows
    policy: Policy
    lab_defaults: dict[Literal["calcium", "alkaline_phosphatase"], LabDefault]
    dosing: dict[str, Dosing]
    oncology_strengths_mg: dict[str, list[str]]  # keys: STRENGTH_DEPENDENT_AGENTS (checked at load)
    oncology_min_interval_days: dict[str, int]
    ingredient_names: dict[str, list[str]]
    medication_brands: list[BrandSpec] = Field(default_factory=list)
    fracture_sites: FractureSites
    hyperparathyroidism_types: dict[
        Literal["primary_tertiary_familial", "renal", "secondary_non_renal", "unspecified"],
        list[tuple[str, str]],
    ]
    agents: dict[Literal["romosozumab", "teriparatide", "abaloparatide"], AgentSpec]
    follow_on_agents: dict[
        Literal["alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab"], FollowOnSpec
    ]
    override_reasons: list[CodingSpec] = Field(min_length=1)
    card_source: CardSource
    sources: list[SourceRef] = Field(min_length=1)
    texts: Texts
