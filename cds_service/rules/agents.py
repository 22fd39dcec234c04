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


def prior_denosumab_text(knowledge: Knowledge, name: str = "prior_denosumab_reason") -> str:
    """Template `name` with `prior_denosumab_min_days` said as `duration_text` says it."""
    duration = duration_text(knowledge.windows.prior_denosumab_min_days)
    return knowledge.line(name, prior_denosumab_duration=duration)


def _cv_texts(cv_status: CvStatus, knowledge: Knowledge) -> tuple[list[str], list[str], list[str]]:
    """(exclusions, prior MI/stroke cautions, other cautions): the policy decides where prior events go."""
    exclude = [knowledge.line("cv_recent_exclusion", finding=describe(f)) for f in cv_status.recent]
    prior = [knowledge.line("prior_cv_event", finding=describe(f)) for f in cv_status.prior]
    caution = [knowledge.line("cv_undated_caution", finding_label=f.label) for f in cv_status.undated]
    caution += [knowledge.line("tia_caution", finding=describe(f)) for f in cv_status.tia]
    return exclude, prior, caution


def romosozumab_findings(
    ctx: AgentContext, knowledge: Knowledge, usage_limits: bool
) -> tuple[list[str], list[str]]:
    excluded, prior, caution = _cv_texts(ctx.cv_status, knowledge)
    if knowledge.policy.romosozumab_prior_cv_event == "exclude":
        excluded += prior
    else:
        caution = prior + caution
    if usage_limits and ctx.romosozumab_doses >= 12:
        excluded.append(knowledge.line("romosozumab_dose_limit_exclusion", doses=str(ctx.romosozumab_doses)))
    if ctx.labs.calcium_low:
        excluded.append(knowledge.line("calcium_low_exclusion"))
    excluded += [knowledge.line("hypocalcaemia_exclusion", finding=describe(f)) for f in ctx.hypocalcaemia]
    if ctx.sex == "male" and knowledge.policy.romosozumab_in_men == "exclude":
        excluded.append(knowledge.line("romosozumab_male_exclusion"))
    elif ctx.sex in ("other", "unknown"):
        caution.append(knowledge.line("sex_not_female_caution"))
    excluded += [
        knowledge.line("allergy_exclusion", finding_label=f.label)
        for f in ctx.allergies.get("romosozumab", ())
    ]
    return excluded, caution


def pth_findings(
    agent: str, ctx: AgentContext, knowledge: Knowledge, usage_limits: bool
) -> tuple[list[str], list[str]]:
    line = knowledge.line
    excluded: list[str] = [line("paget_exclusion", finding=describe(f)) for f in ctx.paget]
    if ctx.alp_unexplained:
        excluded.append(line("alp_unexplained_exclusion"))
    excluded += [line("skeletal_radiation_exclusion", finding=describe(f)) for f in ctx.skeletal_radiation]
    # R2 ends the evaluation on a bone malignancy before any agent is assessed: kept in code, never shown
    excluded += [f"bone metastasis or skeletal malignancy: {describe(f)}" for f in ctx.bone_malignancy]
    if ctx.labs.calcium_high:
        excluded.append(line("hypercalcaemia_lab_exclusion"))
    excluded += [line("hypercalcaemia_coded_exclusion", finding=describe(f)) for f in ctx.hypercalcaemia]
    if ctx.primary_hpt_active:
        excluded.append(line("primary_hpt_exclusion"))
    allowance = (
        knowledge.windows.abaloparatide_allowance_days
        if agent == "abaloparatide"
        else knowledge.windows.pth_allowance_days
    )
    if usage_limits and ctx.pth_use_days >= allowance:
        excluded.append(
            knowledge.line(
                "pth_use_limit_exclusion", used_days=str(ctx.pth_use_days), allowance_days=str(allowance)
            )
        )
    if agent == "abaloparatide" and ctx.sex == "male" and knowledge.policy.abaloparatide_in_men == "exclude":
        excluded.append("male: abaloparatide not licensed for men under this policy")
    excluded += [line("allergy_exclusion", finding_label=f.label) for f in ctx.allergies.get(agent, ())]
    caution: list[str] = []
    if ctx.denosumab_within_caution_window:
        caution.append(knowledge.line("pth_after_denosumab_caution"))
    caution += [line("radiotherapy_caution", finding_label=f.label) for f in ctx.radiotherapy_any]
    caution += [line("urolithiasis_caution", finding=describe(f)) for f in ctx.urolithiasis]
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
        rule_reason = knowledge.line("hip_after_bisphosphonate_reason")
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
            excluded.append(knowledge.line("follow_on_egfr_gate_exclusion", egfr=egfr.shown))
        elif below_bisphosphonate and agent in ("alendronate", "zoledronic_acid"):
            excluded.append(knowledge.line("follow_on_egfr_low_exclusion", egfr=egfr.shown))
        elif not below_bisphosphonate and agent in ("risedronate", "ibandronate"):
            excluded.append(knowledge.line("follow_on_egfr_high_exclusion", egfr=egfr.shown))
        if agent == "ibandronate" and sex != "female":
            excluded.append(knowledge.line("follow_on_men_exclusion"))
        if prior_denosumab and agent not in ("denosumab", "zoledronic_acid"):
            excluded.append(knowledge.line("follow_on_after_denosumab_exclusion"))
        if excluded:
            out.append(FollowOnAssessment(agent, "excluded", tuple(excluded)))
            continue
        reasons = [
            knowledge.line(_JAW_OR_FEMUR_TEXT[c], finding=describe(f))
            for f in jaw_or_femur
            for c in _jaw_or_femur(f)
        ]
        if prior_denosumab and spec.kind == "denosumab":
            reasons.append(knowledge.line("follow_on_after_denosumab_reason"))
        out.append(FollowOnAssessment(agent, "caution" if jaw_or_femur else "option", tuple(reasons)))
    return tuple(out)


_JAW_OR_FEMUR_TEXT = {  # concept -> its caution template in `texts`
    "osteonecrosis_of_jaw": "jaw_osteonecrosis_caution",
    "atypical_femoral_fracture": "atypical_femoral_fracture_caution",
}
JAW_OR_FEMUR_CONCEPTS = tuple(_JAW_OR_FEMUR_TEXT)


def _jaw_or_femur(finding: ClinicalFinding) -> list[str]:
    return [concept for concept in JAW_OR_FEMUR_CONCEPTS if concept in finding.concepts]
