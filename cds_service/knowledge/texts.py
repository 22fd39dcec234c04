"""Card wording of the knowledge file (`texts`): the templates, the names they may use, and filling.

Every sentence a card shows is a template here; `{name}` placeholders are thresholds and windows (by key)
or values of the decision the renderer names (`CARD_PLACEHOLDERS`). `checks.check_texts` refuses an
unknown placeholder or a missing template at start-up.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping

from pydantic import BaseModel, ConfigDict, field_validator

# Card summaries the renderer reads: outcomes that have a card, R11's variant, one per specialist-review
# rule, the ended anabolic course, and the warnings.
SUMMARY_KEYS = (
    "ESCALATE",
    "CONSIDER",
    "CONSIDER_AT_TARGET",
    "RESPONSE_MET",
    "NOT_ELIGIBLE_DURATION",
    "NOT_ELIGIBLE_ADHERENCE",
    "VERY_HIGH_RISK_PATHWAY",
    "SPECIALIST_REVIEW",
    "SPECIALIST_REVIEW_R2",
    "SPECIALIST_REVIEW_R3",
    "SPECIALIST_REVIEW_R3c",
    "SPECIALIST_REVIEW_R7h",
    "SPECIALIST_REVIEW_R8",
    "SPECIALIST_REVIEW_R9a",
    "SPECIALIST_REVIEW_R13",
    "SPECIALIST_REVIEW_renal",
    "INSUFFICIENT_DATA",
    "ON_ANABOLIC",
    "ON_ANABOLIC_ENDED",
    "DENOSUMAB_OVERDUE",
    "ANABOLIC_FOLLOW_ON_MISSING",
)
# Values of the decision the renderer names for the card templates (besides every threshold and window).
CARD_PLACEHOLDERS = (
    "first_line",
    "agent",
    "agent_note",
    "sites_missed",
    "cap_reason",
    "reevaluate_from",
    "missing_list",
    "planned_end",
    "last_dose",
    "due_date",
    "course_agent",
    "course_end",
    "agent_display",
    "regimen",
    "caution",
    "target_t",
    "concepts",
    "latest_date",
    "allowance",
    "used_days",
    "remaining_days",
    "tests",
    "therapy_start",
    "followup_date",
)
# The missing-input codes of protocol §9: each needs a short name and a line in `texts`.
MISSING_CODES = (
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
    "unavailable_data",
)


def template_names(text: str) -> list[str]:
    """`{name}` placeholders of a template (`{{`/`}}` are literal braces); ValueError on a bad brace."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def fill(template: str, values: Mapping[str, str]) -> str:
    """A card template with its `{name}` placeholders filled (`{{`/`}}` are literal braces)."""
    if not template_names(template):
        return template.replace("{{", "{").replace("}}", "}")
    return template.format_map(values)


class Texts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    summaries: dict[str, str]
    criteria_line: str
    targets_line: str
    no_contraindication_line: str
    suggest_only_line: str
    supplements_line: str
    denosumab_overdue_detail: str
    follow_on_missing_detail: str
    suggestion_label: str
    suggestion_label_caution: str
    action_description: str
    action_description_caution: str
    personalised_target_line: str
    reevaluate_line: str
    ended_line: str
    specialist_agents_line: str
    obtain_egfr_line: str
    aace_line: str
    not_checked_line: str
    plan_transition_denosumab: str
    plan_transition_denosumab_due_passed: str
    plan_transition_denosumab_late: str
    plan_pth_after_denosumab: str
    plan_transition_oral: str
    plan_anabolic_romosozumab: str
    plan_anabolic_pth: str
    plan_follow_on: str
    before_labs: str
    before_pth: str
    before_secondary_tests: str
    monitoring_line: str
    duration_reason: str
    followup_stale_reason: str
    vitamin_d_missing_caveat: str
    missing_names: dict[str, str]
    missing_lines: dict[str, str]

    @field_validator("summaries")
    @classmethod
    def _summaries_short(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if len(text) >= 140:
                raise ValueError(f"summary {key} is {len(text)} characters; CDS Hooks needs < 140")
        return value

    def line(self, name: str, values: Mapping[str, str]) -> str:
        """Card text `name` with its placeholders filled from `values`."""
        return fill(getattr(self, name), values)

    def templates(self) -> Iterator[tuple[str, str]]:
        """(dotted name, template) of every card text, for start-up validation."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, dict):
                yield from ((f"{name}.{key}", text) for key, text in value.items())
            else:
                yield name, value
