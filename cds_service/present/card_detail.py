"""Markdown `detail` of the cards (protocol §8), in reading order (docs/cards.md).

First the lead sentence and at most eight lines of key evidence (the DXAs and deltas against the
targets, the exposure, the rank-1 agent and why, the labs); then, compact and deduplicated, the rest
(agents, plan, follow-on, before starting, monitoring, caveats, missing inputs, what is not checked).
Sources are card links, never links inside the detail.

Every string taken from the decision (and so possibly from FHIR) goes through `markdown_safe.escape`;
texts of the knowledge file are trusted; numbers are rounded by `card_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.texts import fill
from cds_service.present.card_text import (
    agent_display,
    bmd,
    delta_t,
    human_key,
    pct,
    plain,
    ranked,
    t_score,
    text,
    when_past,
)
from cds_service.present.markdown_safe import escape, escape_inline
from cds_service.rules.decision import (
    AgentAssessment,
    Decision,
    DxaEvidence,
    FollowOnAssessment,
    SiteResponse,
    WarningDetail,
)

KEY_EVIDENCE_MAX_LINES = 8
_FOLLOWUP_REASON = re.compile(r"DXA with total hip on or after", re.IGNORECASE)
_RESTATED = re.compile(r"^(total hip|lumbar spine)\b.*(ΔT|%)")
_DATED = re.compile(r"^(.*) \((\d{4}-\d{2}-\d{2})\)$")
_ANY_CALCIUM_LINE = re.compile(r"calcium and vitamin d", re.IGNORECASE)
# A high-risk reason "T-score -2.9 (lumbar spine, 2021-02-15) <= -2.5" whose value a DXA line shows.
_HIGH_RISK_T = re.compile(r"^T-score (\S+) \(([^,()]+), (\d{4}-\d{2}-\d{2})\) <= (\S+)$")
_UCUM_BSA = "{1.73_m2}"  # eGFR's UCUM annotation, written as a reader writes it
_SITES = {
    "total_hip": "total hip",
    "femoral_neck": "femoral neck",
    "lumbar_spine": "lumbar spine (L1–L4)",
    "radius": "1/3 radius",
    "other": "other site",
    "unknown": "site not determined",
}
_STATUS_ORDER = ("preferred", "option", "caution", "excluded")
_esc = escape_inline  # every fragment below follows a label or other text on its line


# ----- small formatters ----------------------------------------------------------------------
def _site(site: str) -> str:
    return _SITES.get(site) or _esc(human_key(site))


def _value(dxa: DxaEvidence) -> str:
    if dxa.kind == "t_score":
        return f"T {t_score(dxa.value)}"
    if dxa.kind == "bmd":
        return f"BMD {bmd(dxa.value)} g/cm²"
    return f"{_esc(human_key(dxa.kind))} {plain(dxa.value)}"


def _where(dxa: DxaEvidence) -> str:
    return _site(dxa.site) + (f" ({_esc(dxa.side)})" if dxa.side else "")


def _line(title: str, items: Iterable[str], sep: str = "; ") -> str:
    """`Title: a; b` (no bold: the label is plain text, the items say the rest)."""
    parts = [item for item in items if item]
    return f"{title}: " + sep.join(parts) if parts else ""


def _sentences(items: Iterable[str]) -> list[str]:
    """Items joined as sentences: each ends with a full stop."""
    return [item if item.endswith((".", "!", "?")) else item + "." for item in items if item]


def _follow_on_display(agent: str, knowledge: Knowledge) -> str:
    specs = {str(key): spec.display for key, spec in knowledge.model.follow_on_agents.items()}
    return specs.get(agent) or _esc(human_key(agent).capitalize())


def _reasons(reasons: Iterable[str]) -> str:
    return "; ".join(_esc(r) for r in reasons if r.strip())


# ----- key evidence --------------------------------------------------------------------------
def _pairs(decision: Decision) -> dict[tuple[str, str | None, str], list[DxaEvidence]]:
    """DXA values by (site, side, kind), baseline before follow-up, in the decision's order."""
    grouped: dict[tuple[str, str | None, str], list[DxaEvidence]] = {}
    for dxa in decision.evidence.dxa:
        grouped.setdefault((dxa.site, dxa.side, dxa.kind), []).append(dxa)
    return grouped


