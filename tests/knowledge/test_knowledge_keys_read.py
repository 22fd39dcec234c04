"""Every value the knowledge file configures is read (issue 9, item 2).

The keys are enumerated from the packaged YAML itself. For each leaf there is a case that evaluates a
patient at the boundary that value governs with the packaged file and with a copy in which only that
value is changed (loaded through `load_knowledge(path)`), and asserts that the decision or the rendered
card changes exactly as the value says. A new key without a case fails `test_every_key_has_a_case`.

Families of list entries (fracture-site rules, hyperparathyroidism codes, override reasons, sources, …)
get one generated case per entry. Keys read only as look-up tables (code tables, code additions, code
lists) are checked through the look-up the extractors use.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cds_service.facts.code_match import (
    canonical_system,
    icd_fracture_site,
    ingredient_in_text,
    snomed_fracture_site,
)
from cds_service.facts.dates import add_days, add_months
from cds_service.facts.extract import extract_record
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import Demographics, MedicationRecord, PatientRecord, ScannerId
from cds_service.knowledge.indexed import Knowledge, plain_number
from cds_service.knowledge.loader import load_knowledge, packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, PACKAGED_DIR, SNOMED, KnowledgeError
from cds_service.present.card_detail import outcome_detail
from cds_service.present.card_text import decision_values
from cds_service.present.cards import render_cards, summary_for
from cds_service.rules import history
from cds_service.rules.agents import duration_text
from cds_service.rules.decision import AgentAssessment, Decision, Evidence
from cds_service.rules.exposure import PER_DATE_AGENTS, agent_exposures
from cds_service.rules.plan import before_starting, phase_plan
from cds_service.rules.protocol import evaluate
from cds_service.wire.service import PatientViewService
from tests.clinical_builders import (
    AS_OF,
    STANDARD_LABS,
    administration,
    base_record,
    d,
    dxa,
    finding,
    frax,
    lab,
    statement,
)
from tests.knowledge_variants import PACKAGED_DATA, get, leaves, table_folder, variant, write_variant
from tests.support.app_settings import test_settings

DEFAULT = packaged_knowledge()


# ----- harness ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One leaf changed: its path, packaged value, new value and both knowledge files."""

    path: str
    old: Any
    new: Any
    default: Knowledge
    changed: Knowledge


@dataclass(frozen=True)
class Case:
    pattern: str  # dotted path; `*` matches one segment (an index, an agent, an outcome)
    new_value: Callable[[str, Any], Any]  # (path, old value) -> the changed value
    check: Callable[[Change], None]
    protocol: tuple[str, ...]
    refused: bool = False  # the change must fail start-up (a value the service cannot honour)

    def matches(self, path: str) -> bool:
        regex = "^" + re.escape(self.pattern).replace(r"\*", r"[^.]+") + "$"
        return re.match(regex, path) is not None


def decide(record: PatientRecord, knowledge: Knowledge) -> Decision:
    return evaluate(record, knowledge, AS_OF)


def cards(decision: Decision, knowledge: Knowledge) -> list[dict[str, Any]]:
    counter = itertools.count(1)
    rendered = render_cards(
        decision,
        knowledge,
        patient_id="p1",
        selection_behavior="at-most-one",
        as_of_pinned=False,
        new_uuid=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
    )
    return [card.to_wire() for card in rendered]


def card_json(record: PatientRecord, knowledge: Knowledge) -> str:
    return json.dumps(cards(decide(record, knowledge), knowledge), ensure_ascii=False)


def outcomes(change: Change, record: PatientRecord) -> tuple[Decision, Decision]:
    return decide(record, change.default), decide(record, change.changed)


def agent(decision: Decision, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a.to_json() for a in decision.agents if a.agent == name)
    return found


def to(value: Any) -> Callable[[str, Any], Any]:
    return lambda _path, _old: value


def marked(text: str) -> Callable[[str, Any], Any]:
    """A distinctive replacement text for a card string (letters, digits and spaces only)."""
    return lambda path, _old: f"{text} {path.replace('.', ' ').replace('_', ' ')}"


# ----- records at the boundaries ----------------------------------------------------------------------
BASE = base_record()  # alendronate since 2021-03-01; hip +0.10 / spine +0.20 T; lowest target T -2.6


def with_meds(*extra: MedicationRecord, keep: bool = True) -> PatientRecord:
    return replace(BASE, medications=(BASE.medications if keep else ()) + extra)


def with_findings(*extra: Any) -> PatientRecord:
    return replace(BASE, findings=tuple(extra))


def with_labs(**by_kind: Any) -> PatientRecord:
    labs = [lab_ for lab_ in STANDARD_LABS if lab_.kind not in by_kind]
    return replace(BASE, labs=(*labs, *by_kind.values()))


def bmd_record(first: dict[str, str], second: dict[str, str]) -> PatientRecord:
    return replace(BASE, bmd=tuple(dxa("2021-02-15", **first) + dxa("2024-05-20", **second)))


def not_low_t(**frax_values: str) -> PatientRecord:
    """T-scores above -2.5 (lowest of the latest DXA -2.2): high risk rests on FRAX."""
    record = bmd_record(
        {"th": "-2.0", "ls": "-2.2", "fn": "-2.1"}, {"th": "-2.0", "ls": "-2.2", "fn": "-2.1"}
    )
    return replace(record, frax=frax("2024-05-20", **frax_values))


def denosumab_doses(first: str, steps: list[int]) -> tuple[MedicationRecord, ...]:
    days = [d(first)]
    for step in steps:
        days.append(add_days(days[-1], step))
    return tuple(administration("denosumab", day.isoformat(), 183) for day in days)


ON_DENOSUMAB = with_meds(*denosumab_doses("2021-03-01", [184, 181, 184, 181, 184, 181, 184, 181]), keep=False)
LATE_DENOSUMAB = with_meds(
    *denosumab_doses("2021-03-01", [220, 183, 183, 183, 183, 183, 183, 183]), keep=False
)
TERIPARATIDE_730 = with_meds(
    statement("teriparatide", "2018-01-01", "2019-12-31", role="anabolic", interval_days=1)
)
TERIPARATIDE_600 = with_meds(
    statement("teriparatide", "2018-01-01", "2019-08-23", role="anabolic", interval_days=1)
)
ROMOSOZUMAB_RUNNING = with_meds(
    *(
        administration(
            "romosozumab",
            f"{2024 + (7 + m) // 12}-{(7 + m) % 12 + 1:02d}-01",
            30,
            role="anabolic",
            interval_months=1,
        )
        for m in range(11)
    )
)
FOLLOW_ON_MISSING = replace(
    BASE,
    medications=(statement("teriparatide", "2023-01-01", "2024-12-31", role="anabolic", interval_days=1),),
)
OVERDUE = with_meds(administration("denosumab", "2024-06-01", 183))
TARGETS_MET = bmd_record(
    {"th": "-2.6", "ls": "-2.9", "fn": "-2.7"}, {"th": "-2.3", "ls": "-2.3", "fn": "-2.4"}
)
SHORT_THERAPY = with_meds(statement("alendronate", "2023-03-01"), keep=False)
MALE = replace(BASE, demographics=Demographics(d("1957-04-01"), "male", False))


# ----- checks: thresholds -------------------------------------------------------------------------------
def check_min_age(c: Change) -> None:
    before, after = outcomes(c, BASE)
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "NOT_APPLICABLE", "R1")
    assert f"< {c.new}" in after.reasons[0]


def check_t_score_osteoporosis(c: Change) -> None:
    before, after = outcomes(c, BASE)  # lowest T -2.9 on record, no FRAX
    assert (before.outcome, after.outcome) == ("ESCALATE", "NOT_ELIGIBLE_NOT_HIGH_RISK")


def check_frax_high_risk(record: PatientRecord) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        before, after = outcomes(c, record)
        assert before.outcome != "NOT_ELIGIBLE_NOT_HIGH_RISK"
        assert any(f">= {c.old} %" in r for r in before.reasons)
        assert after.outcome == "NOT_ELIGIBLE_NOT_HIGH_RISK"

    return check


def check_low_bone_mass(c: Change) -> None:
    before, after = outcomes(c, not_low_t(hip="3.5"))  # lowest T of the latest DXA -2.2
    assert before.outcome != "NOT_ELIGIBLE_NOT_HIGH_RISK" and "low bone mass" in before.reasons[0]
    assert after.outcome == "NOT_ELIGIBLE_NOT_HIGH_RISK"


def check_target(record: PatientRecord, site: str, shown: str) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        before, after = outcomes(c, record)
        assert (before.outcome, after.outcome) == ("ESCALATE", "RESPONSE_MET")
        assert any(r.startswith(site) and f"< {c.old}" in r for r in before.reasons)
        assert any(r.startswith(site) and f"≥ {c.new}" in r for r in after.reasons)
        quoted = shown.format(new=plain_number(Decimal(c.new)))  # the targets line of every escalation card
        assert quoted not in card_json(BASE, c.default) and quoted in card_json(BASE, c.changed)

    return check


def check_personalised_target(record: PatientRecord) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        before, after = outcomes(c, record)  # lowest total-hip/femoral-neck T of the follow-up: -2.6
        assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "CONSIDER", "R11")
        assert f"personalised target {c.new}" in after.reasons[-1]
        assert f"T-score above {c.new}" in cards(after, c.changed)[0]["detail"]

    return check


def check_renal_gate(c: Change) -> None:
    before, after = outcomes(c, BASE)  # eGFR 75
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "SPECIALIST_REVIEW", "renal")
    assert f"< {c.new}" in after.reasons[-1]


