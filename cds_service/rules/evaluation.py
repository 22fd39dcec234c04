"""State shared by the rules of one protocol evaluation (protocol §3, §3a).

Rules live in `rules_eligibility`, `rules_response` and `rules_treatment`; `protocol.evaluate` runs them
in order. A rule ends the evaluation by calling `Evaluation.done`, which raises `Finished`.
"""

from __future__ import annotations

from datetime import date
from typing import NoReturn

from cds_service.facts.dates import add_months
from cds_service.facts.patient_record import UNAVAILABLE_LABELS, PatientRecord
from cds_service.knowledge.indexed import Knowledge
from cds_service.rules import history
from cds_service.rules.agents import JAW_OR_FEMUR_CONCEPTS, AgentContext, follow_on
from cds_service.rules.decision import (
    AgentAssessment,
    Decision,
    Evidence,
    FollowOnAssessment,
    Outcome,
    WarningDetail,
)
from cds_service.rules.exposure import (
    agent_exposures,
    anabolic_courses,
    counted_coverages,
    first_line_record_coverage,
    first_line_union,
    prior_denosumab_days,
    pth_use_days,
    romosozumab_doses,
)
from cds_service.rules.labs import assess_labs
from cds_service.rules.warnings import denosumab_overdue, follow_on_missing

CAPPING_MISSING = (
    "target_t_score",
    "egfr",
    "calcium",
    "alkaline_phosphatase",
    "unreadable_resources",
    "unavailable_data",
)


class Finished(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.outcome)
        self.decision = decision


