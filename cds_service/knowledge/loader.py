"""Load and validate the knowledge file (thresholds, windows, code tables, card texts, sources).

The service refuses to start on an invalid file (`KnowledgeError`). Code tables are indexed once
(`indexed.Knowledge`) so that the hot path only does dictionary look-ups.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cds_service.knowledge.checks import check_keys
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import PACKAGED_FILE, KnowledgeError, KnowledgeModel

# The C safe loader when libyaml is present (10x faster start-up), else the pure-Python safe loader.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KnowledgeError(f"cannot read knowledge file {path}: {exc.strerror}") from exc
    try:
        return yaml.load(raw, Loader=_YAML_LOADER), raw  # noqa: S506 - a safe loader (C or pure Python)
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"knowledge file {path} is not valid YAML: {exc}".replace("\n", " ")) from exc


def load_knowledge(path: str | Path | None = None) -> Knowledge:
    """Load, validate and index a knowledge file (the packaged one when `path` is None)."""
    file = Path(path) if path else PACKAGED_FILE
    data, raw = _read_yaml(file)
    try:
        check_keys(data, KnowledgeModel)
    except KnowledgeError as exc:
        raise KnowledgeError(f"invalid knowledge file {file}: {exc}") from None
    try:
        model = KnowledgeModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KnowledgeError(
            f"invalid knowledge file {file}: {where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc
    try:
        return Knowledge(model, hashlib.sha256(raw).hexdigest(), file.resolve().parent)
    except KnowledgeError as exc:
        raise KnowledgeError(f"invalid knowledge file {file}: {exc}") from None


@lru_cache(maxsize=1)
def packaged_knowledge() -> Knowledge:
    """The packaged knowledge file, loaded once per process."""
    return load_knowledge(None)
