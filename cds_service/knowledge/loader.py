"""Load and validate the knowledge file (thresholds, windows, code tables, card texts, sources).

The service refuses to start on an invalid file (`KnowledgeError`). Code tables are indexed once
here so that the hot path only does dictionary look-ups.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import re
import string
import types
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
# Card summaries the renderer reads (outcomes that have a card, R11's variant, the warnings) and the
# placeholders it fills in them.
SUMMARY_KEYS = (
    "ESCALATE",
    "CONSIDER",
    "CONSIDER_AT_TARGET",
    "RESPONSE_MET",
    "NOT_ELIGIBLE_DURATION",
    "NOT_ELIGIBLE_ADHERENCE",
    "VERY_HIGH_RISK_PATHWAY",
    "SPECIALIST_REVIEW",
    "SPECIALIST_REVIEW_R2",
    "SPECIALIST_REVIEW_R3",
    "SPECIALIST_REVIEW_R3c",
    "SPECIALIST_REVIEW_R7h",
    "SPECIALIST_REVIEW_R8",
    "SPECIALIST_REVIEW_R9a",
    "SPECIALIST_REVIEW_R13",
    "SPECIALIST_REVIEW_renal",
    "INSUFFICIENT_DATA",
    "ON_ANABOLIC",
    "ON_ANABOLIC_ENDED",
    "DENOSUMAB_OVERDUE",
    "ANABOLIC_FOLLOW_ON_MISSING",
)
# Values of the decision the renderer names for the card templates (besides every threshold and window).
CARD_PLACEHOLDERS = (
    "first_line",
    "agent",
    "agent_note",
    "sites_missed",
    "cap_reason",
    "reevaluate_from",
    "missing_list",
    "planned_end",
    "last_dose",
    "due_date",
    "course_agent",
    "course_end",
    "agent_display",
    "regimen",
    "caution",
    "target_t",
    "concepts",
    "latest_date",
    "allowance",
    "used_days",
    "remaining_days",
    "tests",
)
# The missing-input codes of protocol §9: each needs a short name and a line in `texts`.
MISSING_CODES = (
    "birth_date",
    "bmd_or_frax",
    "medication_history",
    "baseline_dxa",
    "followup_dxa",
    "total_hip_baseline",
    "total_hip_followup",
    "target_t_score",
    "egfr",
    "calcium",
    "alkaline_phosphatase",
    "unreadable_resources",
)
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


class Texts(_Strict):
    summaries: dict[str, str]
    criteria_line: str
    targets_line: str
    no_contraindication_line: str
    suggest_only_line: str
    supplements_line: str
    denosumab_overdue_detail: str
    follow_on_missing_detail: str
    suggestion_label: str
    suggestion_label_caution: str
    action_description: str
    action_description_caution: str
    personalised_target_line: str
    reevaluate_line: str
    ended_line: str
    specialist_agents_line: str
    obtain_egfr_line: str
    aace_line: str
    not_checked_line: str
    plan_transition_denosumab: str
    plan_transition_denosumab_due_passed: str
    plan_transition_denosumab_late: str
    plan_pth_after_denosumab: str
    plan_transition_oral: str
    plan_anabolic_romosozumab: str
    plan_anabolic_pth: str
    plan_follow_on: str
    before_labs: str
    before_pth: str
    before_secondary_tests: str
    monitoring_line: str
    missing_names: dict[str, str]
    missing_lines: dict[str, str]

    @field_validator("summaries")
    @classmethod
    def _summaries_short(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if len(text) >= 140:
                raise ValueError(f"summary {key} is {len(text)} characters; CDS Hooks needs < 140")
        return value

    def line(self, name: str, values: Mapping[str, str]) -> str:
        """Card text `name` with its placeholders filled from `values`."""
        return fill(getattr(self, name), values)

    def templates(self) -> Iterator[tuple[str, str]]:
        """(dotted name, template) of every card text, for start-up validation."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, dict):
                yield from ((f"{name}.{key}", text) for key, text in value.items())
            else:
                yield name, value


def fill(template: str, values: Mapping[str, str]) -> str:
    """A card template with its `{name}` placeholders filled (`{{`/`}}` are literal braces)."""
    if not placeholders(template):
        return template.replace("{{", "{").replace("}}", "}")
    return template.format_map(values)


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


