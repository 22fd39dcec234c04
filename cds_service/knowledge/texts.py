"""Card wording of the knowledge file (`texts`): the templates, the names they may use, and filling.

Every sentence a card shows is a template here; `{name}` placeholders are thresholds and windows (by key)
or values of the decision the renderer names (`CARD_PLACEHOLDERS`). The sentences the rules write into the
decision (reasons, caveats, agent reasons) are templates too, each with its own values (`RULE_VALUES`).
`checks.check_texts` refuses an unknown placeholder or a missing template at start-up.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from functools import lru_cache

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
)
# Sentences the rules write into the decision's reasons, caveats and agent reasons (protocol §9), and the
# values of the decision each one is given (besides every threshold and window). A rule template may name
# only its own values: a name another rule fills would fail at evaluation, so it stops start-up instead.
_RESPONSE_VALUES = ("site", "change", "verdict", "target", "baseline_date", "followup_date")
RULE_VALUES: dict[str, tuple[str, ...]] = {
    "duration_reason": ("therapy_start",),
    "followup_stale_reason": ("followup_date",),
    "vitamin_d_missing_caveat": (),
    "age_reason": ("age",),
    "recent_fracture_reason": ("finding",),
    "t_score_reason": ("t_score", "site", "scan_date"),
    "frax_mof_reason": ("frax", "frax_date"),
    "frax_hip_reason": ("frax", "frax_date"),
    "coverage_ratio_reason": ("coverage_ratio",),
    "adherence_gap_reason": ("gap_days",),
    "denosumab_interval_reason": ("interval_days",),
    "baseline_missing_reason": ("window_start", "window_end"),
    "vitamin_d_low_flag": ("vitamin_d",),
    "renal_egfr_reason": ("egfr", "egfr_date"),
    "renal_dialysis_reason": ("finding",),
    "at_target_reason": ("t_score", "target_t"),
    "prior_denosumab_reason": ("prior_denosumab_duration",),
    "prior_denosumab_romosozumab_excluded_reason": ("prior_denosumab_duration",),
    "cv_recent_exclusion": ("finding",),
    "cv_undated_caution": ("finding_label",),
    "pth_use_limit_exclusion": ("used_days", "allowance_days"),
    "pth_after_denosumab_caution": (),
    "follow_on_egfr_gate_exclusion": ("egfr",),
    "follow_on_egfr_low_exclusion": ("egfr",),
    "follow_on_egfr_high_exclusion": ("egfr",),
    "egfr_gate_undecided_note": ("egfr",),
    "egfr_band_undecided_note": ("egfr",),
    "vitamin_d_undecided_note": ("vitamin_d",),
    "denosumab_overdue_old_caveat": ("last_dose",),
    "holiday_reason": ("agent", "coverage_end", "followup_date"),
    "adherence_advice_reason": (),
    "scanner_change_reason": ("baseline_date", "baseline_scanner", "followup_date", "followup_scanner"),
    "second_course_reason": (),
    "alp_workup_flag": (),
    "secondary_hpt_flag": (),
    "hpt_type_unknown_flag": (),
    "calcium_low_flag": ("calcium",),
    "hypocalcaemia_flag": ("finding",),
    "renal_advice_reason": (),
    "renal_transplant_advice_reason": (),
    "all_agents_excluded_reason": (),
    "denosumab_overdue_warning": ("last_dose", "days_since", "as_of"),
    "follow_on_missing_warning": ("course_agent", "course_end"),
    "prior_cv_event": ("finding",),
    "tia_caution": ("finding",),
    "romosozumab_dose_limit_exclusion": ("doses",),
    "calcium_low_exclusion": (),
    "hypocalcaemia_exclusion": ("finding",),
    "romosozumab_male_exclusion": (),
    "sex_not_female_caution": (),
    "allergy_exclusion": ("finding_label",),
    "paget_exclusion": ("finding",),
    "alp_unexplained_exclusion": (),
    "skeletal_radiation_exclusion": ("finding",),
    "hypercalcaemia_lab_exclusion": (),
    "hypercalcaemia_coded_exclusion": ("finding",),
    "primary_hpt_exclusion": (),
    "radiotherapy_caution": ("finding_label",),
    "urolithiasis_caution": ("finding",),
    "hip_after_bisphosphonate_reason": (),
    "follow_on_men_exclusion": (),
    "follow_on_after_denosumab_exclusion": (),
    "follow_on_after_denosumab_reason": (),
    "jaw_osteonecrosis_caution": ("finding",),
    "atypical_femoral_fracture_caution": ("finding",),
    "bone_malignancy_reason": ("finding",),
    "oncology_dose_reason": ("medication",),
    "unknown_strength_reason": ("agent",),
    "dose_not_recorded_caveat": (),
    "anabolic_ordered_caveat": ("order_date",),
    "anabolic_contraindication_reason": (
        "agent",
        "exclusions",
    ),
    "anabolic_running_reason": (
        "agent",
        "course_start",
        "planned_end",
    ),
    "course_limit_reason": (),
    "vertebral_fractures_reason": ("count",),
    "low_trauma_caveat": (),
    "frax_missing_caveat": (),
    "albumin_missing_caveat": (),
    "spine_not_assessable_caveat": (),
    "response_pct_reason": _RESPONSE_VALUES,
    "response_delta_t_reason": _RESPONSE_VALUES,
}
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


@lru_cache(maxsize=512)  # templates come from the knowledge file: a few hundred at most
def _has_placeholders(template: str) -> bool:
    return bool(template_names(template))


def fill(template: str, values: Mapping[str, str]) -> str:
    """A card template with its `{name}` placeholders filled (`{{`/`}}` are literal braces)."""
    if not _has_placeholders(template):
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
    age_reason: str
    recent_fracture_reason: str
    t_score_reason: str
    frax_mof_reason: str
    frax_hip_reason: str
    coverage_ratio_reason: str
    adherence_gap_reason: str
    denosumab_interval_reason: str
    baseline_missing_reason: str
    vitamin_d_low_flag: str
    renal_egfr_reason: str
    renal_dialysis_reason: str
    at_target_reason: str
    prior_denosumab_reason: str
    prior_denosumab_romosozumab_excluded_reason: str
    cv_recent_exclusion: str
    cv_undated_caution: str
    pth_use_limit_exclusion: str
    pth_after_denosumab_caution: str
    follow_on_egfr_gate_exclusion: str
    follow_on_egfr_low_exclusion: str
    follow_on_egfr_high_exclusion: str
    egfr_gate_undecided_note: str
    egfr_band_undecided_note: str
    vitamin_d_undecided_note: str
    denosumab_overdue_old_caveat: str
    holiday_reason: str
    adherence_advice_reason: str
    scanner_change_reason: str
    second_course_reason: str
    alp_workup_flag: str
    secondary_hpt_flag: str
    hpt_type_unknown_flag: str
    calcium_low_flag: str
    hypocalcaemia_flag: str
    renal_advice_reason: str
    renal_transplant_advice_reason: str
    all_agents_excluded_reason: str
    denosumab_overdue_warning: str
    follow_on_missing_warning: str
    prior_cv_event: str
    tia_caution: str
    romosozumab_dose_limit_exclusion: str
    calcium_low_exclusion: str
    hypocalcaemia_exclusion: str
    romosozumab_male_exclusion: str
    sex_not_female_caution: str
    allergy_exclusion: str
    paget_exclusion: str
    alp_unexplained_exclusion: str
    skeletal_radiation_exclusion: str
    hypercalcaemia_lab_exclusion: str
    hypercalcaemia_coded_exclusion: str
    primary_hpt_exclusion: str
    radiotherapy_caution: str
    urolithiasis_caution: str
    hip_after_bisphosphonate_reason: str
    follow_on_men_exclusion: str
    follow_on_after_denosumab_exclusion: str
    follow_on_after_denosumab_reason: str
    jaw_osteonecrosis_caution: str
    atypical_femoral_fracture_caution: str
    bone_malignancy_reason: str
    oncology_dose_reason: str
    unknown_strength_reason: str
    dose_not_recorded_caveat: str
    anabolic_ordered_caveat: str
    anabolic_contraindication_reason: str
    anabolic_running_reason: str
    course_limit_reason: str
    vertebral_fractures_reason: str
    low_trauma_caveat: str
    frax_missing_caveat: str
    albumin_missing_caveat: str
    spine_not_assessable_caveat: str
    response_pct_reason: str
    response_delta_t_reason: str
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