def check_follow_on_band(c: Change) -> None:
    before, after = outcomes(c, BASE)  # eGFR 75
    statuses = {f.agent: f.status for f in before.follow_on}
    changed = {f.agent: f.status for f in after.follow_on}
    assert statuses["alendronate"] == "option" and statuses["risedronate"] == "excluded"
    assert changed["alendronate"] == "excluded" and changed["risedronate"] == "option"


def check_vitamin_d(c: Change) -> None:
    before, after = outcomes(c, BASE)  # 25-OH vitamin D 32 ng/mL
    assert (before.outcome, after.outcome) == ("ESCALATE", "CONSIDER")
    assert any(r.startswith("R9c: 25-OH vitamin D 32 ng/mL <") for r in after.reasons)


GAPPY = with_meds(
    statement("alendronate", "2021-03-01", "2021-12-31"),
    statement("alendronate", "2022-03-01", "2022-12-31"),
    statement("alendronate", "2023-03-01", "2023-12-31"),
    statement("alendronate", "2024-03-01"),
    keep=False,
)  # three ~60-day gaps: coverage ratio 0.85, no gap > 90 days


def check_coverage_ratio(c: Change) -> None:
    before, after = outcomes(c, GAPPY)
    assert (before.outcome, after.outcome) == ("ESCALATE", "NOT_ELIGIBLE_ADHERENCE")
    assert f"coverage ratio 0.85 < {c.new}" in after.reasons


def check_aace(record: PatientRecord) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        before, after = outcomes(c, record)
        assert not before.evidence.aace_very_high_risk and after.evidence.aace_very_high_risk
        aace = DEFAULT.texts.aace_line
        assert aace not in card_json(record, c.default) and aace in card_json(record, c.changed)

    return check


# ----- checks: windows --------------------------------------------------------------------------------
def check_therapy_min(c: Change) -> None:
    before, after = outcomes(c, BASE)  # therapy since 2021-03-01
    assert before.outcome == "ESCALATE"
    assert (after.outcome, after.reevaluate_from) == ("NOT_ELIGIBLE_DURATION", date(2026, 3, 1))
    assert after.reasons[-1] == f"first-line therapy since 2021-03-01: under {c.new} months"


def check_baseline_before(c: Change) -> None:
    before, after = outcomes(c, BASE)  # baseline DXA 2021-02-15, 14 days before the start
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "INSUFFICIENT_DATA", "R8")
    assert f"from {c.new} months before to" in cards(after, c.changed)[0]["detail"]


def check_baseline_after(c: Change) -> None:
    record = replace(BASE, bmd=tuple(dxa("2021-04-15", th="-2.6", ls="-2.9", fn="-2.7")) + BASE.bmd[3:])
    before, after = outcomes(c, record)  # baseline DXA 45 days after the start
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "INSUFFICIENT_DATA", "R8")
    assert f"to {c.new} months after" in cards(after, c.changed)[0]["detail"]


def check_followup_age(c: Change) -> None:
    before, after = outcomes(c, BASE)  # follow-up DXA 2024-05-20
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "INSUFFICIENT_DATA", "R7f")
    assert f"older than {c.new} months" in after.reasons[-1]
    assert f"within the last {c.new} months" in cards(after, c.changed)[0]["detail"]


def check_lab_lookback(c: Change) -> None:
    before, after = outcomes(c, BASE)  # labs of 2025-03-01
    assert (before.outcome, after.outcome) == ("ESCALATE", "CONSIDER")
    assert {"egfr", "calcium", "alkaline_phosphatase"} <= set(after.missing)
    detail = cards(after, c.changed)[0]["detail"]
    assert f"No eGFR in the last {c.new} months" in detail
    assert f"25-OH vitamin D not on record within {c.new} months" in after.caveats
    missing = next(p for p in detail.split("\n\n") if p.startswith("Missing:"))
    assert "12 months" not in missing


def check_recent_fracture(c: Change) -> None:
    fracture = finding(
        {"osteoporotic_fracture"},
        "2022-06-01",
        "hip fracture",
        fracture_site="hip_femur",
        fracture_osteoporotic=True,
    )
    before, after = outcomes(c, with_findings(fracture))
    assert (before.outcome, after.outcome) == ("ESCALATE", "VERY_HIGH_RISK_PATHWAY")
    assert f"within {c.new} months" in after.reasons[-1]


def check_distinct_vertebral(c: Change) -> None:
    first = finding({"vertebral_fracture"}, "2015-01-01", "v1", fracture_site="vertebra")
    second = finding({"vertebral_fracture"}, "2015-05-01", "v2", fracture_site="vertebra")  # 120 days later
    before, after = outcomes(c, with_findings(first, second))
    assert (before.outcome, after.outcome) == ("VERY_HIGH_RISK_PATHWAY", "ESCALATE")


def check_cv_window(c: Change) -> None:
    mi = finding({"myocardial_infarction"}, "2024-01-01", "MI")  # 17 months before as_of
    before, after = outcomes(c, with_findings(mi))
    assert agent(before, "romosozumab")["status"] == "caution"
    romo = agent(after, "romosozumab")
    assert romo["status"] == "excluded" and romo["reasons"][0].startswith(
        f"MI or stroke within {c.new} months"
    )


def check_episode_gap(c: Change) -> None:
    record = with_meds(statement("alendronate", "2016-01-01", "2018-12-31"))  # 26 months uncovered after
    before, after = outcomes(c, record)
    assert before.evidence.exposure is not None and before.evidence.exposure.therapy_start == date(2021, 3, 1)
    assert after.evidence.exposure is not None and after.evidence.exposure.therapy_start == date(2016, 1, 1)
    assert (before.outcome, after.outcome) == ("ESCALATE", "NOT_ELIGIBLE_ADHERENCE")


def check_adherence_gap(c: Change) -> None:
    record = with_meds(
        statement("alendronate", "2021-03-01", "2022-12-31"),
        statement("alendronate", "2023-04-11"),
        keep=False,
    )  # one 100-day gap
    before, after = outcomes(c, record)
    assert (before.outcome, after.outcome) == ("NOT_ELIGIBLE_ADHERENCE", "ESCALATE")
    assert f"uncovered gap of 100 days > {c.old}" in before.reasons


def check_denosumab_interval(c: Change) -> None:
    before, after = outcomes(c, LATE_DENOSUMAB)  # one inter-dose interval of 220 days
    assert (before.outcome, after.outcome) == ("NOT_ELIGIBLE_ADHERENCE", "ESCALATE")
    assert f"denosumab inter-dose interval 220 days > {c.old}" in before.reasons


def check_overdue_max(c: Change) -> None:
    record = with_meds(administration("denosumab", "2023-03-01", 183))  # 27 months before as_of
    before, after = outcomes(c, record)
    assert [w.code for w in before.warnings] == [] and any("more than 24 months" in x for x in before.caveats)
    assert [w.code for w in after.warnings] == ["DENOSUMAB_OVERDUE"]


def check_holiday(c: Change) -> None:
    record = with_meds(statement("alendronate", "2021-03-01", "2023-03-31"), keep=False)  # 14 months off
    before, after = outcomes(c, record)
    assert (before.outcome, before.rule) == ("SPECIALIST_REVIEW", "R7h")
    assert after.rule != "R7h"


def check_allowance(record: PatientRecord, name: str) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        before, after = outcomes(c, record)  # a past PTH-analogue course: R3c lists the agents
        assert before.rule == after.rule == "R3c"
        was, now = agent(before, name), agent(after, name)
        assert (was["status"] == "excluded") != (now["status"] == "excluded")
        assert any(f"(limit {min(c.old, c.new)})" in r for r in (was["reasons"] + now["reasons"]))
        plan_before = phase_plan(name, None, None, 0, c.default)
        plan_after = phase_plan(name, None, None, 0, c.changed)
        for plan, days in ((plan_before, c.old), (plan_after, c.new)):
            assert f"up to {duration_text(days)} minus" in plan[0] and f", {days} remain)" in plan[0]

    return check


def check_on_anabolic_card(c: Change) -> None:
    before, after = outcomes(c, ROMOSOZUMAB_RUNNING)  # planned end 2025-08-01, 61 days away
    assert before.outcome == after.outcome == "ON_ANABOLIC"
    assert before.on_anabolic_card and not after.on_anabolic_card
    assert len(cards(before, c.default)) == 1 and cards(after, c.changed) == []


def check_follow_on_missing(c: Change) -> None:
    before, after = outcomes(c, FOLLOW_ON_MISSING)  # teriparatide ended 2024-12-31
    assert [w.code for w in before.warnings] == ["ANABOLIC_FOLLOW_ON_MISSING"] and after.warnings == ()


def check_dialysis(c: Change) -> None:
    dialysis = finding({"ckd_stage_4_5_or_dialysis"}, "2025-01-01", "dialysis", resource_type="Procedure")
    before, after = outcomes(c, with_findings(dialysis))  # 151 days before as_of
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "SPECIALIST_REVIEW", "renal")
    assert after.reasons[-1].startswith(f"renal gate: dialysis within {c.new} days")


def check_alp_fracture(c: Change) -> None:
    fracture = finding({"other_fracture_site"}, "2024-10-01", "finger fracture", fracture_site="other")
    record = replace(
        with_findings(fracture),
        labs=with_labs(alkaline_phosphatase=lab("alkaline_phosphatase", "150", high="120")).labs,
    )
    before, after = outcomes(c, record)  # raised ALP, fracture 8 months ago
    assert (before.outcome, after.outcome) == ("CONSIDER", "ESCALATE")
    assert any(r.startswith("R9b") for r in before.reasons)


PRIOR_DENOSUMAB_364 = with_meds(*denosumab_doses("2015-01-01", [181]))  # (last + 183) - first = 364 days


