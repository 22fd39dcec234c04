"""Markdown `detail` of the cards (protocol §8): one builder per section, assembled per outcome.

Every string taken from the decision (and so possibly from FHIR) goes through `markdown_safe.escape`;
texts of the knowledge file are trusted; numbers and dates are formatted here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import AgentSpec
from cds_service.present.markdown_safe import escape
from cds_service.rules.decision import (
    AgentAssessment,
    Decision,
    DxaEvidence,
    Evidence,
    FollowOnAssessment,
    SiteResponse,
    WarningDetail,
)

AACE_LINE = "AACE would class this patient as very high risk (this does not change the pathway)."
OBTAIN_EGFR_LINE = (
    "Obtain eGFR (and creatinine clearance for bisphosphonates) before choosing the follow-on "
    "anti-resorptive."
)

# Missing-input codes of protocol §9: (short name for the summary, plain-language description with
# {window} placeholders filled from the knowledge file).
MISSING_TEXT: dict[str, tuple[str, str]] = {
    "birth_date": ("birth date", "Birth date not recorded: age cannot be determined."),
    "bmd_or_frax": (
        "DXA or FRAX",
        "No DXA T-score (lumbar spine, total hip, femoral neck or forearm) and no FRAX result on record.",
    ),
    "medication_history": (
        "medication history",
        "No medication records: first-line osteoporosis therapy cannot be confirmed.",
    ),
    "baseline_dxa": (
        "baseline DXA",
        "No baseline DXA (from {baseline_before_start_months} months before to {baseline_after_start_months} "
        "months after the start of therapy).",
    ),
    "followup_dxa": (
        "follow-up DXA",
        "No follow-up DXA with total hip at least {therapy_min_months} months after the start of therapy "
        "and within the last {followup_max_age_months} months.",
    ),
    "total_hip_baseline": (
        "baseline total hip",
        "No total-hip value (T-score or BMD in g/cm²) on the baseline DXA.",
    ),
    "total_hip_followup": (
        "follow-up total hip",
        "No total-hip value (T-score or BMD in g/cm²) on the follow-up DXA.",
    ),
    "target_t_score": (
        "target T-score",
        "No total-hip or femoral-neck T-score on the follow-up DXA: the personalised target "
        "cannot be assessed.",
    ),
    "egfr": ("eGFR", "No eGFR in the last {lab_lookback_months} months."),
    "calcium": ("calcium", "No calcium result in the last {lab_lookback_months} months."),
    "alkaline_phosphatase": (
        "ALP",
        "No alkaline phosphatase result in the last {lab_lookback_months} months.",
    ),
    "unreadable_resources": (
        "unreadable records",
        "Some record entries could not be read (see caveats).",
    ),
}
_FOLLOWUP_REASON = re.compile(r"DXA with total hip on or after", re.IGNORECASE)

_SITES = {
    "total_hip": "total hip",
    "femoral_neck": "femoral neck",
    "lumbar_spine": "lumbar spine (L1–L4)",
    "radius": "1/3 radius",
    "other": "other site",
    "unknown": "site not determined",
}
_STATUS = {"preferred": "preferred", "option": "option", "caution": "caution", "excluded": "excluded"}
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+$")
_ANY_CALCIUM_LINE = re.compile(r"calcium and vitamin d", re.IGNORECASE)


# ----- small formatters ----------------------------------------------------------------------
def human_key(key: str) -> str:
    """`zoledronic_acid` -> `zoledronic acid` (a key, not FHIR text; still collapsed to one line)."""
    return " ".join(key.replace("_", " ").split())


def _num(value: Decimal) -> str:
    return format(value, "f")


def _signed(value: Decimal, places: int) -> str:
    return format(value, f"+.{places}f")


def _site(site: str) -> str:
    return _SITES.get(site) or escape(human_key(site))


def missing_short(code: str) -> str:
    entry = MISSING_TEXT.get(code)
    return entry[0] if entry else human_key(code)


def _missing_line(code: str, decision: Decision, knowledge: Knowledge) -> str:
    entry = MISSING_TEXT.get(code)
    text = (
        entry[1].format_map(knowledge.text_values) if entry else f"{escape(human_key(code))}: not available."
    )
    if code == "followup_dxa":
        wanted = [escape(r) for r in decision.reasons if _FOLLOWUP_REASON.search(r)]
        if wanted:
            text += " Required: " + "; ".join(wanted) + "."
    return text


def agent_spec(agent: str, knowledge: Knowledge) -> AgentSpec | None:
    """The knowledge file's entry for an anabolic agent key, if any."""
    specs: dict[str, AgentSpec] = {str(key): spec for key, spec in knowledge.model.agents.items()}
    return specs.get(agent)


def agent_display(agent: str, knowledge: Knowledge) -> str:
    """Display name of an anabolic (trusted from knowledge, else the escaped key)."""
    spec = agent_spec(agent, knowledge)
    return spec.display if spec is not None else escape(human_key(agent).capitalize())


