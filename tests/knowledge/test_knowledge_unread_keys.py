"""Start-up check: a key of the knowledge file that nothing reads is refused (issue 9, item 2).

Every dict-valued section keyed by agents, outcomes, labs or placeholders is strict: an unknown key
fails start-up with a one-line KnowledgeError that names the key and the nearest valid one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.schema import PACKAGED_FILE, KnowledgeError


def _write(tmp_path: Path, edit: Any) -> Path:
    data = yaml.safe_load(PACKAGED_FILE.read_text(encoding="utf-8"))
    edit(data)
    target = tmp_path / "knowledge.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target


def _refused(tmp_path: Path, edit: Any) -> str:
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(_write(tmp_path, edit))
    message = str(error.value)
    assert "\n" not in message
    return message


def _set(path: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _drop(path: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]

    return edit


UNKNOWN_KEYS = [
    # (edit, the key named, the nearest valid key named)
    (_set("thresholds.egfr_renal_gates", "30"), "egfr_renal_gates", "egfr_renal_gate"),
    (_set("windows.lab_lookback_month", 12), "lab_lookback_month", "lab_lookback_months"),
    (_set("policy.duration_cards", True), "duration_cards", "duration_card"),
    (_set("dosing.denosumab.default_day", 183), "default_day", "default_days"),
    (_set("dosing.denosumabb", {"default_days": 183}), "denosumabb", "denosumab"),
    (_set("dosing.raloxifene", {"default_days": 1}), "raloxifene", "risedronate"),
    (_set("oncology_min_interval_days.denosumab_", 90), "denosumab_", "denosumab"),
    (_set("oncology_min_interval_days.romosozumab", 30), "romosozumab", "denosumab"),
    (_set("oncology_strengths_mg.zoledronate", ["4"]), "zoledronate", "zoledronic_acid"),
    (_set("oncology_min_interval_days.denosumab_biosimilar", 90), "denosumab_biosimilar", "denosumab"),
    (_set("ingredient_names.alendronat", ["alendronat"]), "alendronat", "alendronate"),
    (_set("lab_defaults.calcum", {"low": "8.5", "high": "10.2", "unit": "mg/dL"}), "calcum", "calcium"),
    (_set("lab_defaults.calcium.units", "mg/dL"), "units", "unit"),
    (_set("texts.summaries.ESCALATED", "x"), "ESCALATED", "ESCALATE"),
    (_set("texts.summaries.NOT_APPLICABLE", "x"), "NOT_APPLICABLE", "NOT_ELIGIBLE_DURATION"),
    (_set("texts.summaries.ESCALATE", "Escalate {agnet}"), "agnet", "agent"),
    (_set("texts.targets_line", "+{target_pct_totalhip} %"), "target_pct_totalhip", "target_pct_total_hip"),
    (_set("texts.criteria_lines", "x"), "criteria_lines", "criteria_line"),
    (_set("agents.romosozumab.regimens", "x"), "regimens", "regimen"),
    (_set("agents.denosumab", {}), "denosumab", "romosozumab"),
    (
        _set("follow_on_agents.zoledronic", {"display": "x", "kind": "bisphosphonate"}),
        "zoledronic",
        "zoledronic_acid",
    ),
    (_set("card_source.topic", "x"), "topic", "topic_system"),
    (_set("fracture_sites.icd_prefix", []), "icd_prefix", "icd_prefixes"),
    (_set("hyperparathyroidism_types.primary", []), "primary", "primary_tertiary_familial"),
    (
        _set("oncology_interval_days", {"denosumab": 90}),
        "oncology_interval_days",
        "oncology_min_interval_days",
    ),
]


@pytest.mark.parametrize(("edit", "key", "nearest"), UNKNOWN_KEYS)
def test_unknown_key_fails_start_up_naming_it_and_the_nearest_valid(
    tmp_path: Path, edit: Any, key: str, nearest: str
) -> None:
    message = _refused(tmp_path, edit)
    assert repr(key) in message
    assert f"nearest valid: {nearest!r}" in message


@pytest.mark.protocol("R7a", "3c-dose-per-date")
def test_pen_days_on_an_agent_without_pens_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, _set("dosing.alendronate.pen_days", 28))
    assert "dosing.alendronate.pen_days" in message


@pytest.mark.protocol("R7a")
def test_strength_that_is_not_a_dose_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, _set("dosing.alendronate.by_strength_mg", {"seventy": 7}))
    assert "'seventy'" in message
    message = _refused(tmp_path, _set("dosing.alendronate.by_strength_mg", {"70.0": 7}))
    assert "'70.0'" in message
    message = _refused(tmp_path, _set("oncology_strengths_mg.denosumab", ["120 mg"]))
    assert "oncology_strengths_mg.denosumab: '120 mg'" in message


@pytest.mark.protocol("R7a")
def test_missing_dosing_of_an_exposure_agent_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, _drop("dosing.ibandronate"))
    assert "dosing: no entry for ibandronate" in message


@pytest.mark.protocol("3b-labs")
def test_lab_default_in_another_unit_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, _set("lab_defaults.calcium.unit", "mmol/L"))
    assert "lab_defaults.calcium.unit" in message and "mg/dL" in message


@pytest.mark.protocol("3b-labs")
def test_missing_lab_default_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, _drop("lab_defaults.alkaline_phosphatase"))
    assert "no default range for alkaline_phosphatase" in message


@pytest.mark.protocol("3b-labs", "R9a", "R9b")
def test_lab_bounds_no_rule_reads_are_refused(tmp_path: Path) -> None:
    albumin = {"low": "3.5", "high": "5.0", "unit": "g/dL"}
    assert "'albumin'" in _refused(tmp_path, _set("lab_defaults.albumin", albumin))
    message = _refused(tmp_path, _set("lab_defaults.alkaline_phosphatase.low", "40"))
    assert "lab_defaults.alkaline_phosphatase.low is read by nothing" in message
    assert "lab_defaults.calcium.low: missing" in _refused(tmp_path, _drop("lab_defaults.calcium.low"))


@pytest.mark.protocol("7-plan")
def test_follow_on_kind_must_match_the_agent(tmp_path: Path) -> None:
    message = _refused(tmp_path, _set("follow_on_agents.alendronate.kind", "denosumab"))
    assert "follow_on_agents.alendronate.kind" in message


@pytest.mark.protocol("R4", "3b-fractures")
def test_unknown_fracture_site_is_refused(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["fracture_sites"]["icd_prefixes"][0]["site"] = "hip"

    message = _refused(tmp_path, edit)
    assert "fracture_sites.icd_prefixes.0.site" in message


def test_packaged_file_passes_the_check() -> None:
    knowledge = load_knowledge(PACKAGED_FILE)
    assert knowledge.line("targets_line").startswith("The 3-year targets +0.20 / +0.50 T (3 / 6 %)")


def test_literal_braces_in_a_line_stay(tmp_path: Path) -> None:
    knowledge = load_knowledge(_write(tmp_path, _set("texts.suggest_only_line", "Review {{each}} one.")))
    assert knowledge.line("suggest_only_line") == "Review {each} one."


def test_unbalanced_brace_in_a_card_text_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, _set("texts.supplements_line", "Confirm {calcium adequacy."))
    assert "Confirm {calcium" in message


@pytest.mark.protocol("R4", "3b-fractures")
def test_fracture_rules_that_never_match_are_refused(tmp_path: Path) -> None:
    rules = yaml.safe_load(PACKAGED_FILE.read_text(encoding="utf-8"))["fracture_sites"]["icd_prefixes"]
    first_prefix = next(index for index, rule in enumerate(rules) if "prefix" in rule)

    def lower_prefix(data: dict[str, Any]) -> None:
        data["fracture_sites"]["icd_prefixes"][first_prefix]["prefix"] = "s72"

    def upper_word(data: dict[str, Any]) -> None:
        data["fracture_sites"]["snomed_words"][0]["word"] = "Vertebra"

    assert f"icd_prefixes.{first_prefix}.prefix: 's72' never matches" in _refused(tmp_path, lower_prefix)
    assert "snomed_words.0.word: 'Vertebra' never matches" in _refused(tmp_path, upper_word)
    assert "not_counted_words.0" in _refused(tmp_path, _set("fracture_sites.not_counted_words", ["Skull"]))