def check_prior_denosumab(c: Change) -> None:
    before, after = outcomes(c, PRIOR_DENOSUMAB_364)
    assert agent(before, "romosozumab")["reasons"] == ["total hip failing after a bisphosphonate"]
    reason = agent(after, "romosozumab")["reasons"][0]
    assert reason.startswith("prior denosumab for") and reason.endswith("or more")
    if c.path.endswith("prior_denosumab_min_days"):
        assert reason == f"prior denosumab for {c.new} days or more"


def check_pth_caution(c: Change) -> None:
    record = with_meds(administration("denosumab", "2023-09-01", 183))  # 21 months before as_of
    before, after = outcomes(c, record)
    assert agent(before, "teriparatide")["status"] == "option"
    teri = agent(after, "teriparatide")
    assert teri["status"] == "caution" and teri["reasons"][0].startswith(f"denosumab within {c.new} months")


def check_transition(c: Change) -> None:
    before, after = outcomes(c, ON_DENOSUMAB)
    last = ON_DENOSUMAB.medications[-1].event_date
    assert last is not None
    assert f"no later than {add_months(last, c.old).isoformat()}" in before.evidence.plan[0]
    assert f"no later than {add_months(last, c.new).isoformat()}" in after.evidence.plan[0]


# ----- checks: policy ----------------------------------------------------------------------------------
def check_prior_cv_policy(c: Change) -> None:
    before, after = outcomes(c, with_findings(finding({"myocardial_infarction"}, "2020-01-01", "MI")))
    assert agent(before, "romosozumab")["status"] == "caution"
    assert agent(after, "romosozumab")["status"] == "excluded"


def check_romosozumab_men(c: Change) -> None:
    before, after = outcomes(c, MALE)
    assert agent(before, "romosozumab")["status"] == "excluded"
    assert agent(after, "romosozumab")["status"] != "excluded"


def check_abaloparatide_men(c: Change) -> None:
    before, after = outcomes(c, MALE)
    assert agent(before, "abaloparatide")["status"] != "excluded"
    assert agent(after, "abaloparatide")["reasons"] == [
        "male: abaloparatide not licensed for men under this policy"
    ]


def check_card_policy(record: PatientRecord, outcome: str) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        before, after = outcomes(c, record)
        assert before.outcome == after.outcome == outcome
        assert cards(before, c.default) == [] and len(cards(after, c.changed)) == 1

    return check


# ----- checks: labs -----------------------------------------------------------------------------------
def check_calcium_low(c: Change) -> None:
    record = with_labs(calcium=lab("calcium", "8.6"))  # no referenceRange: the default bounds decide
    before, after = outcomes(c, record)
    assert (before.outcome, after.outcome) == ("ESCALATE", "CONSIDER")
    assert agent(after, "romosozumab")["status"] == "excluded"


def check_calcium_high(c: Change) -> None:
    before, after = outcomes(c, with_labs(calcium=lab("calcium", "10.0")))
    assert (before.outcome, after.outcome, after.rule) == ("ESCALATE", "SPECIALIST_REVIEW", "R9a")


def check_alp_high(c: Change) -> None:
    before, after = outcomes(c, with_labs(alkaline_phosphatase=lab("alkaline_phosphatase", "125")))
    assert (before.outcome, after.outcome) == ("CONSIDER", "ESCALATE")


def check_refused(c: Change) -> None:
    raise AssertionError("refused cases are checked by test_changed_value_is_read")  # pragma: no cover


# ----- checks: medications (through FHIR parse + extract) ----------------------------------------------
def _medication(resource_type: str, text: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": resource_type,
        "id": "m1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": text},
    }
    resource.update(extra)
    return resource


def dispensed(text: str, quantity: int) -> dict[str, Any]:
    return _medication("MedicationDispense", text, whenHandedOver="2024-01-10", quantity={"value": quantity})


def extracted(resources: list[dict[str, Any]], knowledge: Knowledge) -> tuple[MedicationRecord, ...]:
    return extract_record(parse_resources(resources, knowledge), knowledge).medications


def covered_days(resource: dict[str, Any], agent_name: str, knowledge: Knowledge) -> int:
    exposure = agent_exposures(extracted([resource], knowledge), AS_OF, knowledge)[agent_name]
    return sum(iv.days for iv in exposure.intervals)


def name_of(agent_name: str) -> str:
    return str(PACKAGED_DATA["ingredient_names"][agent_name][0])


def units_covered(agent_name: str) -> int:
    """Intervals covered by a dispense of 2 units: injectables are one dose per date (§3c)."""
    return 1 if agent_name in PER_DATE_AGENTS else 2


def check_default_days(c: Change) -> None:
    agent_name = c.path.split(".")[1]
    resource = dispensed(name_of(agent_name), 2)  # no strength: the agent's default interval
    units = units_covered(agent_name)
    assert covered_days(resource, agent_name, c.default) == units * c.old
    assert covered_days(resource, agent_name, c.changed) == units * c.new


def check_by_strength(c: Change) -> None:
    _, agent_name, _, strength = c.path.split(".")
    resource = dispensed(f"{name_of(agent_name)} {strength} mg", 2)
    units = units_covered(agent_name)
    assert covered_days(resource, agent_name, c.default) == units * c.old
    assert covered_days(resource, agent_name, c.changed) == units * c.new
    if (agent_name, strength) == ("denosumab", "60"):  # the phase plan's next-dose date
        last = ON_DENOSUMAB.medications[-1].event_date
        assert last is not None
        before, after = outcomes(c, ON_DENOSUMAB)
        assert f"next denosumab dose is due ({add_days(last, c.old).isoformat()};" in before.evidence.plan[0]
        assert f"next denosumab dose is due ({add_days(last, c.new).isoformat()};" in after.evidence.plan[0]


def check_months_per_dose(c: Change) -> None:
    resource = _medication("MedicationAdministration", "romosozumab 210 mg", effectiveDateTime="2024-01-10")
    before = agent_exposures(extracted([resource], c.default), AS_OF, c.default)["romosozumab"]
    after = agent_exposures(extracted([resource], c.changed), AS_OF, c.changed)["romosozumab"]
    assert before.intervals[0].end == date(2024, 2, 9) and after.intervals[0].end == date(2024, 3, 9)


def check_pen_days(c: Change) -> None:
    agent_name = c.path.split(".")[1]
    resource = dispensed(f"{name_of(agent_name)} pen injector", 1)
    assert covered_days(resource, agent_name, c.default) == c.old
    assert covered_days(resource, agent_name, c.changed) == c.new


def check_oncology_marker(text_of: Callable[[Change], str]) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        resource = _medication("MedicationStatement", text_of(c), effectiveDateTime="2024-01-10")
        before = with_meds(*extracted([resource], c.default))
        after = with_meds(*extracted([resource], c.changed))
        assert before.medications[-1].role == "oncology_dose" and after.medications[-1].role == "first_line"
        was, now = outcomes(c, before)[0], decide(after, c.changed)
        assert (was.outcome, was.rule) == ("SPECIALIST_REVIEW", "R2") and now.rule != "R2"
        assert "dose not recorded: oncology use not excluded" in now.caveats

    return check


def _doses_apart(agent_name: str, days: int) -> list[dict[str, Any]]:
    """Two administrations of unknown strength (name only), `days` apart, the last 2025-03-01."""
    last = d("2025-03-01")
    return [
        {
            **_medication("MedicationAdministration", name_of(agent_name), effectiveDateTime=day.isoformat()),
            "id": f"ma-{index}",
        }
        for index, day in enumerate((add_days(last, -days), last))
    ]


def check_oncology_interval(c: Change) -> None:
    agent_name = c.path.split(".")[1]
    resources = _doses_apart(agent_name, c.old - 10)  # closer than the packaged interval
    before = decide(with_meds(*extracted(resources, c.default)), c.default)
    after = decide(with_meds(*extracted(resources, c.changed)), c.changed)
    assert (before.outcome, before.rule) == ("SPECIALIST_REVIEW", "R2")
    assert after.rule != "R2"


def check_ingredient_names(c: Change) -> None:
    agent_name = c.path.split(".")[1]
    for name in c.old:
        assert ingredient_in_text(f"{name} tablets", c.default) == agent_name
        assert ingredient_in_text(f"{name} tablets", c.changed) != agent_name
    assert ingredient_in_text(f"{c.new[0]} tablets", c.changed) == agent_name


# ----- checks: code lists and tables --------------------------------------------------------------------
def _pattern_examples(pattern: str) -> list[str]:
    """Codes a fracture-site pattern matches: each character class and `\\d` expanded (the patterns are
    plain sequences of literals, escaped dots, classes and digits)."""
    parts: list[list[str]] = []
    for token in re.findall(r"\\d|\\.|\[[^\]]+\]|.", pattern):
        if token == r"\d":
            parts.append(list("0123456789"))
        elif token.startswith("["):
            parts.append(list(token[1:-1]))
        else:
            parts.append([token.removeprefix("\\")])
    return ["".join(chars) for chars in itertools.product(*parts)]


def _rule_example(index: int) -> tuple[str, str, str]:
    """(system, code, site): a code the rule at `index` decides with the packaged file (first match)."""
    rule = get(f"fracture_sites.icd_prefixes.{index}")
    system = rule.get("system", ICD10CM)
    if "prefix" in rule:
        prefix = rule["prefix"]
        tails = [str(digit) for digit in range(10)] + [""]
        candidates = [prefix + tail if "." in prefix else f"{prefix}.{tail}".rstrip(".") for tail in tails]
    else:
        candidates = [
            code + "XA" if system == ICD10CM else code for code in _pattern_examples(rule["pattern"])
        ]
    for code in candidates:
        if icd_fracture_site(system, code, DEFAULT) == rule["site"]:
            return system, code, rule["site"]
    raise AssertionError(f"no code reaches fracture-site rule {index}: {rule}")


