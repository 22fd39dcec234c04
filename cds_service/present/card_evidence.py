"""The key evidence of a card's detail: at most eight lines (docs/cards.md, reading order 3).

The decision's reasons (a delta or a high-risk T-score that a DXA line shows is not restated), one line
per deciding site with the values, ΔT and % change against their targets, one line with the DXA dates,
scanner status and the other sites, the exposure, the rank-1 agent and why, the labs, the personalised
target and findings. Strings from the decision are escaped; numbers are rounded by `card_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from cds_service.knowledge.indexed import Knowledge
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
)
from cds_service.present.markdown_safe import escape_inline
from cds_service.rules.decision import Decision, DxaEvidence, SiteResponse

KEY_EVIDENCE_MAX_LINES = 8
_RESTATED = re.compile(r"^(total hip|lumbar spine)\b.*(ΔT|%)")
_DATED = re.compile(r"^(.*) \((\d{4}-\d{2}-\d{2})\)$")
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


def labelled(title: str, items: Iterable[str], sep: str = "; ") -> str:
    """`Title: a; b` (no bold: the label is plain text, the items say the rest)."""
    parts = [item for item in items if item]
    return f"{title}: " + sep.join(parts) if parts else ""


def reasons_text(reasons: Iterable[str]) -> str:
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
    line = labelled("Exposure", parts, ", ")
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
    reasons = reasons_text(top.reasons)
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
    return labelled("Labs", groups)


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
    lines.append(labelled("Findings", (_esc(f) for f in evidence.findings)))
    lines = [line for line in lines if line]
    if len(lines) > KEY_EVIDENCE_MAX_LINES:  # keep every value: fold the tail into the last line
        head, tail = lines[: KEY_EVIDENCE_MAX_LINES - 1], lines[KEY_EVIDENCE_MAX_LINES - 1 :]
        lines = [*head, "; ".join(tail)]
    return lines
