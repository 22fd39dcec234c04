"""The decision table (protocol §3): `evaluate(record, knowledge, as_of) -> Decision`.

Pure: no I/O, no clock. Rules are checked in order and the first that matches decides.
Missing data never leads to ESCALATE (§3a): blocking gaps give INSUFFICIENT_DATA, the others cap
the outcome at CONSIDER.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import NoReturn

from cds_service.clinical import bmd, history
from cds_service.clinical.agents import AgentContext, findings_for, follow_on, rank_agents
from cds_service.clinical.dates import Interval, add_days, add_months, age_on
from cds_service.clinical.decision import (
    Decision,
    Evidence,
    ExposureSummary,
    Outcome,
    SiteResponse,
    WarningDetail,
)
from cds_service.clinical.exposure import (
    BISPHOSPHONATES,
    AgentExposure,
    AnabolicCourse,
    adherence,
    agent_exposures,
    anabolic_courses,
    first_line_union,
    prior_denosumab_days,
    pth_use_days,
    romosozumab_doses,
    therapy_start,
)
from cds_service.clinical.facts import PatientRecord
from cds_service.clinical.labs import LabStatus, assess_labs
from cds_service.clinical.plan import MONITORING, before_starting, phase_plan
from cds_service.clinical.warnings import denosumab_overdue, follow_on_missing
from cds_service.knowledge.loader import Knowledge

CAPPING_MISSING = ("target_t_score", "egfr", "calcium", "alkaline_phosphatase", "unreadable_resources")
DIAGNOSTIC_T_SITES = ("total_hip", "femoral_neck", "lumbar_spine", "radius", "unknown")


class _Done(Exception):  # noqa: N818 - control flow inside one evaluation only
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.outcome)
        self.decision = decision


class _Evaluation:
    """State of one evaluation; each `_rule_*` method either returns or raises `_Done`."""

    def __init__(self, record: PatientRecord, knowledge: Knowledge, as_of: date) -> None:
        self.r = record
        self.k = knowledge
        self.as_of = as_of
        self.caveats: list[str] = list(record.caveats)
        self.missing: list[str] = []
        self.reasons: list[str] = []
        self.warnings: list[WarningDetail] = []
        self.cap_reasons: list[str] = []
        self.evidence = Evidence(not_checked=knowledge.concept_gap_lines)
        self.exposures = agent_exposures(record.medications, as_of, knowledge)
        self.courses = anabolic_courses(self.exposures, as_of, knowledge)
        self.first_line = first_line_union(self.exposures)
        self.labs = assess_labs(record.labs, as_of, knowledge)
        self.sex = record.demographics.sex if record.demographics else "unknown"
        self.first_line_agent: str | None = None
        self.in_scope = self._in_scope()
        for kind, count in record.unreadable:
            self.caveats.append(f"{count} {kind} entries could not be read")
        if record.unreadable:
            self._miss("unreadable_resources")

    # ----- helpers ---------------------------------------------------------------------------
    def _miss(self, code: str) -> None:
        if code not in self.missing:
            self.missing.append(code)

    def _caveat(self, text: str) -> None:
        if text not in self.caveats:
            self.caveats.append(text)

    def _in_scope(self) -> bool:
        if history.with_concept(self.r.findings, "osteoporosis"):
            return True
        if any(m.role in ("first_line", "anabolic") for m in self.r.medications):
            return True
        return any(v.kind == "t_score" and v.value <= self.k.t.t_score_osteoporosis for v in self.r.bmd)

    def decide(self, outcome: Outcome, rule: str, **extra: object) -> Decision:
        return Decision(
            outcome=outcome,
            rule=rule,
            as_of=self.as_of,
            protocol_version=self.k.protocol_version,
            reasons=tuple(self.reasons),
            warnings=tuple(self.warnings),
            missing=tuple(self.missing),
            caveats=tuple(self.caveats),
            evidence=self.evidence,
            in_scope=self.in_scope,
            first_line_agent=self.first_line_agent,
            **extra,  # type: ignore[arg-type]
        )

    def done(self, outcome: Outcome, rule: str, reason: str | None = None, **extra: object) -> NoReturn:
        if reason:
            self.reasons.append(reason)
        raise _Done(self.decide(outcome, rule, **extra))

    def agent_context(self, hip_failing: bool = False, bisphosphonate_before_followup: bool = False) -> AgentContext:
        f = self.r.findings
        denosumab = self.exposures.get("denosumab")
        caution_from = add_months(self.as_of, -self.k.w.pth_caution_denosumab_months)
        den_recent = bool(denosumab and any(caution_from <= d <= self.as_of for d in denosumab.dose_dates))
        if denosumab and not denosumab.dose_dates:
            den_recent = any(iv.end >= caution_from for iv in denosumab.intervals)
        romo = self.exposures.get("romosozumab")
        hpt = history.hyperparathyroidism_types(f, self.k)
        return AgentContext(
            sex=self.sex,
            cv=history.assess_cv(f, self.as_of, self.k),
            labs=self.labs,
            romosozumab_doses=romosozumab_doses(romo, self.as_of) if romo else 0,
            pth_use_days=pth_use_days(self.exposures, self.as_of),
            paget=tuple(history.with_concept(f, "paget_disease_of_bone")),
            alp_unexplained=self._alp_unexplained(),
            skeletal_radiation=tuple(history.with_concept(f, "skeletal_radiation")),
            radiotherapy_any=tuple(history.with_concept(f, "radiotherapy_any")),
            bone_malignancy=tuple(history.with_concept(f, "bone_malignancy")),
            primary_hpt_active="primary_tertiary_familial" in hpt,
            denosumab_within_caution_window=den_recent,
            prior_denosumab_12_months=prior_denosumab_days(denosumab, self.k)
            >= self.k.w.prior_denosumab_min_days,
            hip_failing=hip_failing,
            bisphosphonate_before_followup=bisphosphonate_before_followup,
            allergies={a: tuple(history.allergies_to(f, a)) for a in ("romosozumab", "teriparatide", "abaloparatide")},
        )

    def _alp_unexplained(self) -> bool:
        if not self.labs.alp_high:
            return False
        f = self.r.findings
        fractures = history.assess_fractures(
            f, self.r.demographics.birth_date if self.r.demographics else None, self.as_of, self.k
        )
        return not history.with_concept(f, "paget_disease_of_bone") and not fractures.within_months

    # ----- warnings --------------------------------------------------------------------------
    def compute_warnings(self) -> None:
        warning, caveat = denosumab_overdue(
            self.exposures.get("denosumab"),
            self.first_line,
            self.as_of,
            self.k.w.denosumab_max_interval_days,
            self.k.w.denosumab_overdue_max_months,
        )
        if warning:
            self.warnings.append(warning)
        if caveat:
            self._caveat(caveat)
        missing = follow_on_missing(self.courses, self.first_line, self.as_of, self.k.w.follow_on_missing_months)
        if missing:
            self.warnings.append(missing)

    # ----- rules -----------------------------------------------------------------------------
    def rule_demographics(self) -> None:
        demo = self.r.demographics
        if demo and demo.deceased:
            self.done("NOT_APPLICABLE", "R0", "patient is deceased")
        self.compute_warnings()
        if demo is None or demo.birth_date is None:
            self._miss("birth_date")
            self.done("INSUFFICIENT_DATA", "R0b", "no Patient or no birth date in the record")
        age = age_on(demo.birth_date, self.as_of)
        if age < self.k.t.min_age_years:
            self.done(
                "NOT_APPLICABLE",
                "R1",
                f"age {age} < {self.k.t.min_age_years}: younger adults need Z-score and secondary-cause assessment",
            )

    def rule_malignancy(self) -> None:
        f = self.r.findings
        bone = history.with_concept(f, "bone_malignancy")
        if bone:
            self.done("SPECIALIST_REVIEW", "R2", "skeletal malignancy or bone metastasis: " + history.describe(bone[0]))
        oncology = [m for m in self.r.medications if m.role == "oncology_dose" or m.strength == "oncology"]
        if oncology:
            self.done("SPECIALIST_REVIEW", "R2", f"oncology-dose bone agent on record: {oncology[0].label or oncology[0].agent}")
        unknown = [m for m in self.r.medications if m.strength == "unknown" and m.role == "first_line"]
        if unknown and history.has_cancer(f):
            self.done(
                "SPECIALIST_REVIEW",
                "R2",
                f"{unknown[0].agent.replace('_', ' ')} of unknown strength in a patient with a cancer diagnosis",
            )
        if unknown:
            self._caveat("dose not recorded: oncology use not excluded")

    def rule_anabolic(self) -> None:
        current = [c for c in self.courses if c.interval.contains(self.as_of)]
        completed = [c for c in self.courses if c.interval.end < self.as_of]
        if current:
            self._on_anabolic(current[-1])
        if completed:
            last = completed[-1]
            self.evidence = replace(self.evidence, findings=(f"{last.agent} course {last.interval.start} to {last.interval.end}",))
            agents = rank_agents(self.agent_context(), self.k)
            self.done(
                "SPECIALIST_REVIEW",
                "R3c",
                "the sequential step was already taken; a second anabolic course is a specialist decision",
                agents=agents,
                follow_on=self._follow_on(agents),
            )

    def _on_anabolic(self, course: AnabolicCourse) -> None:
        ctx = self.agent_context()
        excluded, _ = findings_for(course.agent, ctx, self.k, usage_limits=False)
        if course.requests_only and course.first_request_date:
            self._caveat(
                f"ordered {course.first_request_date.isoformat()}; no dispensing or administration recorded — confirm started"
            )
        if excluded:
            self.done("SPECIALIST_REVIEW", "R3", f"contraindication recorded during {course.agent}: " + "; ".join(excluded))
        at_limit = findings_for(course.agent, ctx, self.k, usage_limits=True)[0] != excluded
        self.reasons.append(f"{course.agent} course running since {course.interval.start.isoformat()}; planned end {course.planned_end.isoformat()}")
        if at_limit:
            self.reasons.append("course limit reached: start the follow-on")
        soon = course.planned_end <= add_days(self.as_of, self.k.w.on_anabolic_card_days) or at_limit
        card = soon and not self._follow_on_planned(course)
        self.evidence = replace(self.evidence, plan=(f"Planned end of {course.agent}: {course.planned_end.isoformat()}",))
        self.done(
            "ON_ANABOLIC",
            "R3",
            on_anabolic_card=card,
            anabolic_agent=course.agent,
            planned_end=course.planned_end,
        )

    def _follow_on_planned(self, course: AnabolicCourse) -> bool:
        return any(
            m.role == "first_line"
            and m.source == "request"
            and m.intent in ("order", "original-order")
            and m.status in ("active", "on-hold")
            and m.event_date is not None
            and m.event_date >= course.interval.start
            for m in self.r.medications
        )

    def rule_very_high_risk(self) -> None:
        demo = self.r.demographics
        fx = history.assess_fractures(self.r.findings, demo.birth_date if demo else None, self.as_of, self.k)
        self.fractures = fx
        if fx.distinct_vertebral >= 2:
            self.evidence = replace(self.evidence, findings=tuple(history.describe(f) for f in fx.vertebral))
            self.done("VERY_HIGH_RISK_PATHWAY", "R4", f"{fx.distinct_vertebral} distinct vertebral fractures")
        if fx.recent_fragility is not None:
            if fx.recent_is_possible_fragility:
                self._caveat("confirm low-trauma mechanism (fracture not coded as osteoporotic)")
            self.evidence = replace(self.evidence, findings=(history.describe(fx.recent_fragility),))
            self.done(
                "VERY_HIGH_RISK_PATHWAY",
                "R4",
                f"fragility fracture within {self.k.w.recent_fracture_months} months: "
                + history.describe(fx.recent_fragility),
            )

    def rule_high_risk(self) -> None:
        t = self.k.t
        diag = [v for v in self.r.bmd if v.kind == "t_score" and v.site in DIAGNOSTIC_T_SITES and v.date <= self.as_of]
        low = [v for v in diag if v.value <= t.t_score_osteoporosis]
        mof = max((f for f in self.r.frax if f.kind == "mof" and f.date <= self.as_of), key=lambda f: f.date, default=None)
        hip = max((f for f in self.r.frax if f.kind == "hip" and f.date <= self.as_of), key=lambda f: f.date, default=None)
        if low:
            lowest = min(low, key=lambda v: v.value)
            if lowest.site == "unknown":
                self._caveat("a T-score of undetermined site was used for the diagnosis only")
            self.reasons.append(f"T-score {lowest.value} ({lowest.site.replace('_', ' ')}, {lowest.date.isoformat()}) <= {t.t_score_osteoporosis}")
        elif mof and mof.value >= t.frax_mof_high_risk:
            self.reasons.append(f"FRAX major osteoporotic fracture {mof.value} % ({mof.date.isoformat()}) >= {t.frax_mof_high_risk} %")
        elif hip and hip.value >= t.frax_hip_high_risk and self._recent_lowest_t_in_low_mass():
            self.reasons.append(f"FRAX hip {hip.value} % ({hip.date.isoformat()}) >= {t.frax_hip_high_risk} % with low bone mass")
        elif not diag and not self.r.frax:
            if history.with_concept(self.r.findings, "osteoporosis"):
                self.cap_reasons.append("high risk presumed from the coded diagnosis")
                self._caveat("high risk presumed from the coded diagnosis")
            else:
                self._miss("bmd_or_frax")
                self.done("INSUFFICIENT_DATA", "R5", "no T-score at the diagnostic sites and no FRAX")
        else:
            self.done("NOT_ELIGIBLE_NOT_HIGH_RISK", "R5", "no high-risk criterion met (T-score, FRAX)")
        if not self.r.frax:
            self._caveat("FRAX not on record")
        self._aace()

    def _recent_lowest_t_in_low_mass(self) -> bool:
        scans = [s for s in bmd.group_scans(self.r.bmd, self.as_of) if any(v.kind == "t_score" for v in s.values)]
        if not scans:
            return False
        latest_date = scans[-1].date
        values = [v.value for s in scans if s.date == latest_date for v in s.values if v.kind == "t_score"]
        lowest = min(values)
        return self.k.t.t_score_osteoporosis < lowest <= self.k.t.t_score_low_bone_mass

    def _aace(self) -> None:
        t = self.k.t
        very_low = any(v.kind == "t_score" and v.value < t.aace_t_score for v in self.r.bmd if v.date <= self.as_of)
        frax_high = any(
            (f.kind == "mof" and f.value > t.aace_frax_mof) or (f.kind == "hip" and f.value > t.aace_frax_hip)
            for f in self.r.frax
            if f.date <= self.as_of
        )
        if very_low or frax_high:
            self.evidence = replace(self.evidence, aace_very_high_risk=True)

    def rule_first_line(self) -> date:
        records = [m for m in self.r.medications if m.role == "first_line" and m.strength != "oncology"]
        if not records:
            if not self.r.any_medication_resource:
                self._miss("medication_history")
                self.done("INSUFFICIENT_DATA", "R6", "no medication records at all")
            self.done("NOT_ELIGIBLE_NO_FIRST_LINE", "R6", "no first-line anti-resorptive in the record")
        if any(m.matched_by_name for m in records):
            self._caveat("medication identified by name")
        fl_exposures = [e for e in self.exposures.values() if e.role == "first_line"]
        if fl_exposures and all(not e.verified for e in fl_exposures):
            only_orders = all(e.requests_only for e in fl_exposures)
            self._caveat("adherence not verifiable (orders only)" if only_orders else "adherence not verifiable (statements or orders only)")
        start = therapy_start(self.first_line, self.courses, self.as_of, self.k)
        if start is None:
            self._miss("medication_history")
            self.done("INSUFFICIENT_DATA", "R6", "first-line therapy recorded without usable dates")
        return start

    def rule_duration(self, start: date) -> None:
        reevaluate = add_months(start, self.k.w.therapy_min_months)
        if reevaluate > self.as_of:
            self.done(
                "NOT_ELIGIBLE_DURATION",
                "R7",
                f"first-line therapy since {start.isoformat()}: under {self.k.w.therapy_min_months} months",
                reevaluate_from=reevaluate,
            )

    def _agent_covering(self, day: date) -> tuple[str, Interval] | None:
        """The first-line agent covering `day`, else the one whose coverage ended last before it."""
        best: tuple[str, Interval] | None = None
        for exp in self.exposures.values():
            if exp.role != "first_line":
                continue
            for iv in exp.intervals:
                if iv.contains(day):
                    return exp.agent, iv
                if iv.end < day and (best is None or iv.end > best[1].end):
                    best = (exp.agent, iv)
        return best

    def rule_followup(self, start: date, scans: list[bmd.Scan]) -> list[bmd.Scan]:
        window = bmd.followup_window_start(start, self.k)
        candidates = bmd.followup_candidates(scans, start, self.as_of, self.k)
        for day in self.r.dxa_reports_without_values:
            self._caveat(f"DXA report {day.isoformat()} has no discrete values")
        if not candidates:
            self._miss("followup_dxa")
            self.done("INSUFFICIENT_DATA", "R7f", f"DXA with total hip on or after {window.isoformat()}")
        fresh = [s for s in candidates if not bmd.is_stale(s, self.as_of, self.k)]
        if not fresh:
            self._miss("followup_dxa")
            self.done(
                "INSUFFICIENT_DATA",
                "R7f",
                f"latest follow-up DXA {candidates[-1].date.isoformat()} is older than "
                f"{self.k.w.followup_max_age_months} months: repeat DXA with total hip",
            )
        return fresh

    def rule_holiday_and_adherence(self, start: date, followup_date: date) -> None:
        covering = self._agent_covering(followup_date)
        if covering:
            self.first_line_agent = covering[0]
        if covering and not covering[1].contains(followup_date):
            agent, iv = covering
            holiday = False
            if agent in BISPHOSPHONATES:
                holiday = iv.end < add_months(followup_date, -self.k.w.holiday_bisphosphonate_months)
            elif agent == "denosumab":
                doses = [d for d in self.exposures["denosumab"].dose_dates if d <= followup_date]
                last = doses[-1] if doses else iv.start
                holiday = (followup_date - last).days > self.k.w.denosumab_max_interval_days
            if holiday:
                self.done(
                    "SPECIALIST_REVIEW",
                    "R7h",
                    f"drug holiday: {agent.replace('_', ' ')} coverage ended {iv.end.isoformat()}, before the "
                    f"follow-up DXA {followup_date.isoformat()}: change reflects time off therapy, not non-response",
                )
        span = Interval(start, max(start, followup_date))
        adh = adherence(self.first_line, span, self.exposures.get("denosumab"))
        agents = tuple(sorted(e.agent for e in self.exposures.values() if e.role == "first_line"))
        quality = (
            "administrations/dispenses"
            if all(self.exposures[a].verified for a in agents)
            else "statements/orders (adherence not verifiable)"
        )
        self.evidence = replace(
            self.evidence,
            exposure=ExposureSummary(agents, start, span.end, adh.ratio, adh.longest_gap_days, quality),
        )
        w = self.k.w
        problems: list[str] = []
        if adh.ratio < self.k.t.coverage_ratio_min:
            problems.append(f"coverage ratio {adh.ratio} < {self.k.t.coverage_ratio_min}")
        if adh.longest_gap_days > w.adherence_gap_days:
            problems.append(f"uncovered gap of {adh.longest_gap_days} days > {w.adherence_gap_days}")
        if adh.denosumab_max_interval_days and adh.denosumab_max_interval_days > w.denosumab_max_interval_days:
            problems.append(
                f"denosumab inter-dose interval {adh.denosumab_max_interval_days} days > {w.denosumab_max_interval_days}"
            )
        if problems:
            self.reasons.extend(problems)
            self.done(
                "NOT_ELIGIBLE_ADHERENCE",
                "R7a",
                "apparent non-response may reflect exposure; review adherence and absorption; an IV or "
                "injectable agent may be considered",
            )

    def rule_response(self, start: date, scans: list[bmd.Scan], fresh: list[bmd.Scan]) -> tuple[SiteResponse, SiteResponse | None, bmd.Scan]:
        th_base = bmd.baseline_scan(scans, "total_hip", start, self.k)
        any_base = any(
            bmd.baseline_scan(scans, site, start, self.k) for site in ("total_hip", "lumbar_spine", "femoral_neck")
        )
        th_fu, th_status = bmd.followup_scan(fresh, "total_hip", th_base)
        if not any_base:
            self._miss("baseline_dxa")
        elif th_base is None:
            self._miss("total_hip_baseline")
        if th_fu is None:
            self._miss("total_hip_followup")
        if th_base is None or th_fu is None:
            lo = add_months(start, -self.k.w.baseline_before_start_months)
            hi = add_months(start, self.k.w.baseline_after_start_months)
            self.done(
                "INSUFFICIENT_DATA",
                "R8",
                f"response cannot be assessed: baseline DXA with total hip between {lo.isoformat()} and "
                f"{hi.isoformat()} and a follow-up DXA with total hip are both needed",
            )
        assert th_base is not None and th_fu is not None
        if th_status == "changed":
            self._scanner_change(th_base, th_fu)
        th = bmd.assess_site("total_hip", th_base, th_fu, th_status, self.k)
        for c in th.caveats:
            self._caveat(c)
        if th.response is None:
            self._miss("total_hip_followup" if th_base.at("total_hip", "t_score") or th_base.at("total_hip", "bmd") else "total_hip_baseline")
            self.done("INSUFFICIENT_DATA", "R8", "no comparable total-hip values (T-score or g/cm²) at both times")
        assert th.response is not None
        evidence = bmd.dxa_evidence(th_base, "baseline", "baseline", ("total_hip", "lumbar_spine", "femoral_neck"))
        evidence += bmd.dxa_evidence(th_fu, "follow-up", _status_text(th_status), ("total_hip", "lumbar_spine", "femoral_neck"))
        ls_base = bmd.baseline_scan(scans, "lumbar_spine", start, self.k)
        ls_fu, ls_status = bmd.followup_scan(fresh, "lumbar_spine", ls_base)
        ls_response: SiteResponse | None = None
        if ls_base and ls_fu:
            if ls_status == "changed":
                self._scanner_change(ls_base, ls_fu)
            ls = bmd.assess_site("lumbar_spine", ls_base, ls_fu, ls_status, self.k)
            ls_response = ls.response
            for c in ls.caveats:
                self._caveat(c)
            if ls_base.date != th_base.date:
                evidence += bmd.dxa_evidence(ls_base, "baseline", "baseline", ("lumbar_spine",))
            if ls_fu.date != th_fu.date:
                evidence += bmd.dxa_evidence(ls_fu, "follow-up", _status_text(ls_status), ("lumbar_spine",))
        if ls_response is None:
            self._caveat("spine not assessable: decided on the total hip alone")
        self.evidence = replace(self.evidence, dxa=tuple(evidence), responses=(th.response,) + ((ls_response,) if ls_response else ()))
        return th.response, ls_response, th_fu

    def _scanner_change(self, base: bmd.Scan, follow: bmd.Scan) -> None:
        label_a = base.scanner.label if base.scanner else "unknown"
        label_b = follow.scanner.label if follow.scanner else "unknown"
        self.done(
            "SPECIALIST_REVIEW",
            "R8",
            f"scanner changed between DXAs ({base.date.isoformat()}: {label_a}; {follow.date.isoformat()}: {label_b}): change not interpretable",
        )

    def rule_secondary_causes(self) -> list[str]:
        """R9a (decides) and the R9b/R9c flags (returned)."""
        labs, hpt = self.labs, history.hyperparathyroidism_types(self.r.findings, self.k)
        self._lab_gaps(labs)
        if labs.calcium_high:
            self.done("SPECIALIST_REVIEW", "R9a", f"corrected calcium {labs.corrected_calcium} mg/dL above range")
        if "primary_tertiary_familial" in hpt:
            self.done("SPECIALIST_REVIEW", "R9a", "active primary, tertiary or familial hyperparathyroidism")
        if "renal" in hpt:
            self.done("SPECIALIST_REVIEW", "R9a", "hyperparathyroidism of renal origin")
        flags: list[str] = []
        if self._alp_unexplained():
            flags.append("R9b: work up raised alkaline phosphatase first; PTH analogues excluded pending work-up")
        if labs.vitamin_d_low and labs.vitamin_d:
            flags.append(f"R9c: 25-OH vitamin D {labs.vitamin_d.value} ng/mL < {self.k.t.vitamin_d_low_ng_ml}: correct first")
        if "secondary_non_renal" in hpt:
            flags.append("R9c: secondary (non-renal) hyperparathyroidism: correct the cause first")
        if "unspecified" in hpt:
            flags.append("R9c: hyperparathyroidism, type not recorded: clarify and correct first")
        if labs.calcium_low:
            flags.append(f"R9c: corrected calcium {labs.corrected_calcium} mg/dL below range: correct first (romosozumab excluded while low)")
        return flags

    def _lab_gaps(self, labs: LabStatus) -> None:
        for code, value in (("egfr", labs.egfr), ("calcium", labs.calcium), ("alkaline_phosphatase", labs.alp)):
            if value is None:
                self._miss(code)
        if labs.vitamin_d is None:
            self._caveat("25-OH vitamin D not on record within 12 months")
        if labs.calcium is not None and labs.albumin is None:
            self._caveat("albumin not on record: calcium not corrected")
        if not any(m.role == "supplement" for m in self.r.medications):
            self._caveat(self.k.texts.supplements_line)
        lines = []
        for label, lab in (("eGFR", labs.egfr), ("Calcium", labs.calcium), ("Albumin", labs.albumin), ("Alkaline phosphatase", labs.alp), ("25-OH vitamin D", labs.vitamin_d)):
            if lab is not None:
                lines.append((label, f"{lab.value} {lab.unit} ({lab.date.isoformat()})"))
        if labs.calcium_corrected_with_albumin and labs.corrected_calcium is not None:
            lines.append(("Corrected calcium", f"{labs.corrected_calcium.quantize(Decimal('0.01'))} mg/dL"))
        self.evidence = replace(self.evidence, labs=tuple(lines))

    def rule_renal_gate(self, agents_ctx: AgentContext) -> None:
        labs = self.labs
        renal = history.assess_renal(self.r.findings, self.as_of, self.k)
        reason: str | None = None
        if labs.egfr is not None and labs.egfr.value < self.k.t.egfr_renal_gate:
            reason = f"eGFR {labs.egfr.value} ({labs.egfr.date.isoformat()}) < {self.k.t.egfr_renal_gate}"
        elif renal.advanced_ckd:
            reason = "CKD stage 4-5 / end-stage renal disease: " + history.describe(renal.advanced_ckd[0])
        elif renal.recent_dialysis:
            reason = "dialysis within 90 days: " + history.describe(renal.recent_dialysis[0])
        if reason:
            self.reasons.append(
                "follow-on bisphosphonates not recommended; denosumab boxed warning in advanced CKD; PTH analogues "
                "contraindicated in severe renal impairment (EU label)"
            )
            agents = rank_agents(agents_ctx, self.k)
            self.done("SPECIALIST_REVIEW", "renal", "renal gate: " + reason, agents=agents, follow_on=self._follow_on(agents))

    def _follow_on(self, agents: tuple[object, ...]) -> tuple:  # type: ignore[type-arg]
        if not agents:
            return ()
        egfr = self.labs.egfr.value if self.labs.egfr else None
        if egfr is None:
            self._miss("egfr")
        return follow_on(egfr, self.sex, "denosumab" in self.exposures, self.k)

    def rule_treatment(self, th: SiteResponse, ls: SiteResponse | None, followup: bmd.Scan, flags: list[str]) -> Decision:
        met = th.met and (ls is None or ls.met)
        target = self._target_t()
        lowest = bmd.lowest_target_t(followup)
        self.evidence = replace(self.evidence, target_t=target)
        for r in (th, ls):
            if r is not None:
                self.reasons.append(_response_text(r))
        if met:
            self.reasons.extend(flags)
            if lowest is None or lowest <= target:
                self.reasons.append("target T-score not yet reached")
            self.done("RESPONSE_MET", "R10")
        first_line_is_bp = self.first_line_agent in BISPHOSPHONATES
        ctx = self.agent_context(hip_failing=not th.met, bisphosphonate_before_followup=first_line_is_bp)
        self.rule_renal_gate(ctx)
        if lowest is None:
            self._miss("target_t_score")
        elif lowest > target:
            self.done(
                "CONSIDER",
                "R11",
                f"lowest total-hip/femoral-neck T-score {lowest} is above the personalised target {target}: "
                "at target: continuing current therapy is reasonable",
            )
        agents = rank_agents(ctx, self.k)
        follow = self._follow_on(agents)
        ranked = [a for a in agents if a.rank is not None]
        if not ranked:
            self.done("SPECIALIST_REVIEW", "R13", "every anabolic agent is excluded", agents=agents, follow_on=follow)
        romo = next(a for a in agents if a.agent == "romosozumab")
        if ctx.prior_denosumab_12_months and romo.status == "excluded":
            self.done(
                "SPECIALIST_REVIEW",
                "R13",
                "prior denosumab for 12 months or more and romosozumab excluded; options a specialist may weigh: "
                "continue denosumab and add teriparatide, or continue denosumab",
                agents=agents,
                follow_on=follow,
            )
        self.reasons.extend(flags)
        capped = bool(flags) or any(m in CAPPING_MISSING for m in self.missing) or bool(self.cap_reasons)
        last_denosumab = self.exposures["denosumab"].dose_dates[-1] if "denosumab" in self.exposures and self.exposures["denosumab"].dose_dates else None
        self.evidence = replace(
            self.evidence,
            plan=phase_plan(ranked[0].agent, self.first_line_agent, last_denosumab, ctx.pth_use_days, self.k),
            before_starting=before_starting(self.sex, ranked[0].agent),
            monitoring=MONITORING,
        )
        outcome: Outcome = "CONSIDER" if capped else "ESCALATE"
        return self.decide(outcome, "R12", agents=agents, follow_on=follow, suggestions_allowed=True)

    def _target_t(self) -> Decimal:
        fx = getattr(self, "fractures", None)
        if fx is not None and fx.prior_hip_or_vertebral:
            return self.k.t.personalised_target_t_after_fracture
        return self.k.t.personalised_target_t


def _status_text(status: str) -> str:
    return {"same": "same scanner", "unknown": "assumed same scanner", "changed": "scanner changed"}[status]


def _response_text(r: SiteResponse) -> str:
    site = r.site.replace("_", " ")
    period = f"({r.baseline_date.isoformat()} → {r.followup_date.isoformat()})"
    verdict = "≥" if r.met else "<"
    if r.metric == "pct":
        return f"{site} change {r.pct_change:+} % {verdict} {r.target} % {period}"
    return f"{site} ΔT {r.delta_t:+} {verdict} {r.target} {period}"


def _run(ev: _Evaluation) -> Decision:
    ev.rule_demographics()
    ev.rule_malignancy()
    ev.rule_anabolic()
    ev.rule_very_high_risk()
    ev.rule_high_risk()
    start = ev.rule_first_line()
    ev.rule_duration(start)
    scans = bmd.group_scans(ev.r.bmd, ev.as_of)
    fresh = ev.rule_followup(start, scans)
    th_fu_for_span, _ = bmd.followup_scan(fresh, "total_hip", bmd.baseline_scan(scans, "total_hip", start, ev.k))
    ev.rule_holiday_and_adherence(start, (th_fu_for_span or fresh[-1]).date)
    th, ls, followup = ev.rule_response(start, scans, fresh)
    flags = ev.rule_secondary_causes()
    return ev.rule_treatment(th, ls, followup, flags)


def evaluate(record: PatientRecord, knowledge: Knowledge, as_of: date) -> Decision:
    """Apply the protocol to one patient's record on `as_of`."""
    ev = _Evaluation(record, knowledge, as_of)
    try:
        return _run(ev)
    except _Done as done:
        return done.decision


__all__ = ["AgentExposure", "evaluate"]