def check_icd_prefix(c: Change) -> None:
    system, code, site = _rule_example(int(c.path.split(".")[2]))
    assert icd_fracture_site(system, code, c.default) == site
    assert icd_fracture_site(system, code, c.changed) != site
    if c.path.endswith(".site"):
        assert icd_fracture_site(system, code, c.changed) == c.new


def other_icd_system(_path: str, old: str) -> str:
    return ICD10 if old == ICD10CM else ICD10CM


# ----- checks: code additions and brands -----------------------------------------------------------------
def _addition(c: Change) -> dict[str, Any]:
    addition: dict[str, Any] = get(".".join(c.path.split(".")[:2]))
    return addition


def _concepts_of_first_code(addition: dict[str, Any], knowledge: Knowledge) -> frozenset[str]:
    return knowledge.condition_concepts(canonical_system(addition["system"]), addition["codes"][0][0])


def check_addition_code(c: Change) -> None:
    """The code is looked up with its display and concept only while the addition lists it (ICD codes
    may also reach the concept through a category the tables share, §3b: the display tells them apart)."""
    addition = _addition(c)
    system = canonical_system(addition["system"])
    (old_code, old_display), (new_code, new_display) = c.old, c.new
    assert c.default.condition_display(system, old_code) == old_display
    assert c.changed.condition_display(system, old_code) != old_display
    assert c.changed.condition_display(system, new_code) == new_display
    assert addition["concept"] not in c.default.condition_concepts(system, new_code)
    assert addition["concept"] in c.changed.condition_concepts(system, new_code)


def check_addition_concept(c: Change) -> None:
    addition = _addition(c)
    assert c.old in _concepts_of_first_code(addition, c.default)
    assert c.new not in _concepts_of_first_code(addition, c.default)
    assert c.new in _concepts_of_first_code(addition, c.changed)


def check_addition_system(c: Change) -> None:
    addition = _addition(c)
    old_system, new_system = canonical_system(c.old), canonical_system(c.new)
    code, display = addition["codes"][0]
    assert c.default.condition_display(old_system, code) == display
    assert c.changed.condition_display(old_system, code) != display
    assert c.changed.condition_display(new_system, code) == display
    assert addition["concept"] in c.changed.condition_concepts(new_system, code)


def another_concept(_path: str, old: str) -> str:
    return "osteoporosis" if old != "osteoporosis" else "paget_disease_of_bone"


def another_system(_path: str, old: str) -> str:
    return SNOMED if old != SNOMED else ICD10CM


def _brand(c: Change) -> dict[str, Any]:
    brand: dict[str, Any] = get(".".join(c.path.split(".")[:2]))
    return brand


def check_brand_name(c: Change) -> None:
    ingredient = _brand(c)["ingredient"]
    assert ingredient_in_text(f"{c.old} injection", c.default) == ingredient
    assert ingredient_in_text(f"{c.old} injection", c.changed) != ingredient
    assert ingredient_in_text(f"{c.new} injection", c.changed) == ingredient


def another_ingredient(_path: str, old: str) -> str:
    return "zoledronic_acid" if old != "zoledronic_acid" else "denosumab"


def check_brand_ingredient(c: Change) -> None:
    name = _brand(c)["brand"]
    assert ingredient_in_text(f"{name} injection", c.default) == c.old
    assert ingredient_in_text(f"{name} injection", c.changed) == c.new


ONCOLOGY_FLIP = {"60": "120", "120": "60", "5": "4", "4": "5"}


def check_brand_strength(c: Change) -> None:
    """The brand decides the strength: a 120 mg denosumab / 4 mg zoledronic acid brand is an oncology dose."""
    brand = _brand(c)
    resource = _medication(
        "MedicationStatement", f"{brand['brand']} injection", effectiveDateTime="2024-01-10"
    )
    oncology = set(PACKAGED_DATA["oncology_strengths_mg"][brand["ingredient"]])
    before = extracted([resource], c.default)[-1]
    after = extracted([resource], c.changed)[-1]
    assert (before.role == "oncology_dose") is (c.old in oncology)
    assert (after.role == "oncology_dose") is (c.new in oncology)


def check_snomed_word(c: Change) -> None:
    index = int(c.path.split(".")[2])
    rule = get(f"fracture_sites.snomed_words.{index}")
    text = f"fracture of {rule['word']}"
    assert snomed_fracture_site(text, c.default) == rule["site"]
    assert snomed_fracture_site(text, c.changed) != rule["site"]


def check_not_counted(c: Change) -> None:
    for word in c.old:
        assert snomed_fracture_site(f"fracture of {word}", c.default) == "other"
        assert snomed_fracture_site(f"fracture of {word}", c.changed) is None


def check_hpt(c: Change) -> None:
    """A Condition coded twice (this code and one of another type): each mapped code adds its type."""
    kind = c.path.split(".")[1]
    other = "renal" if kind != "renal" else "primary_tertiary_familial"
    system, code = c.old
    hpt = finding(
        {"hyperparathyroidism"},
        None,
        "HPT",
        codes=((system, code), tuple(get(f"{c.path.split('.')[0]}.{other}.0"))),
    )
    assert history.hyperparathyroidism_types((hpt,), c.default) == {kind, other}
    assert history.hyperparathyroidism_types((hpt,), c.changed) == {other}


def _first_row(table: str) -> dict[str, str]:
    with open(DEFAULT_TABLES / f"{table}.csv", newline="", encoding="utf-8") as handle:
        return next(iter(csv.DictReader(handle)))


def _looked_up(table: str, row: dict[str, str], knowledge: Knowledge) -> bool:
    key = (row["system"], row["code"])
    if table == "conditions":
        return bool(knowledge.condition_concepts(*key))
    if table == "medications":
        return key in knowledge.medications
    return bool(knowledge.observation_codes(*key))


def check_code_table(c: Change) -> None:
    table = c.path.split(".")[1]
    row = _first_row(table)
    assert _looked_up(table, row, c.default) and not _looked_up(table, row, c.changed)


# ----- checks: card wording -----------------------------------------------------------------------------
def check_in_card(record: PatientRecord) -> Callable[[Change], None]:
    def check(c: Change) -> None:
        new = str(c.new)
        assert new not in card_json(record, c.default)
        assert new in card_json(record, c.changed)

    return check


def synthetic(outcome: Any, rule: str = "R12", **fields: Any) -> Decision:
    """A decision built directly, for card texts whose case needs a particular outcome or flag."""
    return Decision(outcome, rule, AS_OF, "x", in_scope=True, first_line_agent="alendronate", **fields)


CAUTION = AgentAssessment("teriparatide", "caution", 1, ("denosumab within 18 months",))
TEXT_DECISIONS: dict[str, Decision] = {
    "suggestion_label_caution": synthetic("ESCALATE", agents=(CAUTION,), suggestions_allowed=True),
    "action_description_caution": synthetic("ESCALATE", agents=(CAUTION,), suggestions_allowed=True),
    "reevaluate_line": synthetic("NOT_ELIGIBLE_DURATION", "R7", reevaluate_from=date(2026, 1, 1)),
    "ended_line": synthetic(
        "ON_ANABOLIC",
        "R3",
        on_anabolic_card=True,
        anabolic_agent="teriparatide",
        planned_end=date(2025, 5, 1),
    ),
    "specialist_agents_line": synthetic("SPECIALIST_REVIEW", "renal", agents=(CAUTION,)),
    "obtain_egfr_line": synthetic("ESCALATE", agents=(CAUTION,), missing=("egfr",)),
    "aace_line": synthetic("ESCALATE", evidence=Evidence(aace_very_high_risk=True)),
}


def check_text_in_detail(c: Change) -> None:
    """The line is in the detail of a decision that shows it (the renderer's detail, any policy)."""
    decision = TEXT_DECISIONS[c.path.split(".")[1]]

    def rendered(knowledge: Knowledge) -> str:
        values = decision_values(decision, knowledge)
        cards_json = json.dumps(cards(decision, knowledge), ensure_ascii=False)
        return cards_json + outcome_detail(decision, knowledge, values, with_suggestions=True)

    assert str(c.new) not in rendered(c.default)
    assert str(c.new) in rendered(c.changed)


def check_missing_text(c: Change) -> None:
    """A missing-input name is in the INSUFFICIENT_DATA summary; its line in the detail."""
    code = c.path.split(".")[2]
    decision = synthetic("INSUFFICIENT_DATA", "R8", missing=(code,))

    def rendered(knowledge: Knowledge) -> str:
        return json.dumps(cards(decision, knowledge), ensure_ascii=False)

    assert str(c.new) not in rendered(c.default)
    assert str(c.new) in rendered(c.changed)


# Reasons, caveats and agent reasons the rules write from a template (issue 11, part 3): a record and the
# day it is evaluated on that produce each, and what must show with the packaged file.
def _bounded(kind: str, value: str, comparator: str) -> Any:
    return replace(lab(kind, value), comparator=comparator)