class Evaluation:
    """State of one evaluation. Each rule function either returns or ends it by raising `Finished`."""

    def __init__(self, record: PatientRecord, knowledge: Knowledge, as_of: date) -> None:
        self.record = record
        self.knowledge = knowledge
        self.as_of = as_of
        self.caveats: list[str] = list(record.caveats)
        self.missing: list[str] = []
        self.reasons: list[str] = []
        self.warnings: list[WarningDetail] = []
        self.cap_reasons: list[str] = []
        self.evidence = Evidence(not_checked=knowledge.concept_gap_lines)
        coverages = counted_coverages(record.medications, as_of, knowledge)  # each record's, once
        self.exposures = agent_exposures(record.medications, as_of, knowledge, coverages)
        self.courses = anabolic_courses(self.exposures, as_of, knowledge)
        self.first_line = first_line_union(self.exposures)
        self.first_line_records = first_line_record_coverage(record.medications, as_of, knowledge, coverages)
        self.labs = assess_labs(record.labs, as_of, knowledge)
        self.sex = record.demographics.sex if record.demographics else "unknown"
        self.first_line_agent: str | None = None
        self.fractures: history.FractureStatus | None = None
        self.in_scope = self._in_scope()
        for kind, count in record.unreadable:
            self.caveats.append(f"{count} {kind} entries could not be read")
        if record.unreadable:
            self.miss("unreadable_resources")
        for category in record.unavailable:
            label = UNAVAILABLE_LABELS.get(category, category)
            self.caveats.append(f"{label}: not available from this EHR (unknown, not absent)")
        if record.unavailable:
            self.miss("unavailable_data")  # a relevant input that could not be obtained caps (§3a)

    # ----- helpers ---------------------------------------------------------------------------
    def miss(self, code: str) -> None:
        if code not in self.missing:
            self.missing.append(code)

    def caveat(self, text: str) -> None:
        if text not in self.caveats:
            self.caveats.append(text)

    def _in_scope(self) -> bool:
        if history.with_concept(self.record.findings, "osteoporosis"):
            return True
        if any(m.role in ("first_line", "anabolic") for m in self.record.medications):
            return True
        return any(
            v.kind == "t_score" and v.value <= self.knowledge.thresholds.t_score_osteoporosis
            for v in self.record.bmd
        )

    def decide(self, outcome: Outcome, rule: str, **extra: object) -> Decision:
        return Decision(
            outcome=outcome,
            rule=rule,
            as_of=self.as_of,
            protocol_version=self.knowledge.protocol_version,
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
        raise Finished(self.decide(outcome, rule, **extra))

    def agent_context(
        self, hip_failing: bool = False, bisphosphonate_before_followup: bool = False
    ) -> AgentContext:
        findings = self.record.findings
        denosumab = self.exposures.get("denosumab")
        caution_from = add_months(self.as_of, -self.knowledge.windows.pth_caution_denosumab_months)
        den_recent = bool(denosumab and any(caution_from <= d <= self.as_of for d in denosumab.dose_dates))
        if denosumab and not denosumab.dose_dates:
            den_recent = any(iv.end >= caution_from for iv in denosumab.intervals)
        romo = self.exposures.get("romosozumab")
        hpt = history.hyperparathyroidism_types(findings, self.knowledge)
        return AgentContext(
            sex=self.sex,
            cv_status=history.assess_cv(findings, self.as_of, self.knowledge),
            labs=self.labs,
            romosozumab_doses=romosozumab_doses(romo, self.as_of) if romo else 0,
            pth_use_days=pth_use_days(self.exposures, self.as_of),
            paget=tuple(history.with_concept(findings, "paget_disease_of_bone")),
            alp_unexplained=self.alp_unexplained(),
            skeletal_radiation=tuple(history.with_concept(findings, "skeletal_radiation")),
            radiotherapy_any=tuple(history.with_concept(findings, "radiotherapy_any")),
            urolithiasis=tuple(history.with_concept(findings, "urolithiasis")),
            bone_malignancy=tuple(history.with_concept(findings, "bone_malignancy")),
            primary_hpt_active="primary_tertiary_familial" in hpt,
            hypocalcaemia=tuple(history.active_with_concept(findings, "hypocalcaemia")),
            hypercalcaemia=tuple(history.active_with_concept(findings, "hypercalcaemia")),
            denosumab_within_caution_window=den_recent,
            prior_denosumab_12_months=prior_denosumab_days(denosumab, self.knowledge)
            >= self.knowledge.windows.prior_denosumab_min_days,
            hip_failing=hip_failing,
            bisphosphonate_before_followup=bisphosphonate_before_followup,
            allergies={
                a: tuple(history.allergies_to(findings, a))
                for a in ("romosozumab", "teriparatide", "abaloparatide")
            },
        )

    def alp_unexplained(self) -> bool:
        if not self.labs.alp_high:
            return False
        findings = self.record.findings
        fractures = history.assess_fractures(
            findings,
            self.record.demographics.birth_date if self.record.demographics else None,
            self.as_of,
            self.knowledge,
        )
        return (
            not history.with_concept(findings, "paget_disease_of_bone")
            and not history.active_with_concept(findings, "liver_disease")
            and not fractures.within_months
        )

    # ----- warnings --------------------------------------------------------------------------
    def compute_warnings(self) -> None:
        warning, caveat = denosumab_overdue(
            self.exposures.get("denosumab"),
            self.first_line_records,
            self.as_of,
            self.knowledge,
        )
        if warning:
            self.warnings.append(warning)
        if caveat:
            self.caveat(caveat)
        missing = follow_on_missing(self.courses, self.first_line_records, self.as_of, self.knowledge)
        if missing:
            self.warnings.append(missing)

    # ----- rules -----------------------------------------------------------------------------

    def follow_on_for(self, agents: tuple[AgentAssessment, ...]) -> tuple[FollowOnAssessment, ...]:
        """Follow-on anti-resorptives when agents are listed; `egfr` goes to missing without one."""
        if not agents:
            return ()
        egfr = self.labs.egfr_follow_on  # None without an eGFR, or when its bound leaves the band open
        if egfr is None:
            self.miss("egfr")
        jaw_or_femur = tuple(history.with_concept(self.record.findings, *JAW_OR_FEMUR_CONCEPTS))
        return follow_on(egfr, self.sex, "denosumab" in self.exposures, self.knowledge, jaw_or_femur)