def _follow_on_display(agent: str, knowledge: Knowledge) -> str:
    specs = {str(key): spec.display for key, spec in knowledge.model.follow_on_agents.items()}
    return specs.get(agent) or escape(human_key(agent).capitalize())


def _section(title: str, lines: Iterable[str]) -> str:
    items = [line for line in lines if line]
    if not items:
        return ""
    return f"**{title}**\n\n" + "\n".join(f"- {line}" for line in items)


# ----- evidence ------------------------------------------------------------------------------
def _dxa_line(dxa: DxaEvidence) -> str:
    where = _site(dxa.site) + (f" ({escape(dxa.side)})" if dxa.side else "")
    if dxa.kind == "t_score":
        value = f"T-score {_num(dxa.value)} SD"
    elif dxa.kind == "bmd":
        value = f"BMD {_num(dxa.value)} g/cm²"
    else:
        value = f"{escape(human_key(dxa.kind))} {_num(dxa.value)}"
    return (
        f"DXA {dxa.date.isoformat()} ({escape(dxa.role)}): {where}, {value}; "
        f"scanner: {escape(dxa.scanner_status)}"
    )


def _targets(site: str, knowledge: Knowledge) -> tuple[Decimal | None, Decimal | None]:
    t = knowledge.t
    if site == "total_hip":
        return t.target_delta_t_total_hip, t.target_pct_total_hip
    if site == "lumbar_spine":
        return t.target_delta_t_lumbar_spine, t.target_pct_lumbar_spine
    return None, None


def _met(value: Decimal, target: Decimal | None, decided: bool, resp: SiteResponse) -> str:
    if decided:
        return "met" if resp.met else "not met"
    if target is None:
        return ""
    return "met" if value >= target else "not met"


def _response_line(resp: SiteResponse, knowledge: Knowledge) -> str:
    dt_target, pct_target = _targets(resp.site, knowledge)
    if resp.metric == "delta_t":
        dt_target = resp.target
    else:
        pct_target = resp.target
    parts: list[str] = []
    if resp.delta_t is not None:
        met = _met(resp.delta_t, dt_target, resp.metric == "delta_t", resp)
        target = f" vs target ≥ {_signed(dt_target, 2)}" if dt_target is not None else ""
        parts.append(f"ΔT {_signed(resp.delta_t, 2)}{target}" + (f": {met}" if met else ""))
    if resp.pct_change is not None:
        met = _met(resp.pct_change, pct_target, resp.metric == "pct", resp)
        target = f" vs target ≥ {_num(pct_target)} %" if pct_target is not None else ""
        parts.append(f"BMD change {_signed(resp.pct_change, 1)} %{target}" + (f": {met}" if met else ""))
    decided_by = "% change" if resp.metric == "pct" else "ΔT"
    if resp.delta_t is not None and resp.pct_change is not None:
        parts.append(f"{decided_by} decides")
    verdict = "met" if resp.met else "not met"
    return (
        f"Response at {_site(resp.site)} ({resp.baseline_date.isoformat()} → "
        f"{resp.followup_date.isoformat()}): " + "; ".join(parts) + f" (site target {verdict})"
    )


def _exposure_line(evidence: Evidence) -> str:
    exp = evidence.exposure
    if exp is None:
        return ""
    parts = ["Exposure: " + (", ".join(escape(human_key(a)) for a in exp.agents) or "no agent recorded")]
    if exp.therapy_start is not None:
        parts.append(f"therapy start {exp.therapy_start.isoformat()}")
        if exp.span_end is not None:
            days = (exp.span_end - exp.therapy_start).days + 1
            parts.append(f"span {exp.therapy_start.isoformat()} → {exp.span_end.isoformat()} ({days} days)")
    if exp.coverage_ratio is not None:
        parts.append(f"coverage ratio {_num(exp.coverage_ratio)}")
    parts.append(f"longest uncovered gap {exp.longest_gap_days} days")
    if exp.source_quality:
        parts.append(f"source: {escape(exp.source_quality)}")
    return "; ".join(parts)


def evidence_section(decision: Decision, knowledge: Knowledge) -> str:
    ev = decision.evidence
    lines = [_dxa_line(d) for d in ev.dxa]
    lines += [_response_line(r, knowledge) for r in ev.responses]
    lines.append(_exposure_line(ev))
    lines += [f"{escape(label)}: {escape(value)}" for label, value in ev.labs]
    lines += [escape(f) for f in ev.findings]
    if ev.target_t is not None:
        lines.append(f"Personalised target: total hip and femoral neck T-score above {_num(ev.target_t)}")
    return _section("Evidence", lines)


# ----- agents and follow-on -------------------------------------------------------------------
def _reasons(reasons: Iterable[str]) -> str:
    return "; ".join(escape(r) for r in reasons if r.strip())


def _agent_line(agent: AgentAssessment, knowledge: Knowledge) -> str:
    head = agent_display(agent.agent, knowledge)
    status = _STATUS.get(agent.status, escape(agent.status))
    rank = f"rank {agent.rank}, " if agent.rank is not None else ""
    reasons = _reasons(agent.reasons)
    return f"{head} ({rank}{status})" + (f": {reasons}" if reasons else "")


