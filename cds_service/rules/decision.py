"""The protocol's output: the decision object of protocol §9 plus the evidence the card shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from cds_service.core.frozen_init import one_step_init

Outcome = Literal[
    "ESCALATE",
    "CONSIDER",
    "RESPONSE_MET",
    "NOT_ELIGIBLE_NOT_HIGH_RISK",
    "NOT_ELIGIBLE_NO_FIRST_LINE",
    "NOT_ELIGIBLE_DURATION",
    "NOT_ELIGIBLE_ADHERENCE",
    "VERY_HIGH_RISK_PATHWAY",
    "SPECIALIST_REVIEW",
    "INSUFFICIENT_DATA",
    "NOT_APPLICABLE",
    "ON_ANABOLIC",
]
AgentStatus = Literal["preferred", "option", "caution", "excluded"]
WarningCode = Literal["DENOSUMAB_OVERDUE", "ANABOLIC_FOLLOW_ON_MISSING"]

ANABOLICS = ("romosozumab", "teriparatide", "abaloparatide")
FOLLOW_ON_AGENTS = ("alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab")


@one_step_init
@dataclass(frozen=True)
class AgentAssessment:
    agent: str
    status: AgentStatus
    rank: int | None
    reasons: tuple[str, ...] = ()
    # The reasons that make the status `caution` (for the card's button; not in the JSON object).
    cautions: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": self.agent}
        if self.rank is not None:
            out["rank"] = self.rank
        out["status"] = self.status
        out["reasons"] = list(self.reasons)
        return out


@one_step_init
@dataclass(frozen=True)
class FollowOnAssessment:
    agent: str
    status: AgentStatus
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "status": self.status, "reasons": list(self.reasons)}


@one_step_init
@dataclass(frozen=True)
class DxaEvidence:
    """One DXA value used by the decision (for the card's evidence table)."""

    date: date
    site: str
    side: str | None
    kind: str  # t_score | bmd
    value: Decimal
    scanner_status: str  # "same scanner", "assumed same scanner", "scanner changed", "baseline"
    role: str  # "baseline" | "follow-up" | "diagnosis"


@one_step_init
@dataclass(frozen=True)
class SiteResponse:
    """Response at one deciding site (total hip or lumbar spine)."""

    site: str
    baseline_date: date
    followup_date: date
    delta_t: Decimal | None  # rounded half-up to 0.01
    pct_change: Decimal | None  # rounded half-up to 0.1
    metric: Literal["pct", "delta_t"]  # which one decided
    target: Decimal
    met: bool


@one_step_init
@dataclass(frozen=True)
class ExposureSummary:
    agents: tuple[str, ...]
    therapy_start: date | None
    span_end: date | None
    coverage_ratio: Decimal | None  # rounded to 0.01
    longest_gap_days: int
    source_quality: str  # "administrations/dispenses", "statements/orders only (adherence not verifiable)"


@one_step_init
@dataclass(frozen=True)
class Evidence:
    dxa: tuple[DxaEvidence, ...] = ()
    responses: tuple[SiteResponse, ...] = ()
    exposure: ExposureSummary | None = None
    labs: tuple[tuple[str, str], ...] = ()  # (label, "value unit (date)")
    findings: tuple[str, ...] = ()  # relevant conditions with dates, already human-readable
    not_checked: tuple[str, ...] = ()  # concepts without a code list: "<concept>: not checked, no code list"
    plan: tuple[str, ...] = ()  # phase plan lines (transition, anabolic phase, follow-on)
    plan_start: date | None = (
        None  # the anabolic start the plan states when after as_of (next denosumab dose)
    )
    monitoring: tuple[str, ...] = ()
    before_starting: tuple[str, ...] = ()
    target_t: Decimal | None = None
    aace_very_high_risk: bool = False


@one_step_init
@dataclass(frozen=True)
class WarningDetail:
    code: WarningCode
    text: str  # evidence sentence, e.g. "last denosumab 60 mg injection 2024-07-15 (321 days ago)"
    # For the card summary (not in the JSON object): the last denosumab injection or the end of the
    # anabolic course, when the next dose or the follow-on was due, and the course's anabolic.
    last: date | None = field(default=None, compare=False)
    due: date | None = field(default=None, compare=False)
    agent: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule: str
    as_of: date
    protocol_version: str
    reasons: tuple[str, ...] = ()
    agents: tuple[AgentAssessment, ...] = ()
    follow_on: tuple[FollowOnAssessment, ...] = ()
    warnings: tuple[WarningDetail, ...] = ()
    missing: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()
    reevaluate_from: date | None = None
    evidence: Evidence = field(default_factory=Evidence)
    in_scope: bool = False  # osteoporosis diagnosis, an osteoporosis drug, or any T <= -2.5
    suggestions_allowed: bool = False  # ESCALATE, or CONSIDER capped by R9b/R9c/§3a (never R11)
    on_anabolic_card: bool = False  # ON_ANABOLIC: planned end within 90 days and no follow-on planned
    first_line_agent: str | None = None  # agent covering the follow-up DXA (for the summary)
    anabolic_agent: str | None = None  # ON_ANABOLIC: the running agent
    planned_end: date | None = None  # ON_ANABOLIC: planned end of the running course

    def to_json(self) -> dict[str, Any]:
        """The fixed decision object of protocol §9 (every key present)."""
        out: dict[str, Any] = {
            "outcome": self.outcome,
            "rule": self.rule,
            "as_of": self.as_of.isoformat(),
            "protocol_version": self.protocol_version,
            "reasons": list(self.reasons),
            "agents": [a.to_json() for a in self.agents],
            "follow_on": [f.to_json() for f in self.follow_on],
            "warnings": [w.code for w in self.warnings],
            "missing": list(self.missing),
            "caveats": list(self.caveats),
        }
        if self.reevaluate_from is not None:
            out["reevaluate_from"] = self.reevaluate_from.isoformat()
        return out
