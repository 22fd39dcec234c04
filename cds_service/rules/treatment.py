"""Rules R9-R13 and the renal gate: secondary causes, targets, agent choice (§3, §6, §7)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from cds_service.knowledge.indexed import Knowledge
from cds_service.rules import bmd, history
from cds_service.rules.agents import AgentContext, prior_denosumab_text, rank_agents
from cds_service.rules.decision import Decision, Outcome, SiteResponse
from cds_service.rules.evaluation import CAPPING_MISSING, Evaluation
from cds_service.rules.exposure import BISPHOSPHONATES
from cds_service.rules.labs import LabStatus
from cds_service.rules.plan import before_starting, monitoring, phase_plan, plan_start


def rule_secondary_causes(evaluation: Evaluation) -> list[str]:
    """R9a (decides) and the R9b/R9c flags (returned)."""
    labs, hpt = (
        evaluation.labs,
        history.hyperparathyroidism_types(evaluation.record.findings, evaluation.knowledge),
    )
    _lab_gaps(evaluation, labs)
    if labs.calcium_high:
        shown = labs.corrected_calcium_shown
        evaluation.done("SPECIALIST_REVIEW", "R9a", f"corrected calcium {shown} mg/dL above range")
    coded_high = history.active_with_concept(evaluation.record.findings, "hypercalcaemia")
    if coded_high:
        evaluation.done(
            "SPECIALIST_REVIEW", "R9a", "hypercalcaemia coded: " + history.describe(coded_high[0])
        )
    if "primary_tertiary_familial" in hpt:
        evaluation.done(
            "SPECIALIST_REVIEW", "R9a", "active primary, tertiary or familial hyperparathyroidism"
        )
    if "renal" in hpt:
        evaluation.done("SPECIALIST_REVIEW", "R9a", "hyperparathyroidism of renal origin")
    flags: list[str] = []
    if evaluation.alp_unexplained():
        flags.append("R9b: " + evaluation.knowledge.line("alp_workup_flag"))
    if labs.vitamin_d_low and labs.vitamin_d:
        # "R9c: " stays in code: the CONSIDER summary finds the work-up flags by it (present.card_text)
        flags.append(
            "R9c: " + evaluation.knowledge.line("vitamin_d_low_flag", vitamin_d=labs.vitamin_d.shown)
        )
    if "secondary_non_renal" in hpt:
        flags.append("R9c: " + evaluation.knowledge.line("secondary_hpt_flag"))
    if "unspecified" in hpt:
        flags.append("R9c: " + evaluation.knowledge.line("hpt_type_unknown_flag"))
    if labs.calcium_low:
        flags.append(
            "R9c: " + evaluation.knowledge.line("calcium_low_flag", calcium=labs.corrected_calcium_shown)
        )
    coded_low = history.active_with_concept(evaluation.record.findings, "hypocalcaemia")
    if coded_low:
        flags.append(
            "R9c: " + evaluation.knowledge.line("hypocalcaemia_flag", finding=history.describe(coded_low[0]))
        )
    return flags


def _lab_gaps(evaluation: Evaluation, labs: LabStatus) -> None:
    for code, value in (
        ("egfr", labs.egfr),
        ("calcium", labs.calcium),
        ("alkaline_phosphatase", labs.alp),
    ):
        if value is None:
            evaluation.miss(code)
    for code in labs.undecided:  # a bound that cannot decide its gate counts as missing (§3c)
        evaluation.miss(code)
    for note in labs.notes:
        evaluation.caveat(note)
    if labs.vitamin_d is None:
        evaluation.caveat(evaluation.knowledge.line("vitamin_d_missing_caveat"))
    if labs.calcium is not None and labs.albumin is None:
        evaluation.caveat(evaluation.knowledge.line("albumin_missing_caveat"))
    if not any(m.role == "supplement" for m in evaluation.record.medications):
        evaluation.caveat(evaluation.knowledge.line("supplements_line"))
    lines = []
    for label, lab in (
        ("eGFR", labs.egfr),
        ("Calcium", labs.calcium),
        ("Albumin", labs.albumin),
        ("ALP", labs.alp),  # short: the card's lab line
        ("25-OH vitamin D", labs.vitamin_d),
    ):
        if lab is not None:
            lines.append((label, f"{lab.shown} {lab.unit} ({lab.date.isoformat()})"))
    if labs.calcium_corrected_with_albumin and labs.corrected_calcium is not None:
        lines.append(("Corrected calcium", f"{labs.corrected_calcium.quantize(Decimal('0.01'))} mg/dL"))
    evaluation.evidence = replace(evaluation.evidence, labs=tuple(lines))


def rule_renal_gate(evaluation: Evaluation, agents_ctx: AgentContext) -> None:
    labs = evaluation.labs
    renal = history.assess_renal(evaluation.record.findings, evaluation.as_of, evaluation.knowledge)
    reason: str | None = None
    if labs.egfr is not None and labs.egfr_below_gate is True:
        reason = evaluation.knowledge.line(
            "renal_egfr_reason", egfr=labs.egfr.shown, egfr_date=labs.egfr.date.isoformat()
        )
    elif renal.advanced_ckd:
        reason = "CKD stage 4-5 / end-stage renal disease: " + history.describe(renal.advanced_ckd[0])
    elif renal.recent_dialysis:
        reason = evaluation.knowledge.line(
            "renal_dialysis_reason", finding=history.describe(renal.recent_dialysis[0])
        )
    elif renal.kidney_transplant:
        reason = "kidney transplant: " + history.describe(renal.kidney_transplant[0])
    if reason:
        advice = "renal_transplant_advice_reason" if renal.kidney_transplant else "renal_advice_reason"
        evaluation.reasons.append(evaluation.knowledge.line(advice))
        agents = rank_agents(agents_ctx, evaluation.knowledge)
        evaluation.done(
            "SPECIALIST_REVIEW",
            "renal",
            "renal gate: " + reason,
            agents=agents,
            follow_on=evaluation.follow_on_for(agents),
        )


def rule_treatment(
    evaluation: Evaluation,
    total_hip: SiteResponse,
    lumbar_spine: SiteResponse | None,
    followup: bmd.Scan,
    flags: list[str],
) -> Decision:
    met = total_hip.met and (lumbar_spine is None or lumbar_spine.met)
    target = _target_t(evaluation)
    lowest = bmd.lowest_target_t(followup)
    evaluation.evidence = replace(evaluation.evidence, target_t=target)
    for site_response in (total_hip, lumbar_spine):
        if site_response is not None:
            evaluation.reasons.append(response_text(site_response, evaluation.knowledge))
    if met:
        evaluation.reasons.extend(flags)
        if lowest is None or lowest <= target:
            evaluation.reasons.append("target T-score not yet reached")
        evaluation.done("RESPONSE_MET", "R10")
    first_line_is_bp = evaluation.first_line_agent in BISPHOSPHONATES
    ctx = evaluation.agent_context(
        hip_failing=not total_hip.met, bisphosphonate_before_followup=first_line_is_bp
    )
    rule_renal_gate(evaluation, ctx)
    if lowest is None:
        evaluation.miss("target_t_score")
    elif lowest > target:
        evaluation.done(
            "CONSIDER",
            "R11",
            evaluation.knowledge.line(
                "at_target_reason", t_score=bmd.shown_t(lowest, target, above=True), target_t=str(target)
            ),
        )
    agents = rank_agents(ctx, evaluation.knowledge)
    follow = evaluation.follow_on_for(agents)
    ranked = [a for a in agents if a.rank is not None]
    if not ranked:
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R13",
            evaluation.knowledge.line("all_agents_excluded_reason"),
            agents=agents,
            follow_on=follow,
        )
    romo = next(a for a in agents if a.agent == "romosozumab")
    if ctx.prior_denosumab_12_months and romo.status == "excluded":
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R13",
            prior_denosumab_text(evaluation.knowledge, "prior_denosumab_romosozumab_excluded_reason"),
            agents=agents,
            follow_on=follow,
        )
    evaluation.reasons.extend(flags)
    capped = (
        bool(flags) or any(m in CAPPING_MISSING for m in evaluation.missing) or bool(evaluation.cap_reasons)
    )
    last_denosumab = (
        evaluation.exposures["denosumab"].dose_dates[-1]
        if "denosumab" in evaluation.exposures and evaluation.exposures["denosumab"].dose_dates
        else None
    )
    evaluation.evidence = replace(
        evaluation.evidence,
        plan=phase_plan(
            ranked[0].agent,
            evaluation.first_line_agent,
            last_denosumab,
            ctx.pth_use_days,
            evaluation.knowledge,
            as_of=evaluation.as_of,
        ),
        plan_start=plan_start(
            ranked[0].agent,
            evaluation.first_line_agent,
            last_denosumab,
            evaluation.knowledge,
            evaluation.as_of,
        ),
        before_starting=before_starting(evaluation.sex, ranked[0].agent, evaluation.knowledge),
        monitoring=monitoring(evaluation.knowledge),
    )
    outcome: Outcome = "CONSIDER" if capped else "ESCALATE"
    return evaluation.decide(outcome, "R12", agents=agents, follow_on=follow, suggestions_allowed=True)


def _target_t(evaluation: Evaluation) -> Decimal:
    fractures = evaluation.fractures
    if fractures is not None and fractures.prior_hip_or_vertebral:
        return evaluation.knowledge.thresholds.personalised_target_t_after_fracture
    return evaluation.knowledge.thresholds.personalised_target_t


def response_text(site_response: SiteResponse, knowledge: Knowledge) -> str:
    """The deciding site's change against its target (§5); the target is the one the rule compared with."""
    pct = site_response.metric == "pct"
    change = site_response.pct_change if pct else site_response.delta_t
    return knowledge.line(
        "response_pct_reason" if pct else "response_delta_t_reason",
        site=site_response.site.replace("_", " "),
        change=format(change, "+"),
        verdict="≥" if site_response.met else "<",
        target=str(site_response.target),
        baseline_date=site_response.baseline_date.isoformat(),
        followup_date=site_response.followup_date.isoformat(),
    )
