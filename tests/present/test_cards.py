"""Card rendering (protocol §1, §6, §8, §9; CDS Hooks notes §1.6 C1–C14, §3.1–3.2)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any, get_args

import pytest

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.schema import PACKAGED_DIR
from cds_service.knowledge.texts import MISSING_CODES
from cds_service.present.card_model import Card
from cds_service.present.cards import fit_summary, render_cards, summary_for
from cds_service.rules import bmd
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
from tests.knowledge_variants import variant

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


def render_typed(
    decision: Decision,
    knowledge: Knowledge = KNOWLEDGE,
    *,
    behavior: Any = "at-most-one",
    pinned: bool = False,
    factory: Callable[[], str] | None = None,
) -> list[Card]:
    return render_cards(
        decision,
        knowledge,
        patient_id="pat-1",
        selection_behavior=behavior,
        as_of_pinned=pinned,
        new_uuid=factory or uuids(),
    )


def render(
    decision: Decision,
    knowledge: Knowledge = KNOWLEDGE,
    *,
    behavior: Any = "at-most-one",
    pinned: bool = False,
    factory: Callable[[], str] | None = None,
) -> list[dict[str, Any]]:
    """The cards as the wire carries them."""
    cards = render_typed(decision, knowledge, behavior=behavior, pinned=pinned, factory=factory)
    return [card.to_wire() for card in cards]


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
                missing=(*MISSING_CODES, "some_unknown_" + long_word),
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
        "Hip BMD target not met after 3 y of alendronate: consider anabolic therapy (romosozumab first)"
    )
    at_target = render(make("CONSIDER", rule="R11"))[0]["summary"]
    assert at_target == KNOWLEDGE.texts.summaries["CONSIDER_AT_TARGET"].format(first_line="alendronate")
    capped = render(make("CONSIDER", missing=("egfr",)))[0]["summary"]
    assert capped.endswith("anabolic therapy may be considered (missing eGFR)")
    flagged = make("CONSIDER", reasons=("R9c: corrected calcium 8.0 mg/dL below range: correct first",))
    assert render(flagged)[0]["summary"].endswith("(corrected calcium 8.0 mg/dL below range)")
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
    assert [s["label"].split(":")[0] for s in suggestions] == ["Romosozumab", "Abaloparatide"]
    assert suggestions[0]["isRecommended"] is True
    assert "isRecommended" not in suggestions[1]
    for suggestion, agent in zip(suggestions, ("romosozumab", "abaloparatide"), strict=True):
        spec = KNOWLEDGE.model.agents[agent]  # type: ignore[index]
        assert suggestion["label"] == f"{spec.display}: {spec.regimen}"
        (action,) = suggestion["actions"]  # Epic: one action per suggestion
        assert action["type"] == "create"
        assert action["description"] == f"Draft order for review (not signed): {spec.regimen}"
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
    assert [label.split(":")[0] for label in labels] == ["Romosozumab", "Abaloparatide", "Teriparatide"]


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
def test_escalate_detail_in_reading_order() -> None:
    """Lead sentence, at most eight lines of key evidence, then the rest as compact paragraphs."""
    detail = render(make("ESCALATE"))[0]["detail"]
    lead, key, rest = detail.split("\n\n", 2)
    assert lead == KNOWLEDGE.texts.criteria_line
    key_lines = key.splitlines()
    assert 1 <= len(key_lines) <= 8 and all(line.startswith("- ") for line in key_lines)
    assert key_lines == [  # the decision's reason restates the hip delta: not repeated
        "- Total hip (left): T -2.9 → -2.8, ΔT +0.10 (≥ +0.20), +1.2 % (≥ +3.0 %, decides): not met",
        "- Lumbar spine (L1–L4): BMD 0.812 g/cm² (2024-05-20), ΔT +0.60 (≥ +0.50): met",
        "- DXA 2021-02-15 → 2024-05-20: same scanner",
        "- Exposure: alendronate 2021-01-10 → 2024-05-20 (1227 days), coverage 0.92, "
        "longest gap 12 days; administrations/dispenses",
        "- Rank 1: Romosozumab (preferred): hip failing after bisphosphonate",
        "- Labs: eGFR 65 mL/min/1.73m2 (2025-01-01)",
        "- Personalised target: total hip and femoral neck T-score above -2.5",
        "- Findings: vertebral fracture 2019-03-01",
    ]
    paragraphs = rest.split("\n\n")
    titles = [p.split(":", 1)[0] for p in paragraphs]
    assert titles == [
        "Other agents",
        "Other contraindications",
        "Plan",
        "Follow-on",
        "Before starting",
        "Monitoring",
        "Caveats",
        "Not checked (no code list)",
        "The 3-year targets +0.20 / +0.50 T (3 / 6 %) are this protocol's",
        "Suggestions only",
        "Also cited",
    ]
    # the rank-1 agent is in the key evidence with its reasons; the others below, each with its status
    agents_line = "Other agents: Abaloparatide (2, option); Teriparatide (excluded): "
    assert agents_line + "730 days of PTH-analogue use already" in rest
    assert "Romosozumab" not in rest.split("\n\n")[0]
    assert "hip failing after bisphosphonate" not in rest  # in the key evidence, not repeated
    assert "Denosumab (osteonecrosis of the jaw on record)" in rest
    assert "AACE would class this patient as very high risk" in rest
    assert "none found in the available record" in rest
    assert "Not checked (no code list): SNOMED CT codes for urolithiasis, osteonecrosis of the jaw," in rest
    assert KNOWLEDGE.texts.supplements_line in rest
    assert KNOWLEDGE.line("targets_line") in rest
    assert "](" not in detail and "http" not in detail  # sources are card links


@pytest.mark.protocol("R5", "5-dxa")
@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        pytest.param(
            "T-score -2.9 (total hip, 2021-02-15) <= -2.5",
            "High risk: total hip T-score <= -2.5",
            id="value, site and date on a DXA line -> not repeated",
        ),
        pytest.param(
            "T-score -2.9 (total hip, 2019-01-01) <= -2.5",
            "T-score -2.9 (total hip, 2019-01-01) <= -2.5",
            id="a DXA the card does not show -> the reason in full",
        ),
        pytest.param(
            "T-score -3.1 (total hip, 2021-02-15) <= -2.5",
            "T-score -3.1 (total hip, 2021-02-15) <= -2.5",
            id="another value on that date -> the reason in full",
        ),
    ],
)
def test_high_risk_t_score_is_said_once(reason: str, shown: str) -> None:
    detail = render(make("ESCALATE", reasons=(reason,)))[0]["detail"]
    key = detail.split("\n\n")[1].splitlines()
    assert key[0] == f"- {shown}"
    assert key[1].startswith("- Total hip (left): T -2.9 → -2.8")  # the value the short form points to


@pytest.mark.protocol("4-coverage")
@pytest.mark.parametrize(
    ("caveat", "exposure_tail", "in_caveats"),
    [
        pytest.param(
            "adherence not verifiable (statements or orders only)",
            "; statements/orders only: adherence not verifiable",
            False,
            id="the exposure line says it -> not repeated in the caveats",
        ),
        pytest.param(
            "adherence not verifiable (orders only)",
            "; statements/orders",
            True,
            id="orders only: the caveat says more -> kept",
        ),
    ],
)
def test_adherence_caveat_is_said_once(caveat: str, exposure_tail: str, in_caveats: bool) -> None:
    exposure = ExposureSummary(
        ("alendronate",),
        date(2021, 1, 10),
        date(2024, 5, 20),
        Decimal("1.00"),
        0,
        "statements/orders (adherence not verifiable)",
    )
    evidence = replace(full_evidence(), exposure=exposure)
    detail = render(make("ESCALATE", caveats=(caveat, "FRAX not on record"), evidence=evidence))[0]["detail"]
    exposure_line = next(line for line in detail.splitlines() if line.startswith("- Exposure:"))
    assert exposure_line.endswith(exposure_tail)
    caveats = next(p for p in detail.split("\n\n") if p.startswith("Caveats:"))
    assert (caveat in caveats) is in_caveats
    assert "FRAX not on record" in caveats


def test_sources_are_card_links_once_per_response() -> None:
    warn = (WarningDetail("DENOSUMAB_OVERDUE", "x"),)
    first, second = render(make("ESCALATE", warnings=warn))
    assert first["links"] == [
        {"label": src.label, "url": src.url, "type": "absolute"} for src in KNOWLEDGE.model.sources if src.url
    ]
    assert all(len(link["label"]) <= 60 for link in first["links"])  # short labels
    assert "links" not in second
    (only_warning,) = render(make("RESPONSE_MET", warnings=warn))
    assert only_warning["links"] == first["links"]


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
    assert "Missing:" in detail
    assert "No follow-up DXA with total hip" in detail
    assert "DXA with total hip on or after 2024-10-10" in detail
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
                assert not re.search(r"<[A-Za-z/!?]", bare), line  # no tag, comment or autolink
                assert "](" not in bare, line  # no link at all: sources are card links
            checked += 1
    assert checked > 20


# ----- safety in the first words (issue 11, part 2) -------------------------------------------
@pytest.mark.protocol("6-agents")
def test_caution_agent_says_so_on_its_button_and_action() -> None:
    caution = "denosumab within 18 months: switching causes transient hip bone loss"
    agents_ = (
        AgentAssessment("romosozumab", "preferred", 1, ("prior denosumab",)),
        AgentAssessment("teriparatide", "caution", 2, (caution,), cautions=(caution,)),
        AgentAssessment("abaloparatide", "excluded", None, ("730 days used",)),
    )
    (card,) = render(make("ESCALATE", agents=agents_))
    labels = [s["label"] for s in card["suggestions"]]
    assert labels[1] == "Teriparatide — caution: denosumab within 18 months"
    assert not labels[0].startswith("Romosozumab — caution")
    description = card["suggestions"][1]["actions"][0]["description"]
    assert description.startswith("Caution: denosumab within 18 months. Draft order for review (not signed)")
    assert not any("Abaloparatide" in label for label in labels)  # excluded: never a button


def test_caution_button_uses_the_caution_not_the_ranking_reason() -> None:
    romosozumab = AgentAssessment(
        "romosozumab",
        "caution",
        1,
        (
            "total hip failing after a bisphosphonate",
            "prior MI or stroke: Cerebrovascular accident (2022-03-15)",
        ),
        cautions=("prior MI or stroke: Cerebrovascular accident (2022-03-15)",),
    )
    (card,) = render(make("ESCALATE", agents=(romosozumab,)))
    assert card["suggestions"][0]["label"] == "Romosozumab — caution: prior MI or stroke"
    assert card["summary"].endswith("(romosozumab first, caution)")
    assert "isRecommended" not in card["suggestions"][0]


@pytest.mark.protocol("W-DENOSUMAB_OVERDUE", "W-ANABOLIC_FOLLOW_ON_MISSING")
def test_warning_summaries_give_the_due_date_and_the_action() -> None:
    warn = (
        WarningDetail("DENOSUMAB_OVERDUE", "x", last=date(2024, 7, 15), due=date(2025, 2, 13)),
        WarningDetail(
            "ANABOLIC_FOLLOW_ON_MISSING",
            "y",
            last=date(2025, 1, 31),
            due=date(2025, 1, 31),
            agent="teriparatide",
        ),
    )
    overdue, follow_on = (c["summary"] for c in render(make("RESPONSE_MET", warnings=warn)))
    assert overdue == (
        "Denosumab overdue: last dose 2024-07-15, due by 2025-02-13; "
        "give the next dose or start the transition now"
    )
    assert follow_on.startswith(
        "Teriparatide ended 2025-01-31, no anti-resorptive since: start the follow-on now"
    )


def test_specialist_review_summary_says_why() -> None:
    rules = ("R2", "R3", "R3c", "R7h", "R8", "R9a", "R13", "renal")
    summaries = {rule: render(make("SPECIALIST_REVIEW", rule=rule))[0]["summary"] for rule in rules}
    assert len(set(summaries.values())) == len(rules)
    gate = KNOWLEDGE.thresholds.egfr_renal_gate
    assert summaries["renal"].startswith(f"Specialist review: eGFR below {gate};")
    assert "scanner changed" in summaries["R8"]


@pytest.mark.protocol("R13")
def test_specialist_card_does_not_recommend_an_agent() -> None:
    """The renal-gate card contradicted itself: `preferred` and `no contraindication` beside the gate."""
    (card,) = render(make("SPECIALIST_REVIEW", rule="renal"))
    detail = card["detail"]
    assert detail.startswith(KNOWLEDGE.texts.specialist_agents_line)
    agents_line = next(p for p in detail.split("\n\n") if p.startswith("Agents:"))
    assert "preferred" not in agents_line and "rank 1" in agents_line
    assert "Rank 1:" not in detail  # no rank-1 line in the key evidence
    assert KNOWLEDGE.texts.no_contraindication_line not in detail
    assert "Romosozumab (rank 1)" in detail
    assert "suggestions" not in card


# ----- dates and numbers (issue 11, part 3) -----------------------------------------------------
@pytest.mark.protocol("R3")
def test_on_anabolic_end_in_the_past_is_a_fact() -> None:
    ending = render(make("ON_ANABOLIC", anabolic_agent="teriparatide", planned_end=date(2025, 7, 20)))[0]
    assert ending["summary"].startswith("Teriparatide course ends 2025-07-20: plan")
    ended = render(make("ON_ANABOLIC", anabolic_agent="teriparatide", planned_end=date(2025, 5, 1)))[0]
    assert ended["summary"].startswith("Teriparatide course ended 2025-05-01: start")
    assert ended["detail"].startswith("The teriparatide course ended 2025-05-01")


@pytest.mark.protocol("5-dxa")
def test_numbers_rounded_as_the_protocol_compares_them() -> None:
    dxa = (
        DxaEvidence(
            date(2021, 2, 15), "total_hip", None, "t_score", Decimal("-2.537"), "baseline", "baseline"
        ),
        DxaEvidence(
            date(2024, 5, 20), "total_hip", None, "t_score", Decimal("-2.45"), "same scanner", "follow-up"
        ),
    )
    response = SiteResponse(
        "total_hip",
        date(2021, 2, 15),
        date(2024, 5, 20),
        Decimal("0.105"),
        Decimal("1.25"),
        "delta_t",
        Decimal("0.20"),
        False,
    )
    evidence = Evidence(dxa=dxa, responses=(response,), target_t=Decimal("-2.50"))
    detail = render(make("ESCALATE", evidence=evidence))[0]["detail"]
    assert "T -2.5 → -2.5, ΔT +0.11 (≥ +0.20, decides), +1.3 % (≥ +3.0 %): not met" in detail
    assert "-2.537" not in detail and "0.105" not in detail


CONFIGURED_IN_CARD_TEXT = [
    ("windows.lab_lookback_months", 7, "No eGFR in the last 7 months."),
    ("windows.baseline_before_start_months", 30, "from 30 months before"),
    ("windows.baseline_after_start_months", 5, "to 5 months after the start"),
    ("windows.therapy_min_months", 35, "at least 35 months after the start"),
    ("windows.therapy_min_months", 36, "therapy under 36 months: re-evaluate the response from 2026-01-10"),
    ("windows.followup_max_age_months", 30, "within the last 30 months"),
    ("thresholds.target_delta_t_total_hip", "0.25", "targets +0.25 / +0.50 T"),
    ("thresholds.target_delta_t_lumbar_spine", "0.55", "+0.20 / +0.55 T"),
    ("thresholds.target_pct_total_hip", "3.5", "(3.5 / 6 %)"),
    ("thresholds.target_pct_lumbar_spine", "6.5", "(3 / 6.5 %)"),
    ("thresholds.egfr_renal_gate", "28", "Specialist review: eGFR below 28;"),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"), CONFIGURED_IN_CARD_TEXT, ids=[c[2][:40] for c in CONFIGURED_IN_CARD_TEXT]
)
def test_every_configured_number_in_card_text_follows_the_knowledge_file(
    path: str, value: Any, expected: str
) -> None:
    """No number in card text can disagree with the value that produced it (issue 11, part 3)."""
    missing = ("egfr", "baseline_dxa", "followup_dxa")
    decisions = [
        make("ESCALATE", missing=missing, follow_on=()),
        make("SPECIALIST_REVIEW", rule="renal"),
    ]
    changed = variant(path, value)

    duration = make("NOT_ELIGIBLE_DURATION")

    def text_of(knowledge: Knowledge) -> str:
        summaries = [summary_for("NOT_ELIGIBLE_DURATION", duration, knowledge)]
        return json.dumps([render(d, knowledge) for d in decisions] + summaries, ensure_ascii=False)

    assert expected not in text_of(KNOWLEDGE)
    assert expected in text_of(changed)


@pytest.mark.protocol("3b-rounding")
def test_engine_reasons_round_t_scores_without_contradiction() -> None:
    assert bmd.shown_t(Decimal("-2.537"), Decimal("-2.5"), above=False) == "-2.5"
    assert bmd.shown_t(Decimal("-2.46"), Decimal("-2.5"), above=True) == "-2.46"  # "-2.5 above -2.5" is false
    assert bmd.shown_t(Decimal("-2.44"), Decimal("-2.5"), above=True) == "-2.4"
    assert bmd.shown_t(Decimal("-2.5"), Decimal("-2.5"), above=False) == "-2.5"


@pytest.mark.protocol("5-dxa")
def test_site_with_t_score_and_bmd_shows_one_series_per_kind() -> None:
    def scan(day: date, kind: str, value: str, role: str) -> DxaEvidence:
        return DxaEvidence(day, "total_hip", None, kind, Decimal(value), "same scanner", role)

    base, follow = date(2021, 2, 15), date(2024, 5, 20)
    dxa = (
        scan(base, "t_score", "-2.6", "baseline"),
        scan(follow, "t_score", "-2.5", "follow-up"),
        scan(base, "bmd", "0.7123", "baseline"),
        scan(follow, "bmd", "0.720", "follow-up"),
    )
    response = SiteResponse(
        "total_hip", base, follow, Decimal("0.10"), Decimal("1.1"), "pct", Decimal("3.0"), False
    )
    detail = render(make("ESCALATE", evidence=Evidence(dxa=dxa, responses=(response,))))[0]["detail"]
    assert (
        "Total hip: T -2.6 → -2.5; BMD 0.712 g/cm² → 0.720, "
        "ΔT +0.10 (≥ +0.20), +1.1 % (≥ +3.0 %, decides)" in detail
    )
