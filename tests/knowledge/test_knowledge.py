"""The knowledge file: validated at start-up, overridable, indexed code tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge.loader import load_knowledge, packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, PACKAGED_FILE, RXNORM, KnowledgeError


def _override(tmp_path: Path, change: dict[str, object]) -> Path:
    data = yaml.safe_load(PACKAGED_FILE.read_text(encoding="utf-8"))
    for dotted, value in change.items():
        node = data
        *path, last = dotted.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    target = tmp_path / "knowledge.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def test_packaged_file_loads_with_versioned_digest() -> None:
    k = packaged_knowledge()
    version, digest = k.protocol_version.split("+")
    assert version == k.model.version
    assert len(digest) == 12 and int(digest, 16) >= 0


def test_override_changes_version_and_thresholds(tmp_path: Path) -> None:
    path = _override(tmp_path, {"thresholds.frax_mof_high_risk": "25.0"})
    k = load_knowledge(path)
    assert str(k.t.frax_mof_high_risk) == "25.0"
    assert k.protocol_version != packaged_knowledge().protocol_version
    assert k.medications, "relative code tables fall back to the packaged folder"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"thresholds.coverage_ratio_min": "1.5"}, "thresholds.coverage_ratio_min"),
        ({"windows.therapy_min_months": 0}, "windows.therapy_min_months"),
        ({"policy.romosozumab_in_men": "sometimes"}, "policy.romosozumab_in_men"),
        ({"texts.summaries.ESCALATE": "x" * 140}, "texts.summaries"),
        ({"version": "one"}, "version"),
        ({"code_tables.conditions": "missing.csv"}, "code table 'conditions' not found"),
    ],
)
def test_invalid_file_is_refused_with_one_line(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(_override(tmp_path, change))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="threshold"):
        load_knowledge(_override(tmp_path, {"threshold_typo": 1}))


def test_not_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "k.yaml"
    bad.write_text("version: [unclosed", encoding="utf-8")
    with pytest.raises(KnowledgeError, match="not valid YAML"):
        load_knowledge(bad)


def test_serve_refuses_to_start_on_invalid_knowledge(tmp_path: Path) -> None:
    path = _override(tmp_path, {"thresholds.coverage_ratio_min": "2"})
    result = subprocess.run(
        [sys.executable, "-m", "cds_service", "serve"],
        env={"CDS_KNOWLEDGE_FILE": str(path), "PATH": "/usr/bin:/bin", "CDS_AUTH_MODE": "off"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "coverage_ratio_min" in result.stderr


def test_icd_categories_are_shared_between_icd10_and_icd10cm() -> None:
    k = packaged_knowledge()
    assert "paget_disease_of_bone" in k.condition_concepts(ICD10CM, "M88.9")  # only WHO M88 is listed
    assert "bone_malignancy" in k.condition_concepts(ICD10CM, "C41.2")  # WHO category C41
    assert "ckd_stage_4_5_or_dialysis" in k.condition_concepts(ICD10, "N18.4")
    assert k.condition_concepts(ICD10CM, "M89.9") == frozenset()


def test_product_codes_carry_strength() -> None:
    k = packaged_knowledge()
    assert k.medications[(RXNORM, "993452")].strength_mg == 60
    assert k.medications[(RXNORM, "1114085")].role == "oncology_dose"
    assert k.medications[(RXNORM, "705824")].strength_mg == 5


def test_every_gap_is_named_on_cards() -> None:
    k = packaged_knowledge()
    assert k.concept_gap_lines
    assert all(line.endswith(": not checked, no code list") for line in k.concept_gap_lines)


def test_prefetch_codes_come_from_the_tables() -> None:
    k = packaged_knowledge()
    dxa = dict.fromkeys(code for _, code in k.dxa_codes())
    assert {"38264-8", "38267-1", "38263-0", "90265-0", "90266-8"} <= dxa.keys()
    assert {"33914-3", "17861-6", "6768-6"} <= {code for _, code in k.lab_codes()}
