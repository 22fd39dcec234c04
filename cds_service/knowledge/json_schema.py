"""The knowledge file's published JSON Schema (draft 2020-12) and the start-up check against it.

The schema is generated from the typed model (`schema.KnowledgeModel`), so the model stays the one source:
a new section or key (e.g. more card templates under `texts`) appears in the schema as soon as it is in the
model. `docs/knowledge-schema.json` is this schema as published (`cds-service knowledge schema` prints it;
a test keeps the two identical). The loader checks a file against it after the unknown-key check and before
the model's own cross-field checks (exactly one interval per agent, summaries < 140 characters, ...), which
the schema language does not express.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from cds_service.knowledge.schema import KnowledgeError, KnowledgeModel

SCHEMA_ID = "urn:osteo-cds:knowledge-schema"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# A number written as text ("0.20" keeps its two decimals on cards): what the model accepts as a decimal.
DECIMAL_TEXT = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$"


class _KnowledgeSchemaGenerator(GenerateJsonSchema):
    """Pydantic's draft 2020-12 generator; a decimal written as text must look like a number."""

    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        generated = super().decimal_schema(schema)
        for option in generated.get("anyOf", []):
            if option.get("type") == "string":
                option.setdefault("pattern", DECIMAL_TEXT)
        return generated


@lru_cache(maxsize=1)
def knowledge_json_schema() -> dict[str, Any]:
    """The JSON Schema of a knowledge file (draft 2020-12), generated from the model."""
    generated = KnowledgeModel.model_json_schema(
        mode="validation", schema_generator=_KnowledgeSchemaGenerator
    )
    return {
        "$schema": DRAFT_2020_12,
        "$id": SCHEMA_ID,
        **generated,
        "title": "Knowledge file of the osteoporosis-escalation CDS service",
        "description": (
            "Thresholds, windows, policies, code tables and additions, dosing, card texts and sources. "
            "Generated from cds_service/knowledge/schema.py; described in docs/knowledge.md. Beyond this "
            "schema the service refuses keys that nothing reads and checks cross-field rules at start-up."
        ),
    }


def schema_text() -> str:
    """The schema as published in docs/knowledge-schema.json (stable key order, trailing newline)."""
    return json.dumps(knowledge_json_schema(), indent=2, ensure_ascii=False) + "\n"


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = knowledge_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(data: Any) -> list[str]:
    """Every violation of the published schema, one line each (`where: what`), in document order."""
    errors = sorted(_validator().iter_errors(data), key=lambda error: list(map(str, error.absolute_path)))
    return [_line(best_match([error])) for error in errors]


def check_json_schema(data: Any) -> None:
    """Refuse a file that breaks the published schema: one line naming where and what (the most relevant
    error when there are several)."""
    errors = list(_validator().iter_errors(data))
    if errors:
        raise KnowledgeError(
            f"{_line(best_match(errors))} ({len(errors)} schema error(s); schema: docs/knowledge-schema.json)"
        )


def _line(error: ValidationError) -> str:
    """`where: what` of the most specific error (the failing branch of an `anyOf`, not the `anyOf`)."""
    where = ".".join(str(part) for part in error.absolute_path) or "knowledge file"
    return f"{where}: {error.message}".replace("\n", " ")