YOUNG = replace(BASE, demographics=Demographics(d("1990-01-01"), "female", False))
MI_RECENT = finding({"myocardial_infarction"}, "2025-01-01", "MI")
MI_UNDATED = finding({"myocardial_infarction"}, None, "old MI")
PRIOR_DENOSUMAB_365 = with_meds(*denosumab_doses("2015-01-01", [182]))  # (last + 183) - first = 365 days
NON_ADHERENT = with_meds(
    statement("alendronate", "2021-03-01", "2021-12-31"), statement("alendronate", "2023-06-01"), keep=False
)  # one 516-day gap: coverage ratio and gap both fail
AT_TARGET = bmd_record({"th": "-2.5", "ls": "-2.9", "fn": "-2.7"}, {"th": "-2.4", "ls": "-2.8", "fn": "-2.4"})
RECENT_FRACTURE = finding(
    {"osteoporotic_fracture"},
    "2024-06-01",
    "hip fracture",
    fracture_site="hip_femur",
    fracture_osteoporotic=True,
)
HIP_BMD_RESPONSE = bmd_record(
    {"th": "-2.6", "ls": "-2.9", "fn": "-2.7", "th_bmd": "0.800"},
    {"th": "-2.5", "ls": "-2.3", "fn": "-2.6", "th_bmd": "0.820"},
)  # total hip decided by % change (+2.5 %), spine by ΔT
SCANNER_CHANGED = replace(
    BASE,
    bmd=tuple(
        dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.7")
        + dxa(
            "2024-05-20", th="-2.5", ls="-2.7", fn="-2.6", scanner=ScannerId("identifier", "sn:2002", "DXA-2")
        )
    ),
)
HPT_SECONDARY = finding(
    {"hyperparathyroidism"},
    None,
    "HPT",
    codes=(tuple(get("hyperparathyroidism_types.secondary_non_renal.0")),),
)
TERIPARATIDE_RUNNING = with_meds(statement("teriparatide", "2025-01-01", role="anabolic", interval_days=1))
HPT_PRIMARY = finding(
    {"hyperparathyroidism"},
    None,
    "HPT",
    codes=(tuple(get("hyperparathyroidism_types.primary_tertiary_familial.0")),),
)
ROMOSOZUMAB_12 = with_meds(
    *(
        administration("romosozumab", f"2023-{month:02d}-01", 30, role="anabolic", interval_months=1)
        for month in range(1, 13)
    )
)
ROMOSOZUMAB_ALLERGY = finding(
    set(),
    "2020-01-01",
    "romosozumab allergy",
    resource_type="AllergyIntolerance",
    allergy_agents=frozenset({"romosozumab"}),
)
DIALYSIS = finding({"ckd_stage_4_5_or_dialysis"}, "2025-04-01", "dialysis", resource_type="Procedure")
RULE_TEXTS: dict[str, tuple[PatientRecord, date, str]] = {
    "duration_reason": (BASE, date(2023, 6, 1), "first-line therapy since 2021-03-01: under 33 months"),
    "followup_stale_reason": (
        BASE,
        date(2026, 7, 1),
        "latest follow-up DXA 2024-05-20 is older than 24 months: repeat DXA with total hip",
    ),
    "vitamin_d_missing_caveat": (BASE, date(2026, 4, 1), "25-OH vitamin D not on record within 12 months"),
    "age_reason": (
        YOUNG,
        AS_OF,
        "age 35 < 50: younger adults need Z-score and secondary-cause assessment",
    ),
    "recent_fracture_reason": (
        with_findings(RECENT_FRACTURE),
        AS_OF,
        "fragility fracture within 24 months: hip fracture (2024-06-01)",
    ),
    "t_score_reason": (BASE, AS_OF, "T-score -2.9 (lumbar spine, 2021-02-15) <= -2.5"),
    "frax_mof_reason": (
        not_low_t(mof="22.0"),
        AS_OF,
        "FRAX major osteoporotic fracture 22.0 % (2024-05-20) >= 20.0 %",
    ),
    "frax_hip_reason": (
        not_low_t(hip="3.5"),
        AS_OF,
        "FRAX hip 3.5 % (2024-05-20) >= 3.0 % with low bone mass",
    ),
    "coverage_ratio_reason": (NON_ADHERENT, AS_OF, "coverage ratio 0.56 < 0.80"),
    "adherence_gap_reason": (NON_ADHERENT, AS_OF, "uncovered gap of 516 days > 90"),
    "denosumab_interval_reason": (LATE_DENOSUMAB, AS_OF, "denosumab inter-dose interval 220 days > 213"),
    "baseline_missing_reason": (
        replace(BASE, bmd=BASE.bmd[3:]),
        AS_OF,
        "response cannot be assessed: baseline DXA with total hip between 2019-03-01 and 2021-06-01 "
        "and a follow-up DXA with total hip are both needed",
    ),
    "vitamin_d_low_flag": (
        with_labs(vitamin_d_25oh=lab("vitamin_d_25oh", "15")),
        AS_OF,
        "R9c: 25-OH vitamin D 15 ng/mL < 20: correct first",
    ),
    "renal_egfr_reason": (with_labs(egfr=lab("egfr", "25")), AS_OF, "renal gate: eGFR 25 (2025-03-01) < 30"),
    "renal_dialysis_reason": (
        with_findings(DIALYSIS),
        AS_OF,
        "renal gate: dialysis within 90 days: dialysis (2025-04-01)",
    ),
    "at_target_reason": (
        AT_TARGET,
        AS_OF,
        "lowest total-hip/femoral-neck T-score -2.4 is above the personalised target -2.5: "
        "at target: continuing current therapy is reasonable",
    ),
    "prior_denosumab_reason": (PRIOR_DENOSUMAB_365, AS_OF, "prior denosumab for 12 months or more"),
    "prior_denosumab_romosozumab_excluded_reason": (
        replace(PRIOR_DENOSUMAB_365, demographics=MALE.demographics),
        AS_OF,
        "prior denosumab for 12 months or more and romosozumab excluded; options a specialist may weigh: "
        "continue denosumab and add teriparatide, or continue denosumab",
    ),
    "cv_recent_exclusion": (
        with_findings(MI_RECENT),
        AS_OF,
        "MI or stroke within 12 months: MI (2025-01-01)",
    ),
    "cv_undated_caution": (
        with_findings(MI_UNDATED),
        AS_OF,
        "MI/stroke history without an event date (old MI): confirm none in the past 12 months",
    ),
    "pth_use_limit_exclusion": (TERIPARATIDE_730, AS_OF, "730 days of PTH-analogue use already (limit 730)"),
    "pth_after_denosumab_caution": (
        with_meds(administration("denosumab", "2024-09-01", 183)),
        AS_OF,
        "denosumab within 18 months: switching causes transient hip bone loss; "
        "only with specialist-planned overlap",
    ),
    "follow_on_egfr_gate_exclusion": (
        with_labs(egfr=lab("egfr", "25")),
        AS_OF,
        "eGFR 25 < 30: specialist decision",
    ),
    "follow_on_egfr_low_exclusion": (with_labs(egfr=lab("egfr", "32")), AS_OF, "eGFR 32 < 35"),
    "follow_on_egfr_high_exclusion": (
        BASE,
        AS_OF,
        "eGFR 75 >= 35: alendronate or zoledronic acid listed instead",
    ),
    "egfr_gate_undecided_note": (
        with_labs(egfr=_bounded("egfr", "60", "<")),
        AS_OF,
        "eGFR <60: cannot decide whether < 30",
    ),
    "egfr_band_undecided_note": (
        with_labs(egfr=_bounded("egfr", "30", ">=")),
        AS_OF,
        "eGFR >=30: cannot decide the follow-on band (< or >= 35)",
    ),
    "vitamin_d_undecided_note": (
        with_labs(vitamin_d_25oh=_bounded("vitamin_d_25oh", "30", "<")),
        AS_OF,
        "25-OH vitamin D <30 ng/mL: cannot decide whether < 20",
    ),
    "response_pct_reason": (
        HIP_BMD_RESPONSE,
        AS_OF,
        "total hip change +2.5 % < 3.0 % (2021-02-15 → 2024-05-20)",
    ),
    "response_delta_t_reason": (BASE, AS_OF, "total hip ΔT +0.10 < 0.20 (2021-02-15 → 2024-05-20)"),
    "second_course_reason": (
        TERIPARATIDE_730,
        AS_OF,
        "the sequential step was already taken; a second anabolic course is a specialist decision",
    ),
    "holiday_reason": (
        with_meds(statement("alendronate", "2021-03-01", "2023-03-31"), keep=False),
        AS_OF,
        "drug holiday: alendronate coverage ended 2023-03-31, before the follow-up DXA 2024-05-20: "
        "change reflects time off therapy, not non-response",
    ),
    "adherence_advice_reason": (
        NON_ADHERENT,
        AS_OF,
        "apparent non-response may reflect exposure; review adherence and absorption; an IV or injectable "
        "agent may be considered",
    ),
    "scanner_change_reason": (
        SCANNER_CHANGED,
        AS_OF,
        "scanner changed between DXAs (2021-02-15: DXA-1 (SN 1001); 2024-05-20: DXA-2): "
        "change not interpretable",
    ),
    "alp_workup_flag": (
        with_labs(alkaline_phosphatase=lab("alkaline_phosphatase", "150", high="120")),
        AS_OF,
        "R9b: work up raised alkaline phosphatase first; PTH analogues excluded pending work-up",
    ),
    "secondary_hpt_flag": (
        with_findings(HPT_SECONDARY),
        AS_OF,
        "R9c: secondary (non-renal) hyperparathyroidism: correct the cause first",
    ),
    "hpt_type_unknown_flag": (
        with_findings(finding({"hyperparathyroidism"}, None, "HPT")),
        AS_OF,
        "R9c: hyperparathyroidism, type not recorded: clarify and correct first",
    ),
    "calcium_low_flag": (
        with_labs(calcium=lab("calcium", "8.0", low="8.6", high="10.2")),
        AS_OF,
        "R9c: corrected calcium 8.0 mg/dL below range: correct first (romosozumab excluded while low)",
    ),
    "hypocalcaemia_flag": (
        with_findings(finding({"hypocalcaemia"}, "2025-01-01", "hypocalcaemia")),
        AS_OF,
        "R9c: hypocalcaemia coded: hypocalcaemia (2025-01-01): "
        "correct first (romosozumab excluded while low)",
    ),
    "renal_advice_reason": (
        with_labs(egfr=lab("egfr", "25")),
        AS_OF,
        "follow-on bisphosphonates not recommended; denosumab boxed warning in advanced CKD; PTH analogues "
        'contraindicated in severe renal impairment (EU label)"',
    ),
    "renal_transplant_advice_reason": (
        with_findings(finding({"kidney_transplant"}, "2020-01-01", "kidney transplant")),
        AS_OF,
        "contraindicated in severe renal impairment (EU label); post-transplant bone disease",
    ),
    "all_agents_excluded_reason": (
        replace(MALE, findings=(finding({"paget_disease_of_bone"}, "2010-01-01", "Paget"),)),
        AS_OF,
        '"every anabolic agent is excluded"',
    ),
    "denosumab_overdue_warning": (
        OVERDUE,
        AS_OF,
        "Last denosumab 60 mg injection 2024-06-01 (365 days before 2025-06-01).",
    ),
    "follow_on_missing_warning": (
        FOLLOW_ON_MISSING,
        AS_OF,
        "Teriparatide course ended 2024-12-31; no anti-resorptive recorded since.",
    ),
    "prior_cv_event": (
        with_findings(finding({"myocardial_infarction"}, "2020-01-01", "MI")),
        AS_OF,
        "prior MI or stroke: MI (2020-01-01)",
    ),
    "tia_caution": (
        with_findings(finding({"tia"}, "2020-01-01", "TIA")),
        AS_OF,
        "TIA on record: TIA (2020-01-01)",
    ),
    "romosozumab_dose_limit_exclusion": (ROMOSOZUMAB_12, AS_OF, "12 romosozumab doses already (limit 12)"),
    "calcium_low_exclusion": (
        with_labs(calcium=lab("calcium", "8.0", low="8.6", high="10.2")),
        AS_OF,
        '"corrected calcium below range"',
    ),
    "hypocalcaemia_exclusion": (
        with_findings(finding({"hypocalcaemia"}, "2025-01-01", "hypocalcaemia")),
        AS_OF,
        '"hypocalcaemia coded: hypocalcaemia (2025-01-01)"',
    ),
    "romosozumab_male_exclusion": (MALE, AS_OF, "male: romosozumab is off-label in men"),
    "sex_not_female_caution": (
        replace(BASE, demographics=Demographics(d("1957-04-01"), "unknown", False)),
        AS_OF,
        "sex not recorded as female",
    ),
    "allergy_exclusion": (with_findings(ROMOSOZUMAB_ALLERGY), AS_OF, "allergy: romosozumab allergy"),
    "paget_exclusion": (
        with_findings(finding({"paget_disease_of_bone"}, "2010-01-01", "Paget")),
        AS_OF,
        "Paget disease of bone: Paget (2010-01-01)",
    ),
    "alp_unexplained_exclusion": (
        with_labs(alkaline_phosphatase=lab("alkaline_phosphatase", "150", high="120")),
        AS_OF,
        "unexplained raised alkaline phosphatase: work-up pending",
    ),
    "skeletal_radiation_exclusion": (
        with_findings(finding({"skeletal_radiation"}, "2015-01-01", "spine radiation")),
        AS_OF,
        "skeletal radiation: spine radiation (2015-01-01)",
    ),
    "hypercalcaemia_lab_exclusion": (
        replace(TERIPARATIDE_RUNNING, labs=with_labs(calcium=lab("calcium", "10.8", high="10.2")).labs),
        AS_OF,
        "contraindication recorded during teriparatide: hypercalcaemia (corrected calcium above range)",
    ),
    "hypercalcaemia_coded_exclusion": (
        replace(
            TERIPARATIDE_RUNNING, findings=(finding({"hypercalcaemia"}, "2025-02-01", "hypercalcaemia"),)
        ),
        AS_OF,
        "contraindication recorded during teriparatide: hypercalcaemia coded: hypercalcaemia (2025-02-01)",
    ),
    "primary_hpt_exclusion": (
        replace(TERIPARATIDE_RUNNING, findings=(HPT_PRIMARY,)),
        AS_OF,
        "contraindication recorded during teriparatide: active primary hyperparathyroidism",
    ),
    "radiotherapy_caution": (
        with_findings(finding({"radiotherapy_any"}, "2015-01-01", "breast radiotherapy")),
        AS_OF,
        "radiotherapy on record (breast radiotherapy): confirm the field was not skeletal",
    ),
    "urolithiasis_caution": (
        with_findings(finding({"urolithiasis"}, "2019-01-01", "kidney stone")),
        AS_OF,
        "urolithiasis on record: kidney stone (2019-01-01)",
    ),
    "hip_after_bisphosphonate_reason": (BASE, AS_OF, "total hip failing after a bisphosphonate"),
    "follow_on_men_exclusion": (MALE, AS_OF, '"not used in men"'),
    "follow_on_after_denosumab_exclusion": (
        PRIOR_DENOSUMAB_365,
        AS_OF,
        "after prior denosumab: back to denosumab or to zoledronic acid",
    ),
    "follow_on_after_denosumab_reason": (
        PRIOR_DENOSUMAB_365,
        AS_OF,
        "after prior denosumab: never leave the patient uncovered",
    ),
    "jaw_osteonecrosis_caution": (
        with_findings(finding({"osteonecrosis_of_jaw"}, "2020-01-01", "ONJ")),
        AS_OF,
        "osteonecrosis of the jaw on record: ONJ (2020-01-01)",
    ),
    "atypical_femoral_fracture_caution": (
        with_findings(finding({"atypical_femoral_fracture"}, "2020-01-01", "AFF")),
        AS_OF,
        "atypical femoral fracture on record: AFF (2020-01-01)",
    ),
    "bone_malignancy_reason": (
        with_findings(finding({"bone_malignancy"}, "2020-01-01", "bone metastasis")),
        AS_OF,
        "skeletal malignancy or bone metastasis: bone metastasis (2020-01-01)",
    ),
    "oncology_dose_reason": (
        with_meds(administration("denosumab", "2024-01-01", 28, role="oncology_dose", label="Xgeva 120 mg")),
        AS_OF,
        "oncology-dose bone agent on record: Xgeva 120 mg",
    ),
    "unknown_strength_reason": (
        replace(
            with_meds(statement("zoledronic_acid", "2021-03-01", strength="unknown"), keep=False),
            findings=(finding(set(), "2019-01-01", "breast cancer", is_cancer=True),),
        ),
        AS_OF,
        "zoledronic acid of unknown strength in a patient with a cancer diagnosis",
    ),
    "dose_not_recorded_caveat": (
        with_meds(statement("alendronate", "2021-03-01", strength="unknown"), keep=False),
        AS_OF,
        "dose not recorded: oncology use not excluded",
    ),
    "anabolic_ordered_caveat": (
        with_meds(
            MedicationRecord(
                agent="teriparatide",
                role="anabolic",
                source="request",
                status="active",
                resource_id="mr-1",
                event_date=d("2025-05-01"),
                intent="order",
                interval_days=1,
            )
        ),
        AS_OF,
        "ordered 2025-05-01; no dispensing or administration recorded — confirm started",
    ),
    "anabolic_contraindication_reason": (
        replace(TERIPARATIDE_RUNNING, labs=with_labs(calcium=lab("calcium", "10.8", high="10.2")).labs),
        AS_OF,
        "contraindication recorded during teriparatide: hypercalcaemia (corrected calcium above range)",
    ),
    "anabolic_running_reason": (
        ROMOSOZUMAB_RUNNING,
        AS_OF,
        "romosozumab course running since 2024-08-01; planned end 2025-08-01",
    ),
    "course_limit_reason": (
        with_meds(statement("teriparatide", "2023-06-01", role="anabolic", interval_days=1)),
        AS_OF,
        "course limit reached: start the follow-on",
    ),
    "vertebral_fractures_reason": (
        with_findings(
            finding({"vertebral_fracture"}, "2015-01-01", "v1", fracture_site="vertebra"),
            finding({"vertebral_fracture"}, "2015-06-01", "v2", fracture_site="vertebra"),
        ),
        AS_OF,
        "2 distinct vertebral fractures",
    ),
    "low_trauma_caveat": (
        with_findings(finding({"fracture"}, "2024-06-01", "hip fracture", fracture_site="hip_femur")),
        AS_OF,
        "confirm low-trauma mechanism (fracture not coded as osteoporotic)",
    ),
    "frax_missing_caveat": (BASE, AS_OF, "FRAX not on record"),
    "albumin_missing_caveat": (BASE, AS_OF, "albumin not on record: calcium not corrected"),
    "spine_not_assessable_caveat": (
        bmd_record({"th": "-2.6", "ls": "-2.9", "fn": "-2.7"}, {"th": "-2.5", "fn": "-2.6"}),
        AS_OF,
        "spine not assessable: decided on the total hip alone",
    ),
    "denosumab_overdue_old_caveat": (
        with_meds(administration("denosumab", "2023-03-01", 183)),
        AS_OF,
        "last denosumab injection 2023-03-01 more than 24 months ago",
    ),
}


