"""Checks beyond the schema: no key that nothing reads, and values that code can match."""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from cds_service.knowledge.schema import (
    EXPOSURE_AGENTS,
    FOLLOW_ON_KINDS,
    LAB_BOUNDS_READ,
    LAB_UNITS,
    PEN_AGENTS,
    STRENGTH_DEPENDENT_AGENTS,
    KnowledgeError,
    KnowledgeModel,
    Thresholds,
    Windows,
    placeholders,
    unknown_key_error,
)
from cds_service.knowledge.texts import CARD_PLACEHOLDERS, MISSING_CODES, RULE_VALUES, SUMMARY_KEYS, Texts


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X; `Annotated[X, ...]` -> X."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    return annotation


def _check_value(value: Any, annotation: Any, where: str) -> None:
    annotation = _unwrap(annotation)
    model = _model_of(annotation)
    if model is not None:
        check_keys(value, model, where)
        return
    origin = get_origin(annotation)
    if origin is dict and isinstance(value, dict):
        key_type, value_type = get_args(annotation)
        allowed = get_args(key_type) if get_origin(key_type) is Literal else None
        for key, item in value.items():
            if allowed is not None and key not in allowed:
                raise unknown_key_error(where, str(key), allowed)
            _check_value(item, value_type, f"{where}.{key}")
    elif origin is list and isinstance(value, list):
        (item_type,) = get_args(annotation)
        for index, item in enumerate(value):
            _check_value(item, item_type, f"{where}.{index}")


def check_keys(data: Any, model: type[BaseModel], where: str = "") -> None:
    """Refuse keys that no field (or no known agent, site, outcome) reads, naming the nearest valid one."""
    if not isinstance(data, dict):
        return  # pydantic reports the type error
    fields = model.model_fields
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise unknown_key_error(where or "knowledge file", str(key), fields)
        _check_value(value, fields[key].annotation, path)


def _is_mg(text: str) -> bool:
    """A dose in mg as the extractors write it ("70", "0.05"; not "70.0", "070" or "70 mg"): the
    strengths are compared as text, so any other spelling would never match."""
    return re.fullmatch(r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?", text) is not None


def check_readers(model: KnowledgeModel, ingredients: frozenset[str]) -> None:
    """Dict-valued sections keyed by agents or outcomes: every key must be one that code reads."""
    for agent, dosing in model.dosing.items():
        if agent not in EXPOSURE_AGENTS:
            raise unknown_key_error("dosing", agent, EXPOSURE_AGENTS)
        if dosing.months_per_dose is not None and agent != "romosozumab":
            raise KnowledgeError(
                f"dosing.{agent}.months_per_dose is read by nothing: only romosozumab is dosed per month"
            )
        if dosing.pen_days is not None and agent not in PEN_AGENTS:
            raise KnowledgeError(
                f"dosing.{agent}.pen_days is read by nothing: only {', '.join(PEN_AGENTS)} have pens"
            )
        for strength in dosing.by_strength_mg:
            if not _is_mg(strength):
                raise KnowledgeError(f"dosing.{agent}.by_strength_mg: {strength!r} is not a dose in mg")
    for section in ("oncology_strengths_mg", "oncology_min_interval_days"):
        for agent in getattr(model, section):
            if agent not in STRENGTH_DEPENDENT_AGENTS:
                raise unknown_key_error(section, agent, STRENGTH_DEPENDENT_AGENTS)
    for agent, strengths in model.oncology_strengths_mg.items():
        for strength in strengths:
            if not _is_mg(strength):
                raise KnowledgeError(f"oncology_strengths_mg.{agent}: {strength!r} is not a dose in mg")
    sites = model.fracture_sites
    for index, rule in enumerate(sites.icd_prefixes):
        if rule.prefix is not None and not re.fullmatch(r"[A-Z]\d{2}(?:\.[0-9A-Z]*)?", rule.prefix):
            raise KnowledgeError(
                f"fracture_sites.icd_prefixes.{index}.prefix: {rule.prefix!r} never matches a code "
                "(codes are compared upper case with the dot after the category, e.g. 'S72', 'M80.05')"
            )
    words = [(f"snomed_words.{i}.word", r.word) for i, r in enumerate(sites.snomed_words)]
    words += [(f"not_counted_words.{i}", w) for i, w in enumerate(sites.not_counted_words)]
    for where, word in words:
        if word != word.lower() or not word.strip():
            raise KnowledgeError(
                f"fracture_sites.{where}: {word!r} never matches (displays are compared lower case)"
            )
    absent = [agent for agent in EXPOSURE_AGENTS if agent not in model.dosing]
    if absent:
        raise KnowledgeError(f"dosing: no entry for {', '.join(absent)} (its dosing interval is needed)")
    for agent in model.ingredient_names:
        if agent not in ingredients:
            raise unknown_key_error("ingredient_names", agent, ingredients)
    check_texts(model.texts)
    for agent, spec in model.follow_on_agents.items():
        if spec.kind != FOLLOW_ON_KINDS[agent]:
            raise KnowledgeError(
                f"follow_on_agents.{agent}.kind: {agent} is a {FOLLOW_ON_KINDS[agent]}, not a {spec.kind}"
            )
    for lab, default in model.lab_defaults.items():
        if default.low is not None and "low" not in LAB_BOUNDS_READ[lab]:
            raise KnowledgeError(
                f"lab_defaults.{lab}.low is read by nothing: only the upper bound is checked"
            )
        if default.low is None and "low" in LAB_BOUNDS_READ[lab]:
            raise KnowledgeError(f"lab_defaults.{lab}.low: missing (the lower bound is checked)")
        if default.unit != LAB_UNITS[lab]:
            raise KnowledgeError(
                f"lab_defaults.{lab}.unit: {default.unit!r} is not the unit results are converted to "
                f"({LAB_UNITS[lab]!r}); give the default range in {LAB_UNITS[lab]}"
            )
    missing_labs = [lab for lab in LAB_UNITS if lab not in model.lab_defaults]
    if missing_labs:
        raise KnowledgeError(f"lab_defaults: no default range for {', '.join(missing_labs)}")


def check_texts(texts: Texts) -> None:
    """Every summary and missing-input code has its template; every placeholder is a known name."""
    for key in texts.summaries:
        if key not in SUMMARY_KEYS:
            raise unknown_key_error("texts.summaries", key, SUMMARY_KEYS)
    absent = [key for key in SUMMARY_KEYS if key not in texts.summaries]
    if absent:
        raise KnowledgeError(f"texts.summaries: no template for {', '.join(absent)}")
    for section in ("missing_names", "missing_lines"):
        table: dict[str, str] = getattr(texts, section)
        for key in table:
            if key not in MISSING_CODES:
                raise unknown_key_error(f"texts.{section}", key, MISSING_CODES)
        absent = [code for code in MISSING_CODES if code not in table]
        if absent:
            raise KnowledgeError(f"texts.{section}: no text for {', '.join(absent)}")
    configured = {*Thresholds.model_fields, *Windows.model_fields}
    card_known = configured | set(CARD_PLACEHOLDERS)
    for name, template in texts.templates():
        known = (configured | set(RULE_VALUES[name])) if name in RULE_VALUES else card_known
        for placeholder in placeholders(template):
            if placeholder not in known:
                raise unknown_key_error(f"texts.{name} placeholder", placeholder, sorted(known))
