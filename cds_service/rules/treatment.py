"""Rules R9-R13 and the renal gate: secondary causes, targets, agent choice (§3, §6, §7)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from cds_service.rules import bmd, history
from cds_service.rules.agents import AgentContext, prior_denosumab_text, rank_agents
from cds_service.rules.decision import Decision, Outcome, SiteResponse
from cds_service.rules.evaluation import CAPPING_MISSING, Evaluation
from cds_service.rules.exposure import BISPHOSPHONATES
from cds_service.rules.labs import LabStatus
from cds_service.rules.plan import before_starting, monitoring, phase_plan


def rule_secondary_causes(ev: Evaluation) -> list[str]:
    """R9a (decides) and the R9b/R9c flags (returned)."""
    labs, hpt = ev.labs, history.hyperparathyroidism_types(ev.r.findings, ev.k)
    _lab_gaps(ev, labs)
    if labs.calcium_high:
        shown = labs.corrected_calcium_shown
        ev.done("SPECIALIST_REVIEW", "R9a", f"corrected calcium {shown} mg/dL above range")
    coded_high = history.active_with_concept(ev.r.findings, "hypercalcaemia")
    if coded_high:
        ev.done("SPECIALIST_REVIEW", "R9a", "hypercalcaemia coded: " + history.describe(coded_high[0]))
    if "primary_tertiary_familial" in hpt:
        ev.done("SPECIALIST_REVIEW", "R9a", "active primary, tertiary or familial hyperparathyroidism")
    if "renal" in hpt:
        ev.done("SPECIALIST_REVIEW", "R9a", "hyperparathyroidism of renal origin")
    flags: list[str] = []
    if ev.alp_unexplained():
        flags.append("R9b: work up raised alkaline phosphatase first; PTH analogues excluded pending work-up")
    if labs.vitamin_d_low and labs.vitamin_d:
        flags.append(
            f"R9c: 25-OH vitamin D {labs.vitamin_d.shown} ng/mL < {ev.k.t.vitamin_d_low_ng_ml}: correct first"
        )
    if "secondary_non_renal" in hpt:
        flags.append("R9c: secondary (non-renal) hyperparathyroidism: correct the cause first")
    if "unspecified" in hpt:
        flags.append("R9c: hyperparathyroidism, type not recorded: clarify and correct first")
    if labs.calcium_low:
        flags.append(
            f"R9c: corrected calcium {labs.corrected_calcium_shown} mg/dL below range: "
            "correct first (romosozumab excluded while low)"
        )
    coded_low = history.active_with_concept(ev.r.findings, "hypocalcaemia")
    if coded_low:
        flags.append(
            "R9c: hypocalcaemia coded: "
            + history.describe(coded_low[0])
            + ": correct first (romosozumab excluded while low)"
        )
    return flags


def _lab_gaps(ev: Evaluation, labs: LabStatus) -> None:
    for code, value in (
        ("egfr", labs.egfr),
        ("calcium", labs.calcium),
        ("alkaline_phosphatase", labs.alp),
    ):
        if value is None:
            ev.miss(code)
    for code in labs.undecided:  # a bound that cannot decide its gate counts as missing (§3c)
        ev.miss(code)
    for note in labs.notes:
        ev.caveat(note)
    if labs.vitamin_d is None:
        ev.caveat(f"25-OH vitamin D not on record within {ev.k.w.lab_lookback_months} months")
    if labs.calcium is not None and labs.albumin is None:
        ev.caveat("albumin not on record: calcium not corrected")
    if not any(m.role == "supplement" for m in ev.r.medications):
        ev.caveat(ev.k.line("supplements_line"))
    lines = []
    for label, lab in (
        ("eGFR", labs.egfr),
        ("Calcium", labs.calcium),
        ("Albumin", labs.albumin),
        ("Alkaline phosphatase", labs.alp),
        ("25-OH vitamin D", labs.vitamin_d),
    ):
        if lab is not None:
            lines.append((label, f"{lab.shown} {lab.unit} ({lab.date.isoformat()})"))
    if labs.calcium_corrected_with_albumin and labs.corrected_calcium is not None:
        lines.append(("Corrected calcium", f"{labs.corrected_calcium.quantize(Decimal('0.01'))} mg/dL"))
    ev.evidence = replace(ev.evidence, labs=tuple(lines))


def rule_renal_gate(ev: Evaluation, agents_ctx: AgentContext) -> None:
    labs = ev.labs
    renal = history.assess_renal(ev.r.findings, ev.as_of, ev.k)
    reason: str | None = None
    if labs.egfr is not None and labs.egfr_below_gate is True:
        reason = f"eGFR {labs.egfr.shown} ({labs.egfr.date.isoformat()}) < {ev.k.t.egfr_renal_gate}"
    elif renal.advanced_ckd:
        reason = "CKD stage 4-5 / end-stage renal disease: " + history.describe(renal.advanced_ckd[0])
    elif renal.recent_dialysis:
        reason = f"dialysis within {ev.k.w.dialysis_lookback_days} days: " + history.describe(
            renal.recent_dialysis[0]
        )
    elif renal.kidney_transplant:
        reason = "kidney transplant: " + history.describe(renal.kidney_transplant[0])
    if reason:
        ev.reasons.append(
            "follow-on bisphosphonates not recommended; denosumab boxed warning in advanced CKD; "
            "PTH analogues "
            "contraindicated in severe renal impairment (EU label)"
            + ("; post-transplant bone disease" if renal.kidney_transplant else "")
        )
        agents = rank_agents(agents_ctx, ev.k)
        ev.done(
            "SPECIALIST_REVIEW",
            "renal",
            "renal gate: " + reason,
            agents=agents,
            follow_on=ev.follow_on_for(agents),
        )


def rule_treatment(
    ev: Evaluation, th: SiteResponse, ls: SiteResponse | None, followup: bmd.Scan, flags: list[str]
) -> Decision:
    met = th.met and (ls is None or ls.met)
    target = _target_t(ev)
    lowest = bmd.lowest_target_t(followup)
    ev.evidence = replace(ev.evidence, target_t=target)
    for r in (th, ls):
        if r is not None:
            ev.reasons.append(response_text(r))
    if met:
        ev.reasons.extend(flags)
        if lowest is None or lowest <= target:
            ev.reasons.append("target T-score not yet reached")
        ev.done("RESPONSE_MET", "R10")
    first_line_is_bp = ev.first_line_agent in BISPHOSPHONATES
    ctx = ev.agent_context(hip_failing=not th.met, bisphosphonate_before_followup=first_line_is_bp)
    rule_renal_gate(ev, ctx)
    if lowest is None:
        ev.miss("target_t_score")
    elif lowest > target:
        ev.done(
            "CONSIDER",
            "R11",
            f"lowest total-hip/femoral-neck T-score {bmd.shown_t(lowest, target, above=True)} is above the "
            f"personalised target {target}: "
            "at target: continuing current therapy is reasonable",
        )
    agents = rank_agents(ctx, ev.k)
    follow = ev.follow_on_for(agents)
    ranked = [a for a in agents if a.rank is not None]
    if not ranked:
        ev.done(
            "SPECIALIST_REVIEW",
            "R13",
            "every anabolic agent is excluded",
            agents=agents,
            follow_on=follow,
        )
    romo = next(a for a in agents if a.agent == "romosozumab")
    if ctx.prior_denosumab_12_months and romo.status == "excluded":
        ev.done(
            "SPECIALIST_REVIEW",
            "R13",
            f"{prior_denosumab_text(ev.k)} and romosozumab excluded; options a specialist may weigh: "
            "continue denosumab and add teriparatide, or continue denosumab",
            agents=agents,
            follow_on=follow,
        )
    ev.reasons.extend(flags)
    capped = bool(flags) or any(m in CAPPING_MISSING for m in ev.missing) or bool(ev.cap_reasons)
    last_denosumab = (
        ev.exposures["denosumab"].dose_dates[-1]
        if "denosumab" in ev.exposures and ev.exposures["denosumab"].dose_dates
        else None
    )
    ev.evidence = replace(
        ev.evidence,
        plan=phase_plan(
            ranked[0].agent, ev.first_line_agent, last_denosumab, ctx.pth_use_days, ev.k, as_of=ev.as_of
        ),
        before_starting=before_starting(ev.sex, ranked[0].agent, ev.k),
        monitoring=monitoring(ev.k),
    )
    outcome: Outcome = "CONSIDER" if capped else "ESCALATE"
    return ev.decide(outcome, "R12", agents=agents, follow_on=follow, suggestions_allowed=True)


def _target_t(ev: Evaluation) -> Decimal:
    fx = ev.fractures
    if fx is not None and fx.prior_hip_or_vertebral:
        return ev.k.t.personalised_target_t_after_fracture
    return ev.k.t.personalised_target_t


def response_text(r: SiteResponse) -> str:
    site = r.site.replace("_", " ")
    period = f"({r.baseline_date.isoformat()} → {r.followup_date.isoformat()})"
    verdict = "≥" if r.met else "<"
    if r.metric == "pct":
        return f"{site} change {r.pct_change:+} % {verdict} {r.target} % {period}"
    return f"{site} ΔT {r.delta_t:+} {verdict} {r.target} {period}"