def rule_text_json(record: PatientRecord, day: date, knowledge: Knowledge) -> str:
    """The decision object (§9) and the cards of `record` on `day`, as one JSON text."""
    decision = evaluate(record, knowledge, day)
    return json.dumps([decision.to_json(), cards(decision, knowledge)], ensure_ascii=False)


def check_rule_text(c: Change) -> None:
    """The rule's sentence is the knowledge file's template: a changed template is what the decision
    object (§9) and the cards carry (the duration card only with `policy.duration_card`)."""
    record, day, packaged = RULE_TEXTS[c.path.split(".")[1]]
    assert packaged in rule_text_json(record, day, c.default)
    assert packaged not in rule_text_json(record, day, c.changed)
    assert str(c.new) not in rule_text_json(record, day, c.default)
    assert str(c.new) in rule_text_json(record, day, c.changed)


LAST_DENOSUMAB = date(2025, 1, 1)  # due 2025-07-02 (183 days), latest switch 2025-08-01 (7 months)
PLAN_CALLS: dict[str, Callable[[Knowledge], tuple[str, ...]]] = {
    "plan_transition_denosumab": lambda k: phase_plan(
        "romosozumab", "denosumab", LAST_DENOSUMAB, 0, k, as_of=date(2025, 6, 1)
    ),
    "plan_transition_denosumab_due_passed": lambda k: phase_plan(
        "romosozumab", "denosumab", LAST_DENOSUMAB, 0, k, as_of=date(2025, 7, 10)
    ),
    "plan_transition_denosumab_late": lambda k: phase_plan(
        "romosozumab", "denosumab", LAST_DENOSUMAB, 0, k, as_of=date(2025, 9, 1)
    ),
    "plan_pth_after_denosumab": lambda k: phase_plan(
        "teriparatide", "denosumab", LAST_DENOSUMAB, 0, k, as_of=date(2025, 6, 1)
    ),
    "plan_anabolic_pth": lambda k: phase_plan("teriparatide", None, None, 0, k),
    "before_pth": lambda k: before_starting("female", "teriparatide", k),
}