_SITE_MAP: dict[str, tuple[str, str | None]] = {
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
_BODY_SITE_MAP = {
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


def plain_number(value: Decimal | int) -> str:
    """A configured number as a card writes it: `3.0` -> `3`, `0.20` stays `0.20`, `-2.5` stays."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return str(value)


def _strength_mg(ingredient: str, strength: str) -> Decimal | None:
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
def _csv_rows(path: Path, _mtime_ns: int, _size: int) -> tuple[dict[str, str], ...]:
    """Rows of a code table, read once per file version (the rows are never modified)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return tuple(csv.DictReader(handle))


class Knowledge:
    """The validated knowledge file plus indexed code tables. Immutable after construction."""

    def __init__(self, model: KnowledgeModel, digest: str, base_dir: Path) -> None:
        self.model = model
        self.protocol_version = f"{model.version}+{digest[:12]}"
        self.t = model.thresholds
        self.w = model.windows
        self.policy = model.policy
        self.texts = model.texts
        self._conditions: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._condition_display: dict[tuple[str, str], str] = {}
        self._icd_categories: dict[str, set[str]] = defaultdict(set)
        self.medications: dict[tuple[str, str], MedicationCode] = {}
        self.observations: dict[tuple[str, str], list[ObservationCode]] = defaultdict(list)
        self.body_sites: dict[tuple[str, str], str] = {}
        self.lateralities: dict[tuple[str, str], str] = {}
        self._load_tables(base_dir)
        self.hpt_type: dict[tuple[str, str], str] = {
            (system, code): kind
            for kind, pairs in model.hyperparathyroidism_types.items()
            for system, code in pairs
        }
        self.concept_gap_lines = tuple(
            f"{gap.concept}: not checked, no code list" for gap in model.concept_gaps
        )
        _check_readers(model, frozenset(m.ingredient for m in self.medications.values()))
        self.text_values: dict[str, str] = {
            name: plain_number(value)
            for section in (model.thresholds, model.windows)
            for name, value in section.model_dump().items()
        }

    def line(self, name: str) -> str:
        """A card line of `texts` with its threshold/window placeholders filled."""
        return self.texts.line(name, self.text_values)

    # ----- loading -------------------------------------------------------------------------
    def _table_rows(self, base_dir: Path, table: str) -> list[dict[str, str]]:
        rel = self.model.code_tables[table]  # type: ignore[index]
        for folder in (base_dir, PACKAGED_DIR):
            path = (folder / rel).resolve()
            if path.is_file():
                stat = path.stat()
                rows = list(_csv_rows(path, stat.st_mtime_ns, stat.st_size))
                break
        else:
            raise KnowledgeError(f"code table {table!r} not found: {rel}")
        for addition in self.model.code_additions:
            if addition.table == table:
                rows.extend(addition.rows())
        return rows

    def _load_tables(self, base_dir: Path) -> None:
        for row in self._table_rows(base_dir, "conditions"):
            key = (row["system"], row["code"])
            self._conditions[key].add(row["concept"])
            self._condition_display.setdefault(key, row["display"])
            if row["system"] in ICD_SYSTEMS and len(row["code"]) == 3:
                self._icd_categories[row["code"]].add(row["concept"])
        for row in self._table_rows(base_dir, "medications"):
            ingredient = row["ingredient"].split("/")[0]
            self.medications[(row["system"], row["code"])] = MedicationCode(
                ingredient=ingredient,
                role=row["role"],
                strength_mg=_strength_mg(ingredient, row["strength"]),
                display=row["display"],
                form=row["form_route"],
            )
        for row in self._table_rows(base_dir, "observations"):
            key = (row["system"], row["code"])
            kind = row["kind"]
            if kind == "body_site":
                mapped = _BODY_SITE_MAP.get(row["site"])
                if mapped:
                    self.body_sites[key] = mapped
                continue
            if kind == "laterality":
                self.lateralities[key] = row["site"]
                continue
            site_raw = row["site"].split(" ")[0]
            site, side = _SITE_MAP.get(site_raw, ("other", None)) if site_raw else ("", None)
            entry = ObservationCode(kind=kind, site=site, side=side)
            if entry not in self.observations[key]:
                self.observations[key].append(entry)

    # ----- look-ups ------------------------------------------------------------------------
    def condition_concepts(self, system: str, code: str) -> frozenset[str]:
        """Concepts of a coding; ICD-10 and ICD-10-CM share three-character categories (§3b)."""
        found = set(self._conditions.get((system, code), ()))
        if system in ICD_SYSTEMS:
            other = ICD10CM if system == ICD10 else ICD10
            found |= self._conditions.get((other, code), set())
            found |= self._icd_categories.get(code[:3], set())
        return frozenset(found)

    def condition_display(self, system: str, code: str) -> str | None:
        return self._condition_display.get((system, code))

    def observation_codes(self, system: str, code: str) -> list[ObservationCode]:
        return self.observations.get((system, code), [])

    def codes_of_kinds(self, kinds: frozenset[str], system: str = LOINC) -> list[tuple[str, str]]:
        """(system, code) pairs of the observation table with one of `kinds`, in table order."""
        out: list[tuple[str, str]] = []
        for (sys_, code), entries in self.observations.items():
            if sys_ == system and any(e.kind in kinds for e in entries) and (sys_, code) not in out:
                out.append((sys_, code))
        return out

    def medication_names(self) -> dict[str, str]:
        """Name (lower case, single spaces) -> agent: ingredient names and brand/biosimilar names."""
        names: dict[str, str] = {}
        for agent, words in self.model.ingredient_names.items():
            for word in words:
                names[" ".join(word.lower().split())] = agent
        for brand in self.model.medication_brands:
            names.setdefault(" ".join(brand.brand.lower().split()), brand.ingredient)
        return names

    def brands_of(self, agent: str) -> list[BrandSpec]:
        return [brand for brand in self.model.medication_brands if brand.ingredient == agent]

    def dxa_codes(self) -> list[tuple[str, str]]:
        return self.codes_of_kinds(frozenset({"t_score", "bmd", "frax_mof", "frax_hip"}))

    def lab_codes(self) -> list[tuple[str, str]]:
        return self.codes_of_kinds(
            frozenset({"egfr", "calcium", "albumin", "alkaline_phosphatase", "vitamin_d_25oh", "pth"})
        )


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X; `Annotated[X, ...]` -> X."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    return annotation


def _check_value(value: Any, annotation: Any, where: str) -> None:
    annotation = _unwrap(annotation)
    model = _model_of(annotation)
    if model is not None:
        check_keys(value, model, where)
        return
    origin = get_origin(annotation)
    if origin is dict and isinstance(value, dict):
        key_type, value_type = get_args(annotation)
        allowed = get_args(key_type) if get_origin(key_type) is Literal else None
        for key, item in value.items():
            if allowed is not None and key not in allowed:
                raise unknown_key_error(where, str(key), allowed)
            _check_value(item, value_type, f"{where}.{key}")
    elif origin is list and isinstance(value, list):
        (item_type,) = get_args(annotation)
        for index, item in enumerate(value):
            _check_value(item, item_type, f"{where}.{index}")


def check_keys(data: Any, model: type[BaseModel], where: str = "") -> None:
    """Refuse keys that no field (or no known agent, site, outcome) reads, naming the nearest valid one."""
    if not isinstance(data, dict):
        return  # pydantic reports the type error
    fields = model.model_fields
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise unknown_key_error(where or "knowledge file", str(key), fields)
        _check_value(value, fields[key].annotation, path)


def _is_mg(text: str) -> bool:
    """A dose in mg as the extractors write it ("70", "0.05"; not "70.0", "070" or "70 mg"): the
    strengths are compared as text, so any other spelling would never match."""
    return re.fullmatch(r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?", text) is not None


def _check_readers(model: KnowledgeModel, ingredients: frozenset[str]) -> None:
    """Dict-valued sections keyed by agents or outcomes: every key must be one that code reads."""
    for agent, dosing in model.dosing.items():
        if agent not in EXPOSURE_AGENTS:
            raise unknown_key_error("dosing", agent, EXPOSURE_AGENTS)
        if dosing.months_per_dose is not None and agent != "romosozumab":
            raise KnowledgeError(
                f"dosing.{agent}.months_per_dose is read by nothing: only romosozumab is dosed per month"
            )
        if dosing.pen_days is not None and agent not in PEN_AGENTS:
            raise KnowledgeError(
                f"dosing.{agent}.pen_days is read by nothing: only {', '.join(PEN_AGENTS)} have pens"
            )
        for strength in dosing.by_strength_mg:
            if not _is_mg(strength):
                raise KnowledgeError(f"dosing.{agent}.by_strength_mg: {strength!r} is not a dose in mg")
    for section in ("oncology_strengths_mg", "oncology_min_interval_days"):
        for agent in getattr(model, section):
            if agent not in STRENGTH_DEPENDENT_AGENTS:
                raise unknown_key_error(section, agent, STRENGTH_DEPENDENT_AGENTS)
    for agent, strengths in model.oncology_strengths_mg.items():
        for strength in strengths:
            if not _is_mg(strength):
                raise KnowledgeError(f"oncology_strengths_mg.{agent}: {strength!r} is not a dose in mg")
    sites = model.fracture_sites
    for index, rule in enumerate(sites.icd_prefixes):
        if rule.prefix is not None and not re.fullmatch(r"[A-Z]\d{2}(?:\.[0-9A-Z]*)?", rule.prefix):
            raise KnowledgeError(
                f"fracture_sites.icd_prefixes.{index}.prefix: {rule.prefix!r} never matches a code "
                "(codes are compared upper case with the dot after the category, e.g. 'S72', 'M80.05')"
            )
    words = [(f"snomed_words.{i}.word", r.word) for i, r in enumerate(sites.snomed_words)]
    words += [(f"not_counted_words.{i}", w) for i, w in enumerate(sites.not_counted_words)]
    for where, word in words:
        if word != word.lower() or not word.strip():
            raise KnowledgeError(
                f"fracture_sites.{where}: {word!r} never matches (displays are compared lower case)"
            )
    absent = [agent for agent in EXPOSURE_AGENTS if agent not in model.dosing]
    if absent:
        raise KnowledgeError(f"dosing: no entry for {', '.join(absent)} (its dosing interval is needed)")
    for agent in model.ingredient_names:
        if agent not in ingredients:
            raise unknown_key_error("ingredient_names", agent, ingredients)
    _check_texts(model.texts)
    for agent, spec in model.follow_on_agents.items():
        if spec.kind != FOLLOW_ON_KINDS[agent]:
            raise KnowledgeError(
                f"follow_on_agents.{agent}.kind: {agent} is a {FOLLOW_ON_KINDS[agent]}, not a {spec.kind}"
            )
    for lab, default in model.lab_defaults.items():
        if default.low is not None and "low" not in LAB_BOUNDS_READ[lab]:
            raise KnowledgeError(
                f"lab_defaults.{lab}.low is read by nothing: only the upper bound is checked"
            )
        if default.low is None and "low" in LAB_BOUNDS_READ[lab]:
            raise KnowledgeError(f"lab_defaults.{lab}.low: missing (the lower bound is checked)")
        if default.unit != LAB_UNITS[lab]:
            raise KnowledgeError(
                f"lab_defaults.{lab}.unit: {default.unit!r} is not the unit results are converted to "
                f"({LAB_UNITS[lab]!r}); give the default range in {LAB_UNITS[lab]}"
            )
    missing_labs = [lab for lab in LAB_UNITS if lab not in model.lab_defaults]
    if missing_labs:
        raise KnowledgeError(f"lab_defaults: no default range for {', '.join(missing_labs)}")


# The C safe loader when libyaml is present (10x faster start-up), else the pure-Python safe loader.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KnowledgeError(f"cannot read knowledge file {path}: {exc.strerror}") from exc
    try:
        return yaml.load(raw, Loader=_YAML_LOADER), raw  # noqa: S506 - a safe loader (C or pure Python)
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"knowledge file {path} is not valid YAML: {exc}".replace("\n", " ")) from exc


def load_knowledge(path: str | Path | None = None) -> Knowledge:
    """Load, validate and index a knowledge file (the packaged one when `path` is None)."""
    file = Path(path) if path else PACKAGED_FILE
    data, raw = _read_yaml(file)
    try:
        check_keys(data, KnowledgeModel)
    except KnowledgeError as exc:
        raise KnowledgeError(f"invalid knowledge file {file}: {exc}") from None
    try:
        model = KnowledgeModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KnowledgeError(
            f"invalid knowledge file {file}: {where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc
    try:
        return Knowledge(model, hashlib.sha256(raw).hexdigest(), file.resolve().parent)
    except KnowledgeError as exc:
        raise KnowledgeError(f"invalid knowledge file {file}: {exc}") from None


@lru_cache(maxsize=1)
def packaged_knowledge() -> Knowledge:
    """The packaged knowledge file, loaded once per process."""
    return load_knowledge(None)


def _check_texts(texts: Texts) -> None:
    """Every summary and missing-input code has its template; every placeholder is a known name."""
    for key in texts.summaries:
        if key not in SUMMARY_KEYS:
            raise unknown_key_error("texts.summaries", key, SUMMARY_KEYS)
    absent = [key for key in SUMMARY_KEYS if key not in texts.summaries]
    if absent:
        raise KnowledgeError(f"texts.summaries: no template for {', '.join(absent)}")
    for section in ("missing_names", "missing_lines"):
        table: dict[str, str] = getattr(texts, section)
        for key in table:
            if key not in MISSING_CODES:
                raise unknown_key_error(f"texts.{section}", key, MISSING_CODES)
        absent = [code for code in MISSING_CODES if code not in table]
        if absent:
            raise KnowledgeError(f"texts.{section}: no text for {', '.join(absent)}")
    known = {*Thresholds.model_fields, *Windows.model_fields, *CARD_PLACEHOLDERS}
    for name, template in texts.templates():
        for placeholder in placeholders(template):
            if placeholder not in known:
                raise unknown_key_error(f"texts.{name} placeholder", placeholder, sorted(known))
