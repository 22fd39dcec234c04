"""Card rendering (protocol §1, §6, §8, §9; CDS Hooks notes §1.6 C1–C14, §3.1–3.2)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any, get_args

import pytest

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.schema import PACKAGED_DIR
from cds_service.present.cards import fit_summary, render_cards, summary_for
from cds_service.rules.decision import (
    AgentAssessment,
    Decision,
    DxaEvidence,
    Evidence,
    ExposureSummary,
    FollowOnAssessment,
    Outcome,
    SiteResponse,
    WarningDetail,
)

AS_OF = date(2025, 6, 1)
KNOWLEDGE = load_knowledge()
ALL_OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
PINNED = "Evaluated as of 2025-06-01 (pinned)"


def uuids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def knowledge_with(**policy: bool) -> Knowledge:
    model = KNOWLEDGE.model
    new_model = model.model_copy(update={"policy": model.policy.model_copy(update=policy)})
    return Knowledge(new_model, "0" * 64, PACKAGED_DIR)


def knowledge_with_summaries(summaries: dict[str, str]) -> Knowledge:
    model = KNOWLEDGE.model
    texts = model.texts.model_copy(update={"summaries": summaries})
    return Knowledge(model.model_copy(update={"texts": texts}), "0" * 64, PACKAGED_DIR)


def full_evidence(text: str = "") -> Evidence:
    return Evidence(
        dxa=(
            DxaEvidence(
                date(2021, 2, 15), "total_hip", "left", "t_score", Decimal("-2.9"), "baseline", "baseline"
            ),
            DxaEvidence(
                date(2024, 5, 20),
                "total_hip",
                "left",
                "t_score",
                Decimal("-2.8"),
                "same scanner" + text,
                "follow-up",
            ),
            DxaEvidence(
                date(2024, 5, 20), "lumbar_spine", None, "bmd", Decimal("0.812"), "same scanner", "follow-up"
            ),
        ),
        responses=(
            SiteResponse(
                "total_hip",
                date(2021, 2, 15),
                date(2024, 5, 20),
                Decimal("0.10"),
                Decimal("1.2"),
                "pct",
                Decimal("3.0"),
                False,
            ),
            SiteResponse(
                "lumbar_spine",
                date(2021, 2, 15),
                date(2024, 5, 20),
                Decimal("0.60"),
                None,
                "delta_t",
                Decimal("0.50"),
                True,
            ),
        ),
        exposure=ExposureSummary(
            ("alendronate",),
            date(2021, 1, 10),
            date(2024, 5, 20),
            Decimal("0.92"),
            12,
            "administrations/dispenses" + text,
        ),
        labs=(("eGFR" + text, "65 mL/min/1.73m2 (2025-01-01)" + text),),
        findings=("vertebral fracture 2019-03-01" + text,),
        not_checked=("urolithiasis: not checked, no code list" + text,),
        plan=("stop alendronate the day romosozumab starts" + text,),
        monitoring=("DXA at the end of the anabolic phase, same scanner" + text,),
        before_starting=("PTH before a PTH analogue" + text,),
        target_t=Decimal("-2.5"),
        aace_very_high_risk=True,
    )


def agents(text: str = "") -> tuple[AgentAssessment, ...]:
    return (
        AgentAssessment("romosozumab", "preferred", 1, ("hip failing after bisphosphonate" + text,)),
        AgentAssessment("abaloparatide", "option", 2, ()),
        AgentAssessment("teriparatide", "excluded", None, ("730 days of PTH-analogue use already" + text,)),
    )


def make(outcome: Outcome, rule: str = "R12", text: str = "", **kw: Any) -> Decision:
    base: dict[str, Any] = {
        "reasons": ("total hip ΔT +0.10 < 0.20 (2021-02-15 → 2024-05-20)" + text,),
        "caveats": ("adherence not verifiable (orders only)" + text,),
        "evidence": full_evidence(text),
        "first_line_agent": "alendronate",
        "in_scope": True,
    }
    if outcome in ("ESCALATE", "CONSIDER", "SPECIALIST_REVIEW"):
        base["agents"] = agents(text)
        base["follow_on"] = (
            FollowOnAssessment("alendronate", "preferred", ()),
            FollowOnAssessment("denosumab", "caution", ("osteonecrosis of the jaw on record" + text,)),
        )
    if outcome == "ESCALATE":
        base["suggestions_allowed"] = True
    if outcome == "NOT_ELIGIBLE_DURATION":
        base["reevaluate_from"] = date(2026, 1, 10)
    if outcome == "INSUFFICIENT_DATA":
        base["missing"] = ("followup_dxa",)
        base["reasons"] = ("DXA with total hip on or after 2024-10-10" + text,)
    if outcome == "ON_ANABOLIC":
        base["on_anabolic_card"] = True
    base.update(kw)
    return Decision(outcome, rule, AS_OF, KNOWLEDGE.protocol_version, **base)


def render(
    decision: Decision,
    knowledge: Knowledge = KNOWLEDGE,
    *,
    behavior: Any = "at-most-one",
    pinned: bool = False,
    factory: Callable[[], str] | None = None,
) -> list[dict[str, Any]]:
    return render_cards(
        decision,
        knowledge,
        patient_id="pat-1",
        selection_behavior=behavior,
        as_of_pinned=pinned,
        new_uuid=factory or uuids(),
    )


def all_cards(pinned: bool = False, text: str = "") -> Iterator[tuple[Decision, list[dict[str, Any]]]]:
    warn = (
        WarningDetail("DENOSUMAB_OVERDUE", "last denosumab 60 mg injection 2024-07-15 (321 days ago)" + text),
        WarningDetail("ANABOLIC_FOLLOW_ON_MISSING", "teriparatide ended 2025-01-31" + text),
    )
    loud = knowledge_with(response_met_card=True, duration_card=True)
    for outcome in ALL_OUTCOMES:
        for rule in ("R12", "R11"):
            decision = make(outcome, rule, text=text, warnings=warn)
            yield decision, render(decision, loud, pinned=pinned)


# ----- which cards, indicators ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("outcome", "indicator"),
    [
        ("ESCALATE", "warning"),
        ("CONSIDER", "info"),
        ("NOT_ELIGIBLE_ADHERENCE", "info"),
        ("VERY_HIGH_RISK_PATHWAY", "warning"),
        ("SPECIALIST_REVIEW", "info"),
        ("INSUFFICIENT_DATA", "info"),
        ("ON_ANABOLIC", "info"),
    ],
)
def test_outcome_indicator(outcome: Outcome, indicator: str) -> None:
    cards = render(make(outcome))
    assert [c["indicator"] for c in cards] == [indicator]


@pytest.mark.parametrize(
    "outcome",
    [
        "RESPONSE_MET",
        "NOT_ELIGIBLE_NOT_HIGH_RISK",
        "NOT_ELIGIBLE_NO_FIRST_LINE",
        "NOT_ELIGIBLE_DURATION",
        "NOT_APPLICABLE",
    ],
)
def test_outcomes_without_card(outcome: Outcome) -> None:
    assert render(make(outcome)) == []


def test_policy_cards() -> None:
    loud = knowledge_with(response_met_card=True, duration_card=True)
    met = render(make("RESPONSE_MET"), loud)
    assert [c["indicator"] for c in met] == ["info"]
    assert "on track" in met[0]["summary"]
    duration = render(make("NOT_ELIGIBLE_DURATION"), loud)
    assert [c["indicator"] for c in duration] == ["info"]
    assert "2026-01-10" in duration[0]["summary"]
    assert "2026-01-10" in duration[0]["detail"]


@pytest.mark.protocol("3a-blocking")
def test_insufficient_data_only_in_scope() -> None:
    assert render(make("INSUFFICIENT_DATA", in_scope=False)) == []


@pytest.mark.protocol("R3")
def test_on_anabolic_only_with_flag() -> None:
    assert render(make("ON_ANABOLIC", on_anabolic_card=False)) == []
    cards = render(make("ON_ANABOLIC", anabolic_agent="teriparatide", planned_end=date(2025, 7, 20)))
    assert cards[0]["summary"].startswith("Teriparatide course ends 2025-07-20")


@pytest.mark.parametrize("outcome", [o for o in ALL_OUTCOMES if o != "NOT_APPLICABLE"])
@pytest.mark.protocol("W-DENOSUMAB_OVERDUE", "W-ANABOLIC_FOLLOW_ON_MISSING")
def test_warnings_are_critical_cards_even_without_outcome_card(outcome: Outcome) -> None:
    warn = (
        WarningDetail("DENOSUMAB_OVERDUE", "last injection 2024-07-15"),
        WarningDetail("ANABOLIC_FOLLOW_ON_MISSING", "course ended 2025-01-31"),
        WarningDetail("DENOSUMAB_OVERDUE", "duplicate"),
    )
    cards = render(make(outcome, warnings=warn))
    critical = [c for c in cards if c["indicator"] == "critical"]
    assert [c["source"]["topic"]["code"] for c in critical] == ["DENOSUMABOVERDUE", "ANABOLICFOLLOWONMISSING"]
    assert "Rebound vertebral fracture risk" in critical[0]["detail"]
    assert "last injection 2024" in critical[0]["detail"]
    assert "Gains are lost without a follow-on anti-resorptive." in critical[1]["detail"]
    codes = [c["source"]["topic"]["code"] for c in cards]
    assert len(codes) == len(set(codes))  # never two cards for the same outcome/warning


@pytest.mark.protocol("R0")
def test_not_applicable_has_no_cards_even_with_warnings() -> None:
    warn = (WarningDetail("DENOSUMAB_OVERDUE", "x"),)
    assert render(make("NOT_APPLICABLE", rule="R0", warnings=warn)) == []


# ----- card fields ---------------------------------------------------------------------------
def test_topic_codes_and_source() -> None:
    for _decision, cards in all_cards():
        for card in cards:
            topic = card["source"]["topic"]
            assert re.fullmatch(r"[A-Za-z0-9]{1,100}", topic["code"])
            assert "_" not in topic["code"]
            assert topic["system"] == KNOWLEDGE.model.card_source.topic_system
            assert topic["display"]
            assert card["source"]["label"] == KNOWLEDGE.model.card_source.label
            assert card["source"]["url"] == KNOWLEDGE.model.card_source.url
    cards = render(make("NOT_ELIGIBLE_ADHERENCE"))
    assert cards[0]["source"]["topic"]["code"] == "NOTELIGIBLEADHERENCE"


def test_override_reasons_are_codings_with_display() -> None:
    card = render(make("ESCALATE"))[0]
    assert card["overrideReasons"] == [
        {"system": r.system, "code": r.code, "display": r.display} for r in KNOWLEDGE.model.override_reasons
    ]


def test_extension_identical_on_every_card() -> None:
    for decision, cards in all_cards():
        for card in cards:
            assert card["extension"] == {"osteo-cds/decision": decision.to_json()}
        if len(cards) > 1:
            assert cards[0]["extension"] is not cards[1]["extension"]  # no aliasing between cards


def test_fresh_uuid_per_card_and_suggestion() -> None:
    for _decision, cards in all_cards():
        ids = [c["uuid"] for c in cards] + [s["uuid"] for c in cards for s in c.get("suggestions", [])]
        assert len(ids) == len(set(ids))


def test_no_empty_optional_fields() -> None:
    def walk(node: Any, path: str) -> None:
        assert node is not None, path
        if isinstance(node, dict):
            assert node, path
            for key, value in node.items():
                if key == "extension":
                    continue
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            assert node, path
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str):
            assert node.strip(), path

    for _decision, cards in all_cards(pinned=True):
        for card in cards:
            walk(card, "card")
    # ... while the decision object keeps its empty lists
    card = render(make("VERY_HIGH_RISK_PATHWAY"))[0]
    assert card["extension"]["osteo-cds/decision"]["agents"] == []
    assert card["extension"]["osteo-cds/decision"]["warnings"] == []


def test_source_url_omitted_when_not_configured() -> None:
    model = KNOWLEDGE.model
    source = model.card_source.model_copy(update={"url": None})
    knowledge = Knowledge(model.model_copy(update={"card_source": source}), "0" * 64, PACKAGED_DIR)
    card = render(make("ESCALATE"), knowledge)[0]
    assert "url" not in card["source"]


# ----- summaries -----------------------------------------------------------------------------
def test_summaries_short_with_long_placeholders() -> None:
    long_word = "x" * 300
    long_words = " ".join(["verylongagentname"] * 30)
    templates = dict(KNOWLEDGE.texts.summaries)
    # every template padded to 139 characters around its placeholders
    padded = {k: (v + " " + "p" * 200)[:139] for k, v in templates.items()}
    for knowledge in (KNOWLEDGE, knowledge_with_summaries(padded)):
        for first_line in (long_word, long_words):
            decision = make(
                "INSUFFICIENT_DATA",
                first_line_agent=first_line,
                agents=(AgentAssessment(long_words.replace(" ", "_"), "preferred", 1, ()),),
                missing=(
                    "birth_date",
                    "bmd_or_frax",
                    "medication_history",
                    "baseline_dxa",
                    "followup_dxa",
                    "total_hip_baseline",
                    "total_hip_followup",
                    "target_t_score",
                    "egfr",
                    "calcium",
                    "alkaline_phosphatase",
                    "unreadable_resources",
                    "some_unknown_" + long_word,
                ),
            )
            for key in templates:
                summary = summary_for(key, decision, knowledge)
                assert len(summary) < 140, (key, summary)
                assert "\n" not in summary
                assert "{" not in summary


def test_fit_summary() -> None:
    assert fit_summary("short") == "short"
    cut = fit_summary("word " * 60)
    assert len(cut) < 140
    assert cut.endswith("…")
    assert len(fit_summary("y" * 500)) == 139
    assert len(fit_summary("z" * 139)) == 139
    assert fit_summary("z" * 140).endswith("…")


def test_summary_examples() -> None:
    assert render(make("ESCALATE"))[0]["summary"] == (
        "BMD targets not met after 3 y of alendronate: consider anabolic therapy (romosozumab first)"
    )
    at_target = render(make("CONSIDER", rule="R11"))[0]["summary"]
    assert at_target == KNOWLEDGE.texts.summaries["CONSIDER_AT_TARGET"].format(first_line="alendronate")
    missing = render(make("INSUFFICIENT_DATA", missing=("followup_dxa", "egfr")))[0]["summary"]
    assert missing == "Osteoporosis escalation check: data missing (follow-up DXA, eGFR)"
    for _decision, cards in all_cards():
        for card in cards:
            assert len(card["summary"]) < 140


# ----- suggestions ---------------------------------------------------------------------------
@pytest.mark.protocol("6-agents")
def test_suggestions_shape() -> None:
    card = render(make("ESCALATE"))[0]
    assert card["selectionBehavior"] == "at-most-one"
    suggestions = card["suggestions"]
    assert [s["label"].split(":")[0] for s in suggestions] == [
        "Consider Romosozumab",
        "Consider Abaloparatide",
    ]
    assert suggestions[0]["isRecommended"] is True
    assert "isRecommended" not in suggestions[1]
    for suggestion, agent in zip(suggestions, ("romosozumab", "abaloparatide"), strict=True):
        spec = KNOWLEDGE.model.agents[agent]  # type: ignore[index]
        assert suggestion["label"] == f"Consider {spec.display}: {spec.regimen}"
        (action,) = suggestion["actions"]  # Epic: one action per suggestion
        assert action["type"] == "create"
        assert action["description"] == f"Draft order for review (not signed): {spec.display}"
        assert action["resource"] == {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": "Patient/pat-1"},
            "medicationCodeableConcept": {
                "coding": [
                    {"system": spec.code.system, "code": spec.code.code, "display": spec.code.display}
                ],
                "text": spec.display,
            },
            "dosageInstruction": [{"text": spec.regimen}],
        }
    assert KNOWLEDGE.texts.suggest_only_line in card["detail"]


@pytest.mark.protocol("6-agents")
def test_is_recommended_only_on_preferred() -> None:
    option_first = (
        AgentAssessment("teriparatide", "caution", 1, ("denosumab within 18 months",)),
        AgentAssessment("abaloparatide", "caution", 2, ("denosumab within 18 months",)),
        AgentAssessment("romosozumab", "excluded", None, ("male",)),
    )
    card = render(make("ESCALATE", agents=option_first))[0]
    assert all("isRecommended" not in s for s in card["suggestions"])
    assert len(card["suggestions"]) == 2  # excluded agents get no suggestion
    two_preferred = (
        AgentAssessment("romosozumab", "preferred", 1, ()),
        AgentAssessment("abaloparatide", "preferred", 2, ()),
    )
    at_most_one = render(make("ESCALATE", agents=two_preferred))[0]["suggestions"]
    assert sum(1 for s in at_most_one if s.get("isRecommended")) == 1
    any_card = render(make("ESCALATE"), behavior="any")[0]
    assert any_card["selectionBehavior"] == "any"


@pytest.mark.protocol("6-agents")
def test_suggestions_in_rank_order() -> None:
    shuffled = (
        AgentAssessment("teriparatide", "option", 3, ()),
        AgentAssessment("romosozumab", "preferred", 1, ()),
        AgentAssessment("abaloparatide", "option", 2, ()),
    )
    labels = [s["label"] for s in render(make("ESCALATE", agents=shuffled))[0]["suggestions"]]
    assert [label.split(":")[0] for label in labels] == [
        "Consider Romosozumab",
        "Consider Abaloparatide",
        "Consider Teriparatide",
    ]


@pytest.mark.parametrize(
    "decision",
    [
        make("CONSIDER", rule="R11", suggestions_allowed=True),
        make("CONSIDER", rule="R12", suggestions_allowed=False),
        make("ESCALATE", suggestions_allowed=False),
        make("SPECIALIST_REVIEW", rule="R13", suggestions_allowed=True),
    ],
)
def test_no_suggestions(decision: Decision) -> None:
    (card,) = render(decision)
    assert "suggestions" not in card
    assert "selectionBehavior" not in card
    assert KNOWLEDGE.texts.suggest_only_line not in card["detail"]


@pytest.mark.protocol("3a-cap", "6-agents")
def test_capped_consider_has_suggestions() -> None:
    card = render(make("CONSIDER", rule="R12", suggestions_allowed=True))[0]
    assert card["suggestions"]
    assert card["selectionBehavior"] == "at-most-one"


def test_selection_behavior_iff_suggestions() -> None:
    for _decision, cards in all_cards():
        for card in cards:
            assert ("selectionBehavior" in card) == ("suggestions" in card)


def test_invalid_inputs_rejected() -> None:
    with pytest.raises(ValueError, match="patient_id"):
        render_cards(
            make("ESCALATE"),
            KNOWLEDGE,
            patient_id="a/b",
            selection_behavior="any",
            as_of_pinned=False,
            new_uuid=uuids(),
        )
    with pytest.raises(ValueError, match="selectionBehavior"):
        render(make("ESCALATE"), behavior="all")


# ----- detail --------------------------------------------------------------------------------
@pytest.mark.protocol("5-dxa", "7-plan", "3b-aace")
def test_escalate_detail_sections() -> None:
    detail = render(make("ESCALATE"))[0]["detail"]
    assert detail.startswith(KNOWLEDGE.texts.criteria_line)
    assert KNOWLEDGE.line("targets_line") in detail
    for title in (
        "Reasons",
        "Evidence",
        "Agents",
        "Phase plan",
        "Follow-on",
        "Before starting",
        "Monitoring",
        "Caveats",
        "Sources",
    ):
        assert f"**{title}**" in detail
    assert "none found in the available record" in detail
    assert "DXA 2021-02-15 (baseline): total hip (left), T-score -2.9 SD; scanner: baseline" in detail
    assert "BMD 0.812 g/cm²" in detail
    # both metrics shown per site, with targets and met / not met
    assert "ΔT +0.10 vs target ≥ +0.20: not met; BMD change +1.2 % vs target ≥ 3.0 %: not met" in detail
    assert "ΔT +0.60 vs target ≥ +0.50: met" in detail
    assert "coverage ratio 0.92" in detail
    assert "therapy start 2021-01-10" in detail
    assert "Romosozumab (rank 1, preferred): hip failing after bisphosphonate" in detail
    assert "Teriparatide (excluded): 730 days of PTH\\-analogue use already" in detail
    assert "Denosumab (caution): osteonecrosis of the jaw on record" in detail
    assert "AACE would class this patient as very high risk" in detail
    assert "skeletal radiotherapy procedure: not checked, no code list".replace(":", "\\:") in detail
    assert KNOWLEDGE.texts.supplements_line in detail
    assert "[ARCH \\(NEJM 2017\\)](https://doi.org/10.1056/NEJMoa1708322)" in detail
    assert "(https://doi.org/10.1016/S0140-6736%2815%2961120-5)" in detail


@pytest.mark.protocol("R11")
def test_at_target_consider_does_not_claim_criteria() -> None:
    detail = render(make("CONSIDER", rule="R11"))[0]["detail"]
    assert KNOWLEDGE.texts.criteria_line not in detail
    assert KNOWLEDGE.line("targets_line") in detail


@pytest.mark.protocol("7-plan", "3a-cap")
def test_follow_on_obtain_egfr() -> None:
    detail = render(make("ESCALATE", follow_on=(), missing=("egfr",)))[0]["detail"]
    assert "Obtain eGFR (and creatinine clearance for bisphosphonates) before choosing" in detail
    assert "No eGFR in the last 12 months." in detail


@pytest.mark.protocol("3a-blocking")
def test_insufficient_data_lists_exactly_what() -> None:
    decision = make("INSUFFICIENT_DATA", missing=("followup_dxa", "total_hip_baseline"))
    detail = render(decision)[0]["detail"]
    assert "**Missing**" in detail
    assert "No follow-up DXA with total hip" in detail
    assert "DXA with total hip on or after 2024\\-10\\-10" in detail
    assert "No total-hip value (T-score or BMD in g/cm²) on the baseline DXA." in detail
    no_agents = render(make("INSUFFICIENT_DATA", missing=("egfr",)))[0]["detail"]
    assert "No eGFR in the last 12 months." in no_agents
    assert "Obtain eGFR" not in no_agents  # the follow-on line belongs to cards that list agents


def test_pinned_line_is_last() -> None:
    for _decision, cards in all_cards(pinned=True):
        for card in cards:
            assert card["detail"].splitlines()[-1] == PINNED
    for _decision, cards in all_cards(pinned=False):
        for card in cards:
            assert "(pinned)" not in card["detail"]


def test_never_failed_or_needs() -> None:
    for _decision, cards in all_cards(pinned=True):
        for card in cards:
            assert not re.search(r"\b(failed|needs)\b", card["detail"], re.IGNORECASE), card["detail"]


def test_deterministic() -> None:
    for decision, _cards in all_cards(pinned=True):
        loud = knowledge_with(response_met_card=True, duration_card=True)
        a = json.dumps(render(decision, loud, pinned=True), ensure_ascii=False, sort_keys=False)
        b = json.dumps(render(decision, loud, pinned=True), ensure_ascii=False, sort_keys=False)
        assert a.encode() == b.encode()


# ----- injection through every decision string -----------------------------------------------
INJECTIONS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[click](javascript:alert(1))",
    " javascript:alert(1)",
    "![x](http://evil/)",
    "\n# heading",
    "\n| table | x |\n|---|---|",
    "\n\n- injected\n> quote",
    "&lt;script&gt; &#106;avascript&#58;",
    " https://evil.example www.evil.example a@evil.example",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_is_inert_in_every_card(payload: str) -> None:
    checked = 0
    for decision, cards in all_cards(pinned=True, text=payload):
        assert decision.reasons[0].endswith(payload)  # the payload is in every decision string
        for card in cards:
            detail = card["detail"]
            low = detail.lower()
            assert "<img" not in low
            assert "<script" not in low
            assert "](javascript:" not in low
            assert "javascript:" not in low
            assert "http://evil" not in low
            assert "https://evil" not in low
            assert "www.evil" not in low
            assert "a@evil" not in low
            assert "![" not in detail
            for line in detail.splitlines():
                assert not line.startswith(("#", "|", ">", "<", "`", "~", "=", "+", "*  ")), line
                assert not line.startswith("-") or line.startswith("- "), line
                bare = re.sub(r"\\.", "", line)  # drop backslash escapes
                assert "|" not in bare, line  # no table can form
                assert "<" not in bare, line
                assert "](" not in bare or re.search(r"\]\(https://[^()<>\s]+\)$", bare), (
                    line
                )  # only our source links
            checked += 1
    assert checked > 20