def check_plan_text(c: Change) -> None:
    call = PLAN_CALLS[c.path.split(".")[1]]
    assert str(c.new) not in " ".join(call(c.default))
    assert str(c.new) in " ".join(call(c.changed))


def check_summary(c: Change) -> None:
    key = c.path.split(".")[2]
    decision = Decision(outcome="ESCALATE", rule="R12", as_of=AS_OF, protocol_version="x")
    assert summary_for(key, decision, c.default) != c.new
    assert summary_for(key, decision, c.changed) == c.new


def check_title(c: Change) -> None:
    settings = test_settings()
    assert PatientViewService(settings, c.default).descriptor()["title"] == c.old
    assert PatientViewService(settings, c.changed).descriptor()["title"] == c.new


def check_version(c: Change) -> None:
    before, after = outcomes(c, BASE)
    assert before.protocol_version.startswith(f"{c.old}+") and after.protocol_version.startswith(f"{c.new}+")


def check_documentation(c: Change) -> None:
    """Documentation of fail-safe choices and code gaps: versioned (protocol_version), decides nothing."""
    before, after = outcomes(c, BASE)
    assert before.protocol_version != after.protocol_version
    assert {**before.to_json(), "protocol_version": ""} == {**after.to_json(), "protocol_version": ""}


DEFAULT_TABLES = PACKAGED_DIR / "codes"


