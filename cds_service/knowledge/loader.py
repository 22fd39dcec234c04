"""Load and validate the knowledge file (thresholds, windows, code tables, card texts, sources).

The service refuses to start on an invalid file (`KnowledgeError`). Code tables are indexed once
here so that the hot path only does dictionary look-ups.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

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
    low: Decimal
    high: Decimal
    unit: str


class Dosing(_Strict):
    default_days: int = Field(ge=1)
    by_strength_mg: dict[str, int] = Field(default_factory=dict)
    months_per_dose: int | None = None
    pen_days: int | None = None


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


class PrefixRule(_Strict):
    """An ICD fracture-site rule: a code `prefix` or a regular-expression `pattern` (matched at the start),
    optionally for one ICD `system` only; `source` cites where the category was read."""

    site: str
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
    site: str


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

    @field_validator("summaries")
    @classmethod
    def _summaries_short(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if len(text) >= 140:
                raise ValueError(f"summary {key} is {len(text)} characters; CDS Hooks needs < 140")
        return value


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
    lab_defaults: dict[Literal["calcium", "albumin", "alkaline_phosphatase"], LabDefault]
    dosing: dict[str, Dosing]
    oncology_strengths_mg: dict[str, list[str]]
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

    # ----- loading -------------------------------------------------------------------------
    def _table_rows(self, base_dir: Path, table: str) -> list[dict[str, str]]:
        rel = self.model.code_tables[table]  # type: ignore[index]
        for folder in (base_dir, PACKAGED_DIR):
            path = (folder / rel).resolve()
            if path.is_file():
                with path.open(newline="", encoding="utf-8") as handle:
                    rows = list(csv.DictReader(handle))
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


def _read_yaml(path: Path) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KnowledgeError(f"cannot read knowledge file {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(raw), raw
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"knowledge file {path} is not valid YAML: {exc}".replace("\n", " ")) from exc


def load_knowledge(path: str | Path | None = None) -> Knowledge:
    """Load, validate and index a knowledge file (the packaged one when `path` is None)."""
    file = Path(path) if path else PACKAGED_FILE
    data, raw = _read_yaml(file)
    try:
        model = KnowledgeModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KnowledgeError(
            f"invalid knowledge file {file}: {where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc
    return Knowledge(model, hashlib.sha256(raw).hexdigest(), file.resolve().parent)


@lru_cache(maxsize=1)
def packaged_knowledge() -> Knowledge:
    """The packaged knowledge file, loaded once per process."""
    return load_knowledge(None)
