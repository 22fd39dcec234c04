"""Anabolic agent choice: exclusions, cautions, ranking and statuses (protocol §6); follow-on (§7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from cds_service.facts.patient_record import ClinicalFinding, LabResult, Sex
from cds_service.knowledge.indexed import Knowledge
from cds_service.rules.decision import AgentAssessment, AgentStatus, FollowOnAssessment
from cds_service.rules.history import CvStatus, describe
from cds_service.rules.labs import LabStatus
from cds_service.rules.labs import below as lab_below

WOMEN_ORDER = ("romosozumab", "abaloparatide", "teriparatide")
MEN_ORDER = ("teriparatide", "abaloparatide", "romosozumab")


@dataclass(frozen=True)
class AgentContext:
    sex: Sex
    cv_status: CvStatus
    labs: LabStatus
    romosozumab_doses: int
    pth_use_days: int
    paget: tuple[ClinicalFinding, ...] = ()
    alp_unexplained: bool = False
    skeletal_radiation: tuple[ClinicalFinding, ...] = ()
    radiotherapy_any: tuple[ClinicalFinding, ...] = ()
    urolithiasis: tuple[ClinicalFinding, ...] = ()  # any clinical status: a PTH-analogue caution (§6)
    bone_malignancy: tuple[ClinicalFinding, ...] = ()
    primary_hpt_active: bool = False
    hypocalcaemia: tuple[ClinicalFinding, ...] = ()  # active coded hypocalcaemia
    hypercalcaemia: tuple[ClinicalFinding, ...] = ()  # active coded hypercalcaemia
    denosumab_within_caution_window: bool = False
    prior_denosumab_12_months: bool = False
    hip_failing: bool = False
    bisphosphonate_before_followup: bool = False
    allergies: dict[str, tuple[ClinicalFinding, ...]] = field(default_factory=dict)


_DAYS_PER_MONTH = Decimal("30.4375")  # 365.25 / 12


def duration_text(days: int) -> str:
    """A configured span in days as the card says it: whole months when it is one (365 -> "12 months",
    548 -> "18 months", 730 -> "24 months"), else days (300 -> "300 days")."""
    months = int((Decimal(days) / _DAYS_PER_MONTH).to_integral_value())
    if months and abs(months * _DAYS_PER_MONTH - days) <= 1:
        return f"{months} months"
    return f"{days} days"


def prior_denosumab_text(knowledge: Knowledge) -> str:
    return f"prior denosumab for {duration_text(knowledge.windows.prior_denosumab_min_days)} or more"


def _cv_texts(cv_status: CvStatus, months: int) -> tuple[list[str], list[str]]:
    exclude = [f"MI or stroke within {months} months: {describe(f)}" for f in cv_status.recent]
    caution: list[str] = [f"prior MI or stroke: {describe(f)}" for f in cv_status.prior]
    caution += [
        f"MI/stroke history without an event date ({f.label}): confirm none in the past {months} months"
        for f in cv_status.undated
    ]
    caution += [f"TIA on record: {describe(f)}" for f in cv_status.tia]
    return exclude, caution


def romosozumab_findings(
    ctx: AgentContext, knowledge: Knowledge, usage_limits: bool
) -> tuple[list[str], list[str]]:
    excluded, caution = _cv_texts(ctx.cv_status, knowledge.windows.cv_event_exclusion_months)
    if knowledge.policy.romosozumab_prior_cv_event == "exclude" and ctx.cv_status.prior:
        excluded += [c for c in caution if c.startswith("prior MI")]
        caution = [c for c in caution if not c.startswith("prior MI")]
    if usage_limits and ctx.romosozumab_doses >= 12:
        excluded.append(f"{ctx.romosozumab_doses} romosozumab doses already (limit 12)")
    if ctx.labs.calcium_low:
        excluded.append("corrected calcium below range")
    excluded += [f"hypocalcaemia coded: {describe(f)}" for f in ctx.hypocalcaemia]
    if ctx.sex == "male" and knowledge.policy.romosozumab_in_men == "exclude":
        excluded.append("male: romosozumab is off-label in men")
    elif ctx.sex in ("other", "unknown"):
        caution.append("sex not recorded as female")
    excluded += [f"allergy: {f.label}" for f in ctx.allergies.get("romosozumab", ())]
    return excluded, caution


def pth_findings(
    agent: str, ctx: AgentContext, knowledge: Knowledge, usage_limits: bool
) -> tuple[list[str], list[str]]:
    excluded: list[str] = [f"Paget disease of bone: {describe(f)}" for f in ctx.paget]
    if ctx.alp_unexplained:
        excluded.append("unexplained raised alkaline phosphatase: work-up pending")
    excluded += [f"skeletal radiation: {describe(f)}" for f in ctx.skeletal_radiation]
    excluded += [f"bone metastasis or skeletal malignancy: {describe(f)}" for f in ctx.bone_malignancy]
    if ctx.labs.calcium_high:
        excluded.append("hypercalcaemia (corrected calcium above range)")
    excluded += [f"hypercalcaemia coded: {describe(f)}" for f in ctx.hypercalcaemia]
    if ctx.primary_hpt_active:
        excluded.append("active primary hyperparathyroidism")
    allowance = (
        knowledge.windows.abaloparatide_allowance_days
        if agent == "abaloparatide"
        else knowledge.windows.pth_allowance_days
    )
    if usage_limits and ctx.pth_use_days >= allowance:
        excluded.append(f"{ctx.pth_use_days} days of PTH-analogue use already (limit {allowance})")
    if agent == "abaloparatide" and ctx.sex == "male" and knowledge.policy.abaloparatide_in_men == "exclude":
        excluded.append("male: abaloparatide not licensed for men under this policy")
    excluded += [f"allergy: {f.label}" for f in ctx.allergies.get(agent, ())]
    caution: list[str] = []
    if ctx.denosumab_within_caution_window:
        caution.append(
            f"denosumab within {knowledge.windows.pth_caution_denosumab_months} months: switching causes "
            "transient hip bone loss; "
            "only with specialist-planned overlap"
        )
    caution += [
        f"radiotherapy on record ({f.label}): confirm the field was not skeletal"
        for f in ctx.radiotherapy_any
    ]
    caution += [f"urolithiasis on record: {describe(f)}" for f in ctx.urolithiasis]
    return excluded, caution


def findings_for(
    agent: str, ctx: AgentContext, knowledge: Knowledge, usage_limits: bool = True
) -> tuple[list[str], list[str]]:
    if agent == "romosozumab":
        return romosozumab_findings(ctx, knowledge, usage_limits)
    return pth_findings(agent, ctx, knowledge, usage_limits)


def rank_agents(ctx: AgentContext, knowledge: Knowledge) -> tuple[AgentAssessment, ...]:
    """All three anabolics: ranked ones first by rank, then excluded ones (protocol §6)."""
    found = {agent: findings_for(agent, ctx, knowledge) for agent in WOMEN_ORDER}
    base_order = WOMEN_ORDER if ctx.sex == "female" else MEN_ORDER
    rule_reason: str | None = None
    if ctx.prior_denosumab_12_months:
        rule_reason = prior_denosumab_text(knowledge)
    elif ctx.hip_failing and ctx.bisphosphonate_before_followup:
        rule_reason = "total hip failing after a bisphosphonate"
    order = list(base_order)
    if rule_reason and not found["romosozumab"][0]:
        order = ["romosozumab", *[a for a in base_order if a != "romosozumab"]]
    ranked = [a for a in order if not found[a][0]]
    ranked = [a for a in ranked if not found[a][1]] + [a for a in ranked if found[a][1]]
    out: list[AgentAssessment] = []
    for rank, agent in enumerate(ranked, start=1):
        caution = found[agent][1]
        status: AgentStatus = "caution" if caution else ("preferred" if rank == 1 else "option")
        reasons = list(caution)
        if agent == "romosozumab" and rule_reason:
            reasons.insert(0, rule_reason)
        out.append(AgentAssessment(agent, status, rank, tuple(reasons), tuple(caution)))
    out += [AgentAssessment(a, "excluded", None, tuple(found[a][0])) for a in WOMEN_ORDER if found[a][0]]
    return tuple(out)


def follow_on(
    egfr: LabResult | None,
    sex: Sex,
    prior_denosumab: bool,
    knowledge: Knowledge,
    jaw_or_femur: tuple[ClinicalFinding, ...] = (),
) -> tuple[FollowOnAssessment, ...]:
    """Follow-on anti-resorptives (protocol §7); empty without an eGFR whose band is decided.

    `jaw_or_femur`: osteonecrosis of the jaw or atypical femoral fracture on record, a caution on every
    follow-on agent (all five are bisphosphonates or denosumab, §7)."""
    if egfr is None:
        return ()
    thresholds = knowledge.thresholds
    below_gate = lab_below(egfr, thresholds.egfr_renal_gate) is True
    below_bisphosphonate = lab_below(egfr, thresholds.egfr_follow_on_bisphosphonate) is True
    out: list[FollowOnAssessment] = []
    for agent, spec in knowledge.model.follow_on_agents.items():
        excluded: list[str] = []
        if below_gate:
            excluded.append(f"eGFR {egfr.shown} < {thresholds.egfr_renal_gate}: specialist decision")
        elif below_bisphosphonate and agent in ("alendronate", "zoledronic_acid"):
            excluded.append(f"eGFR {egfr.shown} < {thresholds.egfr_follow_on_bisphosphonate}")
        elif not below_bisphosphonate and agent in ("risedronate", "ibandronate"):
            excluded.append(
                f"eGFR {egfr.shown} >= {thresholds.egfr_follow_on_bisphosphonate}: "
                "alendronate or zoledronic acid listed instead"
            )
        if agent == "ibandronate" and sex != "female":
            excluded.append("not used in men")
        if prior_denosumab and agent not in ("denosumab", "zoledronic_acid"):
            excluded.append("after prior denosumab: back to denosumab or to zoledronic acid")
        if excluded:
            out.append(FollowOnAssessment(agent, "excluded", tuple(excluded)))
            continue
        reasons = [
            f"{_JAW_OR_FEMUR_TEXT[c]} on record: {describe(f)}"
            for f in jaw_or_femur
            for c in _jaw_or_femur(f)
        ]
        if prior_denosumab and spec.kind == "denosumab":
            reasons.append("after prior denosumab: never leave the patient uncovered")
        out.append(FollowOnAssessment(agent, "caution" if jaw_or_femur else "option", tuple(reasons)))
    return tuple(out)


_JAW_OR_FEMUR_TEXT = {
    "osteonecrosis_of_jaw": "osteonecrosis of the jaw",
    "atypical_femoral_fracture": "atypical femoral fracture",
}
JAW_OR_FEMUR_CONCEPTS = tuple(_JAW_OR_FEMUR_TEXT)


def _jaw_or_femur(finding: ClinicalFinding) -> list[str]:
    return [concept for concept in JAW_OR_FEMUR_CONCEPTS if concept in finding.concepts]