def _series(values: list[DxaEvidence], dates: tuple[date, date] | None) -> str:
    """`T -2.6 → -2.5` (dates in the DXA line) or with dates; one series per kind (T-score, BMD)."""
    kinds = list(dict.fromkeys(v.kind for v in values))
    if len(kinds) > 1:
        return "; ".join(_series([v for v in values if v.kind == kind], dates) for kind in kinds)
    shown = [v.date for v in values]
    if dates is not None and len(shown) > 1 and set(shown) <= set(dates):  # dates are in the DXA line
        return _value(values[0]) + "".join(
            f" → {t_score(v.value) if v.kind == 't_score' else bmd(v.value)}" for v in values[1:]
        )
    return " → ".join(f"{_value(v)} ({v.date.isoformat()})" for v in values)


def _targets(site: str, knowledge: Knowledge) -> tuple[Decimal | None, Decimal | None]:
    """The configured (ΔT, %) targets of a deciding site."""
    thresholds = knowledge.thresholds
    if site == "total_hip":
        return thresholds.target_delta_t_total_hip, thresholds.target_pct_total_hip
    if site == "lumbar_spine":
        return thresholds.target_delta_t_lumbar_spine, thresholds.target_pct_lumbar_spine
    return None, None


def _response_line(
    resp: SiteResponse, values: list[DxaEvidence], dates: tuple[date, date] | None, knowledge: Knowledge
) -> str:
    """`Total hip: T -2.6 → -2.5, ΔT +0.10 (≥ +0.20), +1.2 % (≥ +3 %, decides): not met`."""
    dt_target, pct_target = _targets(resp.site, knowledge)
    if resp.metric == "delta_t":
        dt_target = resp.target
    else:
        pct_target = resp.target
    both = resp.delta_t is not None and resp.pct_change is not None
    parts: list[str] = []
    if resp.delta_t is not None:
        target = f"≥ +{plain(dt_target)}" if dt_target is not None else ""
        decides = ", decides" if both and resp.metric == "delta_t" else ""
        parts.append(f"ΔT {delta_t(resp.delta_t)}" + (f" ({target}{decides})" if target else ""))
    if resp.pct_change is not None:
        target = f"≥ +{plain(pct_target)} %" if pct_target is not None else ""
        decides = ", decides" if both and resp.metric == "pct" else ""
        parts.append(f"{pct(resp.pct_change)} %" + (f" ({target}{decides})" if target else ""))
    verdict = "met" if resp.met else "not met"
    series = _series(values, dates) or f"{resp.baseline_date.isoformat()} → {resp.followup_date.isoformat()}"
    site = _where(values[0]) if values else _site(resp.site)
    return f"{site[:1].upper()}{site[1:]}: {series}, " + ", ".join(parts) + f": {verdict}"


def _dxa_lines(decision: Decision, knowledge: Knowledge) -> list[str]:
    """One line per deciding site, then one line with the DXA dates, scanner and the other sites."""
    grouped = _pairs(decision)
    responses = decision.evidence.responses
    dates = (responses[0].baseline_date, responses[0].followup_date) if responses else None
    lines: list[str] = []
    for resp in responses:
        key = next((k for k in grouped if k[0] == resp.site and k[2] in ("t_score", "bmd")), None)
        used = grouped.pop(key) if key else []
        other_kind = (key[0], key[1], "bmd" if key[2] == "t_score" else "t_score") if key else None
        if other_kind in grouped and resp.pct_change is not None and other_kind is not None:
            used += grouped.pop(other_kind)
        lines.append(_response_line(resp, used, dates, knowledge))
    head = f"DXA {dates[0].isoformat()} → {dates[1].isoformat()}:" if dates else "DXA:"
    scanners = sorted({_esc(d.scanner_status) for d in decision.evidence.dxa if d.role == "follow-up"})
    parts = [", ".join(scanners)] if scanners else []  # "same scanner", "scanner changed", ...
    parts += [f"{_where(values[0])} {_series(values, dates)}" for values in grouped.values()]
    if parts:
        lines.append(f"{head} " + "; ".join(parts))
    return lines