# ----- the cases ------------------------------------------------------------------------------------------
TH, LS = {"th": "-2.6", "ls": "-2.9", "fn": "-2.7"}, {"fn": "-2.6"}
CASES: list[Case] = [
    Case("version", to("9.9.9"), check_version, ()),
    Case("title", to("Changed service title"), check_title, ()),
    Case("code_tables.*", lambda path, old: old, check_code_table, ()),
    Case(
        "code_additions.*.codes.*",
        lambda path, _old: [
            "ZZ9.9" if "icd" in get(path.rsplit(".", 2)[0] + ".system") else "999999999",
            "changed test code",
        ],
        check_addition_code,
        (),
    ),
    Case("code_additions.*.concept", another_concept, check_addition_concept, ()),
    Case("code_additions.*.system", another_system, check_addition_system, ()),
    Case("code_additions.*.table", to("unknown_table"), check_refused, (), refused=True),
    Case("code_additions.*.source", marked("Changed source"), check_documentation, ()),
    Case("concept_gaps.*.concept", marked("Changed gap"), check_in_card(BASE), ("3a-caveat",)),
    Case("concept_gaps.*.note", marked("Changed note"), check_documentation, ("3a-caveat",)),
    Case("concept_gaps.*.checked", marked("Changed checked"), check_in_card(BASE), ("3a-caveat",)),
    Case("interpretations.*.topic", marked("Changed topic"), check_documentation, ("3a-caveat",)),
    Case("interpretations.*.choice", marked("Changed choice"), check_documentation, ("3a-caveat",)),
    # thresholds
    Case("thresholds.min_age_years", to(70), check_min_age, ("R1",)),
    Case("thresholds.t_score_osteoporosis", to("-3.0"), check_t_score_osteoporosis, ("R5",)),
    Case("thresholds.t_score_low_bone_mass", to("-2.3"), check_low_bone_mass, ("R5",)),
    Case("thresholds.frax_mof_high_risk", to("25.0"), check_frax_high_risk(not_low_t(mof="22")), ("R5",)),
    Case("thresholds.frax_hip_high_risk", to("4.0"), check_frax_high_risk(not_low_t(hip="3.5")), ("R5",)),
    Case(
        "thresholds.target_delta_t_total_hip",
        to("0.10"),
        check_target(
            bmd_record(TH, {"th": "-2.5", "ls": "-2.3", "fn": "-2.6"}), "total hip", "targets +{new} /"
        ),
        ("R10", "5-dxa", "3b-rounding"),
    ),
    Case(
        "thresholds.target_delta_t_lumbar_spine",
        to("0.20"),
        check_target(
            bmd_record(TH, {"th": "-2.3", "ls": "-2.7", "fn": "-2.6"}), "lumbar spine", "/ +{new} T"
        ),
        ("R10", "5-dxa", "3b-rounding"),
    ),
    Case(
        "thresholds.target_pct_total_hip",
        to("2.5"),
        check_target(
            bmd_record(
                {**TH, "th_bmd": "0.800"}, {"th": "-2.5", "ls": "-2.3", "fn": "-2.6", "th_bmd": "0.820"}
            ),
            "total hip",
            "({new} /",
        ),
        ("R10", "5-dxa", "3b-rounding"),
    ),
    Case(
        "thresholds.target_pct_lumbar_spine",
        to("5.0"),
        check_target(
            bmd_record(
                {**TH, "ls_bmd": "0.900"}, {"th": "-2.3", "ls": "-2.7", "fn": "-2.6", "ls_bmd": "0.945"}
            ),
            "lumbar spine",
            "/ {new} %)",
        ),
        ("R10", "5-dxa", "3b-rounding"),
    ),
    Case("thresholds.personalised_target_t", to("-2.7"), check_personalised_target(BASE), ("R11", "7-plan")),
    Case(
        "thresholds.personalised_target_t_after_fracture",
        to("-2.7"),
        check_personalised_target(
            with_findings(finding({"vertebral_fracture"}, "2015-01-01", "v1", fracture_site="vertebra"))
        ),
        ("R11", "7-plan", "3b-fractures"),
    ),
    Case("thresholds.egfr_renal_gate", to("80"), check_renal_gate, ("RENAL",)),
    Case("thresholds.egfr_follow_on_bisphosphonate", to("80"), check_follow_on_band, ("7-plan",)),
    Case("thresholds.vitamin_d_low_ng_ml", to("40"), check_vitamin_d, ("R9c",)),
    Case("thresholds.coverage_ratio_min", to("0.90"), check_coverage_ratio, ("R7a", "4-coverage")),
    Case("thresholds.aace_t_score", to("-2.8"), check_aace(BASE), ("3b-aace",)),
    Case(
        "thresholds.aace_frax_mof",
        to("20"),
        check_aace(replace(BASE, frax=frax("2024-05-20", mof="25"))),
        ("3b-aace",),
    ),
    Case(
        "thresholds.aace_frax_hip",
        to("3.5"),
        check_aace(replace(BASE, frax=frax("2024-05-20", hip="4.0"))),
        ("3b-aace",),
    ),
    # windows
    Case("windows.therapy_min_months", to(60), check_therapy_min, ("R7", "3b-months")),
    Case("windows.baseline_before_start_months", to(0), check_baseline_before, ("R8", "5-dxa")),
    Case("windows.baseline_after_start_months", to(1), check_baseline_after, ("R8", "5-dxa")),
    Case("windows.followup_max_age_months", to(12), check_followup_age, ("R7f", "5-dxa")),
    Case("windows.lab_lookback_months", to(2), check_lab_lookback, ("3b-labs", "3a-cap")),
    Case("windows.recent_fracture_months", to(48), check_recent_fracture, ("R4", "3b-fractures")),
    Case("windows.distinct_vertebral_days", to(150), check_distinct_vertebral, ("R4", "3b-fractures")),
    Case("windows.cv_event_exclusion_months", to(24), check_cv_window, ("6-agents",)),
    Case("windows.episode_gap_months", to(36), check_episode_gap, ("3b-therapy-start", "R7a")),
    Case("windows.adherence_gap_days", to(120), check_adherence_gap, ("R7a", "4-coverage")),
    Case("windows.denosumab_max_interval_days", to(230), check_denosumab_interval, ("R7a",)),
    Case("windows.denosumab_overdue_max_months", to(36), check_overdue_max, ("W-DENOSUMAB_OVERDUE",)),
    Case("windows.holiday_bisphosphonate_months", to(18), check_holiday, ("R7h",)),
    Case(
        "windows.pth_allowance_days",
        to(800),
        check_allowance(TERIPARATIDE_730, "teriparatide"),
        ("R3c", "6-agents", "4-anabolic-course"),
    ),
    Case(
        "windows.abaloparatide_allowance_days",
        to(548),
        check_allowance(TERIPARATIDE_600, "abaloparatide"),
        ("R3c", "6-agents", "4-anabolic-course"),
    ),
    Case("windows.on_anabolic_card_days", to(30), check_on_anabolic_card, ("R3",)),
    Case(
        "windows.follow_on_missing_months", to(3), check_follow_on_missing, ("W-ANABOLIC_FOLLOW_ON_MISSING",)
    ),
    Case("windows.dialysis_lookback_days", to(200), check_dialysis, ("RENAL",)),
    Case("windows.alp_fracture_months", to(12), check_alp_fracture, ("R9b",)),
    Case(
        "windows.prior_denosumab_min_days", to(300), check_prior_denosumab, ("3b-prior-denosumab", "6-agents")
    ),
    Case("windows.denosumab_tail_days", to(200), check_prior_denosumab, ("3b-prior-denosumab", "6-agents")),
    Case(
        "windows.pth_caution_denosumab_months", to(24), check_pth_caution, ("6-agents", "3b-prior-denosumab")
    ),
    Case("windows.denosumab_transition_months", to(9), check_transition, ("7-plan",)),
    # policy
    Case("policy.romosozumab_prior_cv_event", to("exclude"), check_prior_cv_policy, ("6-agents",)),
    Case("policy.romosozumab_in_men", to("allow"), check_romosozumab_men, ("6-agents", "3b-sex")),
    Case("policy.abaloparatide_in_men", to("exclude"), check_abaloparatide_men, ("6-agents", "3b-sex")),
    Case("policy.response_met_card", to(True), check_card_policy(TARGETS_MET, "RESPONSE_MET"), ("R10",)),
    Case(
        "policy.duration_card", to(True), check_card_policy(SHORT_THERAPY, "NOT_ELIGIBLE_DURATION"), ("R7",)
    ),
    # lab defaults
    Case("lab_defaults.calcium.low", to("8.7"), check_calcium_low, ("R9c", "3b-labs")),
    Case("lab_defaults.calcium.high", to("9.9"), check_calcium_high, ("R9a", "3b-labs")),
    Case("lab_defaults.alkaline_phosphatase.high", to("130"), check_alp_high, ("R9b", "3b-labs")),
    Case("lab_defaults.*.unit", to("mmol/L"), check_refused, ("3b-labs",), refused=True),
    # dosing (through FHIR parse + extract + exposure)
    Case("dosing.*.default_days", lambda _p, old: old + 3, check_default_days, ("4-coverage",)),
    Case("dosing.*.by_strength_mg.*", lambda _p, old: old + 3, check_by_strength, ("4-coverage",)),
    Case(
        "dosing.romosozumab.months_per_dose", to(2), check_months_per_dose, ("4-coverage", "3c-dose-per-date")
    ),
    Case("dosing.*.pen_days", lambda _p, old: old + 14, check_pen_days, ("4-coverage",)),
    # oncology markers (R2)
    Case(
        "oncology_strengths_mg.*",
        to(["999"]),
        check_oncology_marker(lambda c: f"{name_of(c.path.split('.')[1])} {c.old[0]} mg"),
        ("R2", "4-oncology"),
    ),
    Case(
        "oncology_min_interval_days.*",
        lambda _p, old: old - 20,
        check_oncology_interval,
        ("R2", "4-oncology"),
    ),
    Case("medication_brands.*.brand", to("unusedbrandword"), check_brand_name, ("3c-brands",)),
    Case("medication_brands.*.ingredient", another_ingredient, check_brand_ingredient, ("3c-brands",)),
    Case(
        "medication_brands.*.strength_mg",
        lambda _p, old: ONCOLOGY_FLIP[old],
        check_brand_strength,
        ("3c-brands", "4-oncology", "R2"),
    ),
    Case("medication_brands.*.source", marked("Changed source"), check_documentation, ("3c-brands",)),
    Case("ingredient_names.*", to(["unusedingredientname"]), check_ingredient_names, ("3c-brands",)),
    # code lists
    Case("fracture_sites.icd_prefixes.*.prefix", to("Q99.9"), check_icd_prefix, ("R4", "3b-fractures")),
    Case("fracture_sites.icd_prefixes.*.pattern", to("Q99\\.9"), check_icd_prefix, ("R4", "3b-fractures")),
    Case("fracture_sites.icd_prefixes.*.system", other_icd_system, check_icd_prefix, ("R4", "3b-fractures")),
    Case("fracture_sites.icd_prefixes.*.source", marked("Changed source"), check_documentation, ("R4",)),
    Case(
        "fracture_sites.icd_prefixes.*.site",
        lambda _p, old: "rib" if old != "rib" else "pelvis",
        check_icd_prefix,
        ("R4", "3b-fractures"),
    ),
    Case(
        "fracture_sites.snomed_words.*.word", to("unusedsiteword"), check_snomed_word, ("R4", "3b-fractures")
    ),
    Case(
        "fracture_sites.snomed_words.*.site",
        lambda _p, old: "rib" if old != "rib" else "pelvis",
        check_snomed_word,
        ("R4", "3b-fractures"),
    ),
    Case("fracture_sites.not_counted_words", to([]), check_not_counted, ("R4", "3b-fractures")),
    Case("hyperparathyroidism_types.*.*", to([SNOMED, "0"]), check_hpt, ("R9a", "R9c")),
    # card wording and suggestions
    Case("agents.*.display", marked("Changed agent"), check_in_card(BASE), ("6-agents",)),
    Case("agents.*.regimen", marked("Changed regimen"), check_in_card(BASE), ("6-agents",)),
    Case("agents.*.code.*", marked("Changed coding"), check_in_card(BASE), ("6-agents",)),
    Case("follow_on_agents.*.display", marked("Changed follow on"), check_in_card(BASE), ("7-plan",)),
    Case(
        "follow_on_agents.*.kind",
        lambda _p, old: "denosumab" if old != "denosumab" else "bisphosphonate",
        check_refused,
        ("7-plan",),
        refused=True,
    ),
    Case("override_reasons.*.*", marked("Changed reason"), check_in_card(BASE), ()),
    Case("card_source.url", to("https://example.org/changed-source"), check_in_card(BASE), ()),
    Case("card_source.*", marked("Changed source"), check_in_card(BASE), ()),
    Case(
        "sources.*.url",
        lambda path, _old: f"https://example.org/{path.replace('.', '-')}",
        check_in_card(BASE),
        (),
    ),
    Case("sources.*.label", marked("Changed label"), check_in_card(BASE), ()),
    Case("texts.summaries.*", marked("Changed summary"), check_summary, ()),
    Case(
        "texts.denosumab_overdue_detail",
        marked("Changed line"),
        check_in_card(OVERDUE),
        ("W-DENOSUMAB_OVERDUE",),
    ),
    Case(
        "texts.follow_on_missing_detail",
        marked("Changed line"),
        check_in_card(FOLLOW_ON_MISSING),
        ("W-ANABOLIC_FOLLOW_ON_MISSING",),
    ),
    Case("texts.targets_line", marked("Changed line"), check_in_card(BASE), ("5-dxa",)),
    *(Case(f"texts.{name}", marked("Changed line"), check_text_in_detail, ()) for name in TEXT_DECISIONS),
    *(Case(f"texts.{name}", marked("Changed plan"), check_plan_text, ("7-plan",)) for name in PLAN_CALLS),
    *(Case(f"texts.{name}", marked("Changed rule text"), check_rule_text, ()) for name in RULE_TEXTS),
    Case("texts.missing_names.*", marked("Changed name"), check_missing_text, ("3a-blocking",)),
    Case("texts.missing_lines.*", marked("Changed missing"), check_missing_text, ("3a-blocking",)),
    Case("texts.*", marked("Changed line"), check_in_card(BASE), ()),
]


def case_for(path: str) -> Case | None:
    for case in CASES:  # first match wins: specific patterns are listed before general ones
        if case.matches(path):
            return case
    return None


LEAVES = [(path, value) for path, value in leaves(PACKAGED_DATA)]


def test_every_key_has_a_case() -> None:
    uncovered = [path for path, _ in LEAVES if case_for(path) is None]
    assert uncovered == [], f"knowledge keys without a case proving they are read: {uncovered}"
    unused = [c.pattern for c in CASES if not any(c.matches(path) for path, _ in LEAVES)]
    assert unused == [], f"cases for keys that no longer exist: {unused}"


def _params() -> list[Any]:
    out = []
    for path, old in LEAVES:
        case = case_for(path)
        if case is None:
            continue
        marks = [pytest.mark.protocol(*case.protocol)] if case.protocol else []
        out.append(pytest.param(path, old, case, id=path, marks=marks))
    return out


def _changed_knowledge(path: str, old: Any, case: Case) -> tuple[Any, Knowledge]:
    if case.pattern == "code_tables.*":
        folder = table_folder()
        table = path.split(".")[1]
        target = folder / "codes" / f"{table}.csv"
        with target.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        with target.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([rows[0], *rows[2:]])  # the first code row left out
        return old, load_knowledge(write_variant(lambda _data: None, folder))
    new = case.new_value(path, old)
    return new, variant(path, new)


@pytest.mark.parametrize(("path", "old", "case"), _params())
def test_changed_value_is_read(path: str, old: Any, case: Case) -> None:
    if case.refused:
        with pytest.raises(KnowledgeError) as error:
            variant(path, case.new_value(path, old))
        assert path in str(error.value)
        return
    new, changed = _changed_knowledge(path, old, case)
    assert new != old or case.pattern == "code_tables.*"
    case.check(Change(path, old, new, DEFAULT, changed))


@pytest.mark.parametrize(("path", "old", "case"), [p for p in _params() if not p.values[2].refused])
def test_check_fails_when_the_value_is_not_read(path: str, old: Any, case: Case) -> None:
    """Each case can fail: with the packaged file in place of the changed one its check fails."""
    new = case.new_value(path, old) if case.pattern != "code_tables.*" else old
    with pytest.raises(AssertionError):
        case.check(Change(path, old, new, DEFAULT, DEFAULT))
