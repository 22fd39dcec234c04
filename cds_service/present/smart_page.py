"""The SMART app's HTML (Jinja2, autoescaped): the decision with its evidence, the charts, the data
tables behind them and the override-reason form; and the refusal page. Pure: no Flask, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from importlib.resources import files
from typing import Any, Final

from jinja2 import Environment, PackageLoader, select_autoescape

from cds_service.knowledge.indexed import Knowledge
from cds_service.present.card_text import agent_display, human_key, missing_name
from cds_service.present.cards import TOPIC_DISPLAY
from cds_service.present.smart_chart import bmd_chart, timeline_chart
from cds_service.present.smart_view import Bar, PatientView, site_label
from cds_service.rules.decision import Decision, SiteResponse

_ENV: Final = Environment(
    loader=PackageLoader("cds_service.present", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
STYLESHEET: Final = files("cds_service.present").joinpath("static/smart.css").read_text(encoding="utf-8")


@dataclass(frozen=True)
class PageLinks:
    css_url: str
    feedback_url: str


def render_refused(title: str, detail: str, links: PageLinks) -> str:
    return _ENV.get_template("smart/refused.html").render(title=title, detail=detail, css_url=links.css_url)


def _bars(bars: tuple[Bar, ...]) -> str:
    return "; ".join(f"{b.start.isoformat()} to {b.end.isoformat()}" for b in bars) or "none"


def _signed(value: Decimal | None, unit: str) -> str:
    return "not available" if value is None else f"{value:+}{unit}"


def _response_row(response: SiteResponse) -> dict[str, str]:
    unit = " T" if response.metric == "delta_t" else " %"
    return {
        "site": site_label(response.site),
        "baseline": response.baseline_date.isoformat(),
        "followup": response.followup_date.isoformat(),
        "delta_t": _signed(response.delta_t, " T"),
        "pct": _signed(response.pct_change, " %"),
        "target": f"+{response.target}{unit}",
        "met": "yes" if response.met else "no",
    }


def render_app(
    view: PatientView,
    decision: Decision,
    knowledge: Knowledge,
    *,
    decision_id: str | None,
    csrf: str,
    feedback_sent: bool,
    links: PageLinks,
) -> str:
    evidence = decision.evidence
    exposure = evidence.exposure
    exposure_text = ""
    if exposure is not None:
        agents = ", ".join(human_key(a) for a in exposure.agents)
        start = exposure.therapy_start.isoformat() if exposure.therapy_start else "unknown start"
        ratio = exposure.coverage_ratio if exposure.coverage_ratio is not None else "n/a"
        exposure_text = (
            f"{agents} from {start}; coverage {ratio}, "
            f"longest gap {exposure.longest_gap_days} days ({exposure.source_quality})"
        )
    points = [
        {
            "day": p.day,
            "site": site_label(p.site),
            "side": p.side or "",
            "measure": "T-score",
            "value": p.value,
            "scanner": p.scanner,
        }
        for p in view.t_scores
    ] + [
        {
            "day": p.day,
            "site": site_label(p.site),
            "side": p.side or "",
            "measure": "BMD g/cm²",
            "value": p.value,
            "scanner": p.scanner,
        }
        for p in view.bmd_values
    ]
    context: dict[str, Any] = {
        "css_url": links.css_url,
        "feedback_url": links.feedback_url,
        "outcome_title": TOPIC_DISPLAY.get(decision.outcome, human_key(decision.outcome)),
        "decision": decision,
        "decision_id": decision_id,
        "csrf": csrf,
        "feedback_sent": feedback_sent,
        "agents": [
            {
                "name": agent_display(a.agent, knowledge),
                "status": a.status,
                "reasons": "; ".join(a.reasons) or "—",
            }
            for a in sorted(decision.agents, key=lambda a: (a.rank is None, a.rank or 0))
        ],
        "missing": [missing_name(m, knowledge) for m in decision.missing],
        "evidence": evidence,
        "responses": [_response_row(r) for r in evidence.responses],
        "exposure_text": exposure_text,
        "evidence_lists": [
            ("Labs", [f"{label}: {value}" for label, value in evidence.labs]),
            ("Findings", list(evidence.findings)),
            ("Phase plan", list(evidence.plan)),
            ("Before starting", list(evidence.before_starting)),
            ("Monitoring", list(evidence.monitoring)),
            ("Not checked", list(evidence.not_checked)),
        ],
        "t_chart": bmd_chart(view, "t_score"),
        "bmd_chart": bmd_chart(view, "bmd"),
        "points": sorted(points, key=lambda p: (p["day"], p["site"], p["side"])),
        "timeline": timeline_chart(view),
        "rows": [
            {
                "label": row.label,
                "covered": _bars(row.covered),
                "gaps": _bars(row.gaps),
                "doses": ", ".join(d.isoformat() for d in row.doses) or "—",
            }
            for row in view.treatment
        ],
        "override_reasons": knowledge.model.override_reasons,
    }
    return _ENV.get_template("smart/app.html").render(**context)