def stated_by_exposure(decision: Decision) -> str | None:
    """The adherence caveat that the exposure line states itself ("statements/orders only: adherence not
    verifiable"), so that the caveats do not repeat it; None when the caveats must say it."""
    exp = decision.evidence.exposure
    if exp is None or "(" not in exp.source_quality:
        return None
    note = exp.source_quality.split("(", 1)[1].rstrip(")")
    return next((c for c in decision.caveats if c.startswith(note) and "statements" in c), None)


def _exposure_line(decision: Decision) -> str:
    exp = decision.evidence.exposure
    if exp is None:
        return ""
    agents = ", ".join(_esc(human_key(a)) for a in exp.agents) or "no agent recorded"
    parts: list[str] = []
    if exp.therapy_start is not None:
        span = f"{agents} {exp.therapy_start.isoformat()}"
        if exp.span_end is not None:
            days = (exp.span_end - exp.therapy_start).days + 1
            span += f" → {exp.span_end.isoformat()} ({days} days)"
        parts.append(span)
    else:
        parts.append(agents)
    if exp.coverage_ratio is not None:
        parts.append(f"coverage {plain(exp.coverage_ratio)}")
    parts.append(f"longest gap {exp.longest_gap_days} days")
    line = _line("Exposure", parts, ", ")
    quality = exp.source_quality
    if "(" in quality:
        head, note = quality.split("(", 1)[0].strip(), quality.split("(", 1)[1].rstrip(")")
        if stated_by_exposure(decision) is not None:
            quality = f"{head} only: {note}"  # the caveat is said here, not repeated in the caveats
        elif any(note in c for c in decision.caveats):
            quality = head  # the caveats say the rest
    return line + (f"; {_esc(quality)}" if quality else "")


def _rank_one_line(decision: Decision, knowledge: Knowledge) -> str:
    order = ranked(decision.agents)
    if not order or decision.outcome not in ("ESCALATE", "CONSIDER"):
        return ""
    top = order[0]
    reasons = _reasons(top.reasons)
    head = f"Rank 1: {agent_display(top.agent, knowledge)} ({top.status})"
    return head + (f": {reasons}" if reasons else "")


def _labs_line(labs: Iterable[tuple[str, str]]) -> str:
    """Labs grouped by their date: `eGFR 75 mL/min/1.73 m², calcium 9.4 mg/dL (2025-03-01)`."""
    by_date: dict[str, list[str]] = {}
    for label, value in labs:
        dated = _DATED.match(value.replace(_UCUM_BSA, "1.73 m²"))
        shown, when = (dated.group(1), dated.group(2)) if dated else (value, "")
        by_date.setdefault(when, []).append(f"{_esc(label)} {_esc(shown)}")
    groups = [", ".join(items) + (f" ({when})" if when else "") for when, items in by_date.items()]
    return _line("Labs", groups)


def _reason(reason: str, decision: Decision) -> str:
    """A reason as the key evidence shows it: a high-risk T-score that a DXA line shows is not repeated."""
    found = _HIGH_RISK_T.match(reason)
    if found is None:
        return reason
    value, site, day, limit = found.groups()
    shown = any(
        dxa.kind == "t_score"
        and human_key(dxa.site) == site
        and dxa.date.isoformat() == day
        and t_score(dxa.value) == value
        for dxa in decision.evidence.dxa
    )
    return f"High risk: {site} T-score <= {limit}" if shown else reason


