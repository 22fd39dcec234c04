"""The sentences the rules write (reasons, caveats, agent reasons) are knowledge templates (issue 11, part 3).

Each configurable number such a sentence carries follows the knowledge file: the value is changed in a
copy of the packaged file and the decision object (§9) and the cards of a record that produces the
sentence must say the new number. Each rule template is given every value `RULE_VALUES` names for it.
The records are those of `test_knowledge_keys_read.RULE_TEXTS`, which proves each template is read.
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.schema import KnowledgeError
from cds_service.knowledge.texts import RULE_VALUES, template_names
from tests.knowledge.test_knowledge_keys_read import DEFAULT, RULE_TEXTS, rule_text_json
from tests.knowledge_variants import variant

# (template, configured value, new value, what the changed file must make the rule say)
RULE_NUMBERS: list[tuple[str, str, Any, str]] = [
    ("response_pct_reason", "thresholds.target_pct_total_hip", "2.8", "total hip change +2.5 % < 2.8 %"),
    ("response_delta_t_reason", "thresholds.target_delta_t_total_hip", "0.15", "total hip ΔT +0.10 < 0.15"),
    (
        "response_delta_t_reason",
        "thresholds.target_delta_t_lumbar_spine",
        "0.45",
        "lumbar spine ΔT +0.20 < 0.45",
    ),
    ("age_reason", "thresholds.min_age_years", 60, "age 35 < 60: younger adults"),
    ("recent_fracture_reason", "windows.recent_fracture_months", 36, "fragility fracture within 36 months:"),
    ("t_score_reason", "thresholds.t_score_osteoporosis", "-2.4", "(lumbar spine, 2021-02-15) <= -2.4"),
    ("frax_mof_reason", "thresholds.frax_mof_high_risk", "21.5", "22.0 % (2024-05-20) >= 21.5 %"),
    ("frax_hip_reason", "thresholds.frax_hip_high_risk", "3.2", "3.5 % (2024-05-20) >= 3.2 % with low"),
    ("coverage_ratio_reason", "thresholds.coverage_ratio_min", "0.70", "coverage ratio 0.56 < 0.70"),
    ("adherence_gap_reason", "windows.adherence_gap_days", 100, "uncovered gap of 516 days > 100"),
    ("denosumab_interval_reason", "windows.denosumab_max_interval_days", 215, "interval 220 days > 215"),
    ("baseline_missing_reason", "windows.baseline_before_start_months", 12, "between 2020-03-01 and"),
    ("baseline_missing_reason", "windows.baseline_after_start_months", 6, "and 2021-09-01 and a follow-up"),
    ("vitamin_d_low_flag", "thresholds.vitamin_d_low_ng_ml", "18", "R9c: 25-OH vitamin D 15 ng/mL < 18:"),
    ("renal_egfr_reason", "thresholds.egfr_renal_gate", "28", "renal gate: eGFR 25 (2025-03-01) < 28"),
    ("renal_dialysis_reason", "windows.dialysis_lookback_days", 120, "renal gate: dialysis within 120 days"),
    ("at_target_reason", "thresholds.personalised_target_t", "-2.45", "above the personalised target -2.45:"),
    (
        "prior_denosumab_reason",
        "windows.prior_denosumab_min_days",
        300,
        "prior denosumab for 300 days or more",
    ),
    (
        "prior_denosumab_reason",
        "windows.prior_denosumab_min_days",
        335,
        "prior denosumab for 11 months or more",
    ),
    (
        "prior_denosumab_romosozumab_excluded_reason",
        "windows.prior_denosumab_min_days",
        300,
        "prior denosumab for 300 days or more and romosozumab excluded",
    ),
    ("cv_recent_exclusion", "windows.cv_event_exclusion_months", 9, "MI or stroke within 9 months: MI"),
    ("cv_undated_caution", "windows.cv_event_exclusion_months", 24, "confirm none in the past 24 months"),
    (
        "pth_use_limit_exclusion",
        "windows.pth_allowance_days",
        700,
        "730 days of PTH-analogue use already (limit 700)",
    ),
    (
        "pth_use_limit_exclusion",
        "windows.abaloparatide_allowance_days",
        548,
        "730 days of PTH-analogue use already (limit 548)",
    ),
    (
        "pth_after_denosumab_caution",
        "windows.pth_caution_denosumab_months",
        12,
        "denosumab within 12 months:",
    ),
    (
        "follow_on_egfr_gate_exclusion",
        "thresholds.egfr_renal_gate",
        "28",
        "eGFR 25 < 28: specialist decision",
    ),
    ("follow_on_egfr_low_exclusion", "thresholds.egfr_follow_on_bisphosphonate", "40", '"eGFR 32 < 40"'),
    (
        "follow_on_egfr_high_exclusion",
        "thresholds.egfr_follow_on_bisphosphonate",
        "40",
        "eGFR 75 >= 40: alendronate",
    ),
    ("egfr_gate_undecided_note", "thresholds.egfr_renal_gate", "28", "eGFR <60: cannot decide whether < 28"),
    ("egfr_band_undecided_note", "thresholds.egfr_follow_on_bisphosphonate", "40", "band (< or >= 40)"),
    (
        "vitamin_d_undecided_note",
        "thresholds.vitamin_d_low_ng_ml",
        "25",
        "<30 ng/mL: cannot decide whether < 25",
    ),
    ("denosumab_overdue_old_caveat", "windows.denosumab_overdue_max_months", 25, "more than 25 months ago"),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "expected"), RULE_NUMBERS, ids=[f"{r[0]}-{r[1]}" for r in RULE_NUMBERS]
)
def test_configured_number_in_rule_text_follows_the_knowledge_file(
    name: str, path: str, value: Any, expected: str
) -> None:
    record, day, packaged = RULE_TEXTS[name]
    before = rule_text_json(record, day, DEFAULT)
    after = rule_text_json(record, day, variant(path, value))
    assert packaged in before and expected not in before
    assert expected in after


def test_every_number_carrying_rule_template_has_a_changed_value_case() -> None:
    """A rule template that names a threshold or window is in RULE_NUMBERS with each one it names."""
    configured = set(DEFAULT.text_values)
    named = {
        (name, placeholder)
        for name in RULE_VALUES
        for placeholder in template_names(getattr(DEFAULT.texts, name))
        if placeholder in configured
    }
    covered = {(name, path.split(".")[1]) for name, path, _, _ in RULE_NUMBERS}
    handled_elsewhere = {"duration_reason", "followup_stale_reason", "vitamin_d_missing_caveat"}
    assert {(n, p) for n, p in named if n not in handled_elsewhere} <= covered


@pytest.mark.parametrize("name", sorted(RULE_VALUES))
def test_rule_template_is_given_every_value_it_may_name(name: str) -> None:
    """A site's template may name any of the rule's values: each is filled (no KeyError at evaluation)."""
    # markers without "_" (a card escapes it in Markdown); the decision object carries the reasons as they are
    template = (
        " | ".join(f"«{value.replace('_', '-')}:{{{value}}}»" for value in RULE_VALUES[name])
        + " named values"
    )
    record, day, _ = RULE_TEXTS[name]
    text = rule_text_json(record, day, variant(f"texts.{name}", template))
    assert "named values" in text
    for value in RULE_VALUES[name]:
        marker = value.replace("_", "-")
        assert f"«{marker}:" in text and f"«{marker}:»" not in text  # present and not empty


@pytest.mark.parametrize(
    ("path", "template", "unknown"),
    [
        ("texts.age_reason", "age {therapy_start}", "therapy_start"),  # another rule's value
        ("texts.cv_recent_exclusion", "MI {first_line}", "first_line"),  # a card value
        ("texts.criteria_line", "Criteria met at {age}.", "age"),  # a rule value in a card line
        ("texts.summaries.ESCALATE", "Escalate from {therapy_start}", "therapy_start"),
    ],
)
def test_template_naming_a_value_it_is_not_given_stops_start_up(
    path: str, template: str, unknown: str
) -> None:
    """A name the sentence's writer does not fill would fail at evaluation: refused at start-up instead."""
    with pytest.raises(KnowledgeError) as error:
        variant(path, template)
    assert f"{path} placeholder: unknown key {unknown!r}" in str(error.value)
