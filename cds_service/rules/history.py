"""Findings from Conditions, Procedures and allergies: fractures (R4), CV events, secondary causes,
renal status, contraindication concepts (protocol §3, §3b, §6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cds_service.facts.dates import add_days, add_months, age_on
from cds_service.facts.patient_record import ClinicalFinding
from cds_service.knowledge.indexed import Knowledge

ACTIVE_STATUSES = frozenset({"active", "recurrence", "relapse"})
COUNTED_FRACTURE_SITES = frozenset(
    {"hip_femur", "vertebra", "forearm", "humerus", "pelvis", "rib", "clavicle", "tibia_ankle"}
)
# Sites that only osteoporotic codes produce (ICD M80 shoulder region, or no site coded): they count as
# fragility fractures, since the code itself says osteoporotic (interpretation in the knowledge file).
OSTEOPOROTIC_ONLY_SITES = frozenset({"shoulder", "unspecified"})


def is_active(finding: ClinicalFinding) -> bool:
    """Active, recurrence or relapse; a missing status is treated as active (fail safe)."""
    return finding.clinical_status is None or finding.clinical_status in ACTIVE_STATUSES


def with_concept(findings: tuple[ClinicalFinding, ...], *concepts: str) -> list[ClinicalFinding]:
    wanted = frozenset(concepts)
    return [f for f in findings if f.concepts & wanted]


def describe(finding: ClinicalFinding) -> str:
    when = finding.onset.isoformat() if finding.onset else "date not recorded"
    return f"{finding.label} ({when})"


@dataclass(frozen=True)
class FractureStatus:
    distinct_vertebral: int
    vertebral: tuple[ClinicalFinding, ...]
    recent_fragility: ClinicalFinding | None  # onset within the recent-fracture window
    recent_is_possible_fragility: bool  # not coded as osteoporotic: "confirm low-trauma mechanism"
    prior_hip_or_vertebral: bool
    within_months: tuple[ClinicalFinding, ...]  # counted fractures in the ALP window (R9b)
    counted: tuple[ClinicalFinding, ...]


def _is_fracture(f: ClinicalFinding) -> bool:
    return f.fracture_site is not None or "osteoporotic_fracture" in f.concepts


def _counts(f: ClinicalFinding) -> bool:
    """A fracture at a site that counts for R4 (§3b)."""
    osteoporotic = f.fracture_osteoporotic or "osteoporotic_fracture" in f.concepts
    if f.fracture_site in COUNTED_FRACTURE_SITES:
        return True
    return osteoporotic and (f.fracture_site is None or f.fracture_site in OSTEOPOROTIC_ONLY_SITES)


def _distinct_vertebral(vertebral: list[ClinicalFinding], knowledge: Knowledge) -> int:
    """Initial-encounter (or SNOMED) vertebral fractures > 90 days apart or at different named levels.

    An undated fracture still counts by its named level (§3c "undated history"); it never starts a
    cluster of its own, since without a date it cannot be told apart from a dated one.
    """
    candidates = [f for f in vertebral if f.fracture_initial is not False]
    levels = {f.vertebral_level for f in candidates if f.vertebral_level}
    dated = sorted({f.onset for f in candidates if f.onset is not None})
    clusters = 0
    last: date | None = None
    for day in dated:
        if last is None or (day - last).days > knowledge.w.distinct_vertebral_days:
            clusters += 1
            last = day
    return max(clusters, len(levels))


def assess_fractures(
    findings: tuple[ClinicalFinding, ...], birth_date: date | None, as_of: date, knowledge: Knowledge
) -> FractureStatus:
    fractures = [f for f in findings if _is_fracture(f) and f.resource_type != "AllergyIntolerance"]
    counted = [f for f in fractures if _counts(f)]
    vertebral = [f for f in counted if f.fracture_site == "vertebra"]
    window_start = add_months(as_of, -knowledge.w.recent_fracture_months)
    recent: ClinicalFinding | None = None
    possible = False
    for f in sorted(counted, key=lambda x: x.onset or date.min, reverse=True):
        if f.onset is None or not (window_start <= f.onset <= as_of):
            continue
        osteoporotic = f.fracture_osteoporotic or "osteoporotic_fracture" in f.concepts
        old_enough = birth_date is None or age_on(birth_date, f.onset) >= knowledge.t.min_age_years
        if osteoporotic or old_enough:
            recent, possible = f, not osteoporotic
            break
    alp_start = add_months(as_of, -knowledge.w.alp_fracture_months)
    return FractureStatus(
        distinct_vertebral=_distinct_vertebral(vertebral, knowledge),
        vertebral=tuple(vertebral),
        recent_fragility=recent,
        recent_is_possible_fragility=possible,
        prior_hip_or_vertebral=any(f.fracture_site in ("hip_femur", "vertebra") for f in counted),
        within_months=tuple(f for f in fractures if f.onset and alp_start <= f.onset <= as_of),
        counted=tuple(counted),
    )


@dataclass(frozen=True)
class CvStatus:
    recent: tuple[ClinicalFinding, ...]  # MI/stroke with onset within the exclusion window
    prior: tuple[ClinicalFinding, ...]  # dated MI/stroke before the window
    undated: tuple[ClinicalFinding, ...]  # MI/stroke/history-of codes with no event date
    tia: tuple[ClinicalFinding, ...]


def assess_cv(findings: tuple[ClinicalFinding, ...], as_of: date, knowledge: Knowledge) -> CvStatus:
    window_start = add_months(as_of, -knowledge.w.cv_event_exclusion_months)
    events = with_concept(findings, "myocardial_infarction", "stroke")
    recent = [f for f in events if f.onset and window_start <= f.onset <= as_of]
    prior = [f for f in events if f.onset and f.onset < window_start]
    undated = [f for f in events if f.onset is None] + [
        f for f in with_concept(findings, "history_of_cv_event") if f not in events
    ]
    return CvStatus(tuple(recent), tuple(prior), tuple(undated), tuple(with_concept(findings, "tia")))


def active_with_concept(findings: tuple[ClinicalFinding, ...], *concepts: str) -> list[ClinicalFinding]:
    """Active (or status-less) Conditions and Procedures of the concepts; allergies excluded."""
    return [
        f
        for f in with_concept(findings, *concepts)
        if f.resource_type != "AllergyIntolerance" and is_active(f)
    ]


def hyperparathyroidism_types(findings: tuple[ClinicalFinding, ...], knowledge: Knowledge) -> set[str]:
    """Types of active hyperparathyroidism: primary_tertiary_familial, renal, secondary_non_renal,
    unspecified (a code of the concept without a mapped type counts as unspecified)."""
    types: set[str] = set()
    for f in with_concept(findings, "hyperparathyroidism"):
        if not is_active(f):
            continue
        mapped = {knowledge.hpt_type[c] for c in f.codes if c in knowledge.hpt_type}
        types |= mapped or {"unspecified"}
    return types


@dataclass(frozen=True)
class RenalFindings:
    advanced_ckd: tuple[ClinicalFinding, ...]
    recent_dialysis: tuple[ClinicalFinding, ...]
    kidney_transplant: tuple[ClinicalFinding, ...] = ()


def assess_renal(findings: tuple[ClinicalFinding, ...], as_of: date, knowledge: Knowledge) -> RenalFindings:
    renal = with_concept(findings, "ckd_stage_4_5_or_dialysis")
    ckd = [f for f in renal if f.resource_type == "Condition" and is_active(f)]
    dialysis_start = add_days(as_of, -knowledge.w.dialysis_lookback_days)
    dialysis = [
        f for f in renal if f.resource_type == "Procedure" and f.onset and dialysis_start <= f.onset <= as_of
    ]
    # A transplant stays a transplant: any status or date, Condition or Procedure (fail safe, renal gate).
    transplant = [
        f for f in with_concept(findings, "kidney_transplant") if f.resource_type != "AllergyIntolerance"
    ]
    return RenalFindings(tuple(ckd), tuple(dialysis), tuple(transplant))


def allergies_to(findings: tuple[ClinicalFinding, ...], agent: str) -> list[ClinicalFinding]:
    return [f for f in findings if f.resource_type == "AllergyIntolerance" and agent in f.allergy_agents]


def has_cancer(findings: tuple[ClinicalFinding, ...]) -> bool:
    return any(f.is_cancer or "bone_malignancy" in f.concepts for f in findings)