def key_evidence(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> list[str]:
    """At most eight lines: reasons, DXAs and deltas, exposure, rank-1 agent, labs, target, findings."""
    evidence = decision.evidence
    restated = _RESTATED if evidence.responses else None  # the response lines show these deltas
    reasons = [_reason(r, decision) for r in decision.reasons if restated is None or not restated.match(r)]
    lines = ["; ".join(_esc(r) for r in reasons if r.strip())]
    lines += _dxa_lines(decision, knowledge)
    lines.append(_exposure_line(decision))
    lines.append(_rank_one_line(decision, knowledge))
    lines.append(_labs_line(evidence.labs))
    if evidence.target_t is not None:
        lines.append(text(knowledge, "personalised_target_line", values))
    lines.append(_line("Findings", (_esc(f) for f in evidence.findings)))
    lines = [line for line in lines if line]
    if len(lines) > KEY_EVIDENCE_MAX_LINES:  # keep every value: fold the tail into the last line
        head, tail = lines[: KEY_EVIDENCE_MAX_LINES - 1], lines[KEY_EVIDENCE_MAX_LINES - 1 :]
        lines = [*head, "; ".join(tail)]
    return lines


# ----- the rest, compact ---------------------------------------------------------------------
def _agent_status(agent: AgentAssessment, ranked_view: bool) -> str:
    if agent.status == "excluded":
        return "excluded"
    if ranked_view:
        return f"{agent.rank}, {agent.status}"
    # specialist review: the protocol's rank is not a recommendation
    return f"rank {agent.rank}" + (", caution" if agent.status == "caution" else "")


def agents_line(decision: Decision, knowledge: Knowledge) -> str:
    """Every agent with rank and status (on an escalation card, every agent but the rank-1 one, which the
    key evidence shows with its reasons); agents sharing the same reasons are listed once with them."""
    if not decision.agents:
        return ""
    order = ranked(decision.agents)
    ranked_view = decision.outcome in ("ESCALATE", "CONSIDER")
    listed = [*order, *(a for a in decision.agents if a.status == "excluded")]
    if ranked_view and order:
        listed = listed[1:]  # the rank-1 line of the key evidence
    groups: dict[str, list[str]] = {}
    for position, agent in enumerate(listed):
        reasons = _reasons(agent.reasons)
        head = f"{agent_display(agent.agent, knowledge)} ({_agent_status(agent, ranked_view)})"
        groups.setdefault(reasons or f"\0{position}", []).append(head)
    items = [", ".join(heads) + ("" if why.startswith("\0") else f": {why}") for why, heads in groups.items()]
    return _line("Other agents" if ranked_view and order else "Agents", items)


def _grouped(items: Iterable[FollowOnAssessment], knowledge: Knowledge) -> str:
    by_status: dict[str, dict[str, list[str]]] = {}
    for item in items:
        reasons = _reasons(item.reasons)
        by_status.setdefault(item.status, {}).setdefault(reasons, []).append(
            _follow_on_display(item.agent, knowledge)
        )
    parts: list[str] = []
    for status in sorted(by_status, key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 9):
        groups = [", ".join(names) + (f" ({why})" if why else "") for why, names in by_status[status].items()]
        parts.append(f"{_esc(status)}: " + "; ".join(groups))
    return ". ".join(parts)


def follow_on_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    if decision.follow_on:
        return f"Follow-on: {_grouped(decision.follow_on, knowledge)}"
    if "egfr" in decision.missing and (decision.agents or decision.outcome in ("ESCALATE", "CONSIDER")):
        return f"Follow-on: {text(knowledge, 'obtain_egfr_line', values)}"
    return ""


def caveats_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    stated = stated_by_exposure(decision)
    lines = [_esc(c) for c in dict.fromkeys(decision.caveats) if c != stated]
    if decision.evidence.aace_very_high_risk:
        lines.append(text(knowledge, "aace_line", values))
    return _line("Caveats", lines)


def not_checked_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    concepts = [
        gap.concept + (f" ({gap.checked})" if gap.checked else "") for gap in knowledge.model.concept_gaps
    ]
    listed = {gap.concept for gap in knowledge.model.concept_gaps}
    concepts += [
        _esc(line.split(":", 1)[0])
        for line in decision.evidence.not_checked
        if line.split(":", 1)[0] not in listed
    ]
    return text(knowledge, "not_checked_line", values, concepts="; ".join(concepts)) if concepts else ""


def _missing_line(code: str, decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    template = knowledge.texts.missing_lines.get(code)
    line = fill(template, values) if template else f"{_esc(human_key(code))}: not available."
    if code == "followup_dxa":
        wanted = [_esc(r) for r in decision.reasons if _FOLLOWUP_REASON.search(r)]
        if wanted:
            line += " Required: " + "; ".join(wanted) + "."
    return line


def missing_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    return _line(
        "Missing", (_missing_line(code, decision, knowledge, values) for code in decision.missing), " "
    )


# ----- assembly ------------------------------------------------------------------------------
def _lead(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> list[str]:
    outcome = decision.outcome
    if outcome in ("ESCALATE", "CONSIDER") and decision.rule != "R11":
        return [text(knowledge, "criteria_line", values)]
    if outcome == "NOT_ELIGIBLE_DURATION" and decision.reevaluate_from is not None:
        return [text(knowledge, "reevaluate_line", values)]
    if outcome == "ON_ANABOLIC" and when_past(decision.planned_end, decision.as_of):
        return [text(knowledge, "ended_line", values)]
    if outcome == "SPECIALIST_REVIEW" and decision.agents:
        return [text(knowledge, "specialist_agents_line", values)]
    return []


def outcome_detail(
    decision: Decision, knowledge: Knowledge, values: dict[str, str], *, with_suggestions: bool
) -> str:
    """The outcome card's detail (without the pinned line)."""
    evidence = decision.evidence
    escalation = decision.outcome in ("ESCALATE", "CONSIDER")
    lead = _lead(decision, knowledge, values)
    if decision.outcome == "INSUFFICIENT_DATA":
        lead.append(missing_line(decision, knowledge, values))
    key = "\n".join(f"- {line}" for line in key_evidence(decision, knowledge, values))
    rest: list[str] = [agents_line(decision, knowledge)]
    if escalation:
        rest.append(text(knowledge, "no_contraindication_line", values))
    rest.append(_line("Plan", _sentences(_esc(p) for p in evidence.plan), " "))
    rest.append(follow_on_line(decision, knowledge, values))
    before = [_esc(b) for b in evidence.before_starting]
    if escalation and not any(
        _ANY_CALCIUM_LINE.search(t) for t in (*evidence.before_starting, *decision.caveats)
    ):
        before.append(text(knowledge, "supplements_line", values))
    rest.append(_line("Before starting", _sentences(before), " "))
    rest.append(_line("Monitoring", _sentences(_esc(m) for m in evidence.monitoring), " "))
    rest.append(caveats_line(decision, knowledge, values))
    if decision.outcome != "INSUFFICIENT_DATA":
        rest.append(missing_line(decision, knowledge, values))
    rest.append(not_checked_line(decision, knowledge, values))
    if escalation:
        rest.append(text(knowledge, "targets_line", values))
    if with_suggestions:
        rest.append(text(knowledge, "suggest_only_line", values))
    rest.append(_line("Also cited", (src.label for src in knowledge.model.sources if not src.url)))
    blocks = [*lead, key, "\n\n".join(r for r in rest if r)]
    return "\n\n".join(b for b in blocks if b)


def warning_detail(warning: WarningDetail, knowledge: Knowledge, values: dict[str, str]) -> str:
    """A warning card's detail: the evidence sentence and the fixed safety sentence."""
    name = "denosumab_overdue_detail" if warning.code == "DENOSUMAB_OVERDUE" else "follow_on_missing_detail"
    return "\n\n".join(p for p in (escape(warning.text), text(knowledge, name, values)) if p)
