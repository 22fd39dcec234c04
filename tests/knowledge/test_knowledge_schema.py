"""The published JSON Schema (docs/knowledge-schema.json) and the loader agree: the shipped file passes both,
a mutated file fails both, and the published file is what the model generates (so it cannot go stale)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from cds_service.knowledge.json_schema import DRAFT_2020_12, knowledge_json_schema, schema_text
from cds_service.knowledge.loader import load_knowledge, read_yaml
from cds_service.knowledge.schema import PACKAGED_FILE, KnowledgeError

DOCS = Path(__file__).resolve().parents[2] / "docs"
PUBLISHED = json.loads((DOCS / "knowledge-schema.json").read_text(encoding="utf-8"))
SHIPPED = read_yaml(PACKAGED_FILE)


def _published_errors(data: Any) -> list[str]:
    return [error.message for error in Draft202012Validator(PUBLISHED).iter_errors(data)]


def test_published_schema_is_the_generated_one() -> None:
    """Regenerate with `cds-service knowledge schema > docs/knowledge-schema.json` after a model change."""
    assert (DOCS / "knowledge-schema.json").read_text(encoding="utf-8") == schema_text()


def test_published_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert PUBLISHED["$schema"] == DRAFT_2020_12
    Draft202012Validator.check_schema(PUBLISHED)


def test_the_shipped_file_passes_the_published_schema_and_the_loader() -> None:
    assert _published_errors(SHIPPED) == []
    load_knowledge(PACKAGED_FILE)


def _mutated(path: str, value: Any) -> dict[str, Any]:
    """The shipped data with `path` (dots; list indexes as numbers) set to `value` (DELETE removes it)."""
    data: dict[str, Any] = copy.deepcopy(SHIPPED)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return data


DELETE = object()
MUTATIONS = [
    ("threshold_typo", 1, "threshold_typo"),  # unknown top-level key
    ("thresholds.t_score_osteoporisis", "-2.5", "t_score_osteoporisis"),  # unknown nested key
    ("windows.therapy_min_months", "three", "windows.therapy_min_months"),  # wrong type
    ("windows.therapy_min_months", 0, "windows.therapy_min_months"),  # out of range
    ("policy.duration_card", [True], "policy.duration_card"),  # wrong type
    ("policy.romosozumab_in_men", "sometimes", "policy.romosozumab_in_men"),  # not an allowed value
    ("thresholds.coverage_ratio_min", 1.5, "thresholds.coverage_ratio_min"),  # out of range
    ("thresholds.frax_mof_high_risk", "twenty", "thresholds.frax_mof_high_risk"),  # not a number
    ("thresholds.min_age_years", DELETE, "min_age_years"),  # required key missing
    ("lab_defaults.magnesium", {"high": 2, "unit": "mg/dL"}, "magnesium"),  # a lab no rule reads
    ("sources.0.url", "ftp:example", "sources.0.url"),  # not an absolute http(s) URL
    ("version", "one", "version"),  # not semantic
]


@pytest.mark.parametrize(("path", "value", "named"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_mutated_file_fails_the_published_schema_and_the_loader(
    tmp_path: Path, path: str, value: Any, named: str
) -> None:
    data = _mutated(path, value)
    assert _published_errors(data), f"the published schema accepts {path} = {value!r}"
    target = tmp_path / "knowledge.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_the_start_up_check_runs_the_published_schema(tmp_path: Path) -> None:
    """A type error is reported by the schema check (before the model), naming the schema."""
    target = tmp_path / "knowledge.yaml"
    data = _mutated("policy.duration_card", [True])
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(
        KnowledgeError,
        match=r"policy\.duration_card: \[True\] is not of type 'boolean'.*"
        r"docs/knowledge-schema\.json",
    ):
        load_knowledge(target)


def test_every_section_is_described_in_the_readable_doc() -> None:
    """docs/knowledge.md lists each top-level section of the schema, in file order, and no other."""
    text = (DOCS / "knowledge.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE)
    assert rows == list(knowledge_json_schema()["properties"])
    assert list(SHIPPED) == rows