def agents_section(decision: Decision, knowledge: Knowledge) -> str:
    if not decision.agents:
        return ""
    ranked = sorted((a for a in decision.agents if a.status != "excluded"), key=lambda a: a.rank or 99)
    excluded = [a for a in decision.agents if a.status == "excluded"]
    section = _section("Agents", (_agent_line(a, knowledge) for a in ranked + excluded))
    return f"{section}\n\n{knowledge.line('no_contraindication_line')}"


def _follow_on_line(item: FollowOnAssessment, knowledge: Knowledge) -> str:
    status = _STATUS.get(item.status, escape(item.status))
    reasons = _reasons(item.reasons)
    return f"{_follow_on_display(item.agent, knowledge)} ({status})" + (f": {reasons}" if reasons else "")


def follow_on_section(decision: Decision, knowledge: Knowledge) -> str:
    if decision.follow_on:
        return _section("Follow-on", (_follow_on_line(f, knowledge) for f in decision.follow_on))
    if "egfr" in decision.missing and (decision.agents or decision.outcome in ("ESCALATE", "CONSIDER")):
        return _section("Follow-on", [OBTAIN_EGFR_LINE])
    return ""


# ----- caveats, missing, sources -------------------------------------------------------------
def caveats_section(decision: Decision, knowledge: Knowledge) -> str:
    lines = [escape(c) for c in decision.caveats]
    gaps = list(decision.evidence.not_checked)
    gaps += [g for g in knowledge.concept_gap_lines if g not in gaps]
    lines += [escape(g) for g in gaps]
    if decision.evidence.aace_very_high_risk:
        lines.append(AACE_LINE)
    return _section("Caveats", lines)


def missing_section(decision: Decision, knowledge: Knowledge) -> str:
    return _section("Missing", (_missing_line(code, decision, knowledge) for code in decision.missing))


def sources_section(knowledge: Knowledge) -> str:
    lines: list[str] = []
    for src in knowledge.model.sources:
        label = escape(src.label)
        url = src.url
        if url and _SAFE_URL.match(url):
            # Parentheses (DOIs) percent-encoded so that the destination is plain: no `<`, no `)`.
            target = url.replace("(", "%28").replace(")", "%29")
            lines.append(f"[{label}]({target})")
        else:
            lines.append(label)
    return _section("Sources", lines)


def reasons_section(decision: Decision) -> str:
    return _section("Reasons", (escape(r) for r in decision.reasons))


# ----- assembly ------------------------------------------------------------------------------
def outcome_detail(decision: Decision, knowledge: Knowledge, *, with_suggestions: bool) -> str:
    """The outcome card's detail (without the pinned line)."""
    ev = decision.evidence
    parts: list[str] = []
    escalation = decision.outcome in ("ESCALATE", "CONSIDER")
    if escalation:
        if decision.rule != "R11":  # at target (R11): escalation criteria are not claimed
            parts.append(knowledge.line("criteria_line"))
        parts.append(knowledge.line("targets_line"))
    if decision.outcome == "NOT_ELIGIBLE_DURATION" and decision.reevaluate_from is not None:
        parts.append(f"Re-evaluate the response from {decision.reevaluate_from.isoformat()}.")
    parts.append(reasons_section(decision))
    if decision.outcome == "INSUFFICIENT_DATA":
        parts.append(missing_section(decision, knowledge))
    parts.append(evidence_section(decision, knowledge))
    agents = agents_section(decision, knowledge)
    parts.append(agents or (knowledge.line("no_contraindication_line") if escalation else ""))
    parts.append(_section("Phase plan", (escape(p) for p in ev.plan)))
    parts.append(follow_on_section(decision, knowledge))
    before = [escape(b) for b in ev.before_starting]
    if escalation and not any(_ANY_CALCIUM_LINE.search(t) for t in (*ev.before_starting, *decision.caveats)):
        before.append(knowledge.line("supplements_line"))
    parts.append(_section("Before starting", before))
    parts.append(_section("Monitoring", (escape(m) for m in ev.monitoring)))
    if with_suggestions:
        parts.append(knowledge.line("suggest_only_line"))
    parts.append(caveats_section(decision, knowledge))
    if decision.outcome != "INSUFFICIENT_DATA":
        parts.append(missing_section(decision, knowledge))
    parts.append(sources_section(knowledge))
    return "\n\n".join(p for p in parts if p)


def warning_detail(warning: WarningDetail, knowledge: Knowledge) -> str:
    """A warning card's detail: the evidence sentence and the fixed safety sentence."""
    safety = (
        knowledge.line("denosumab_overdue_detail")
        if warning.code == "DENOSUMAB_OVERDUE"
        else knowledge.line("follow_on_missing_detail")
    )
    return "\n\n".join(p for p in (escape(warning.text), safety) if p)
