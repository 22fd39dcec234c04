"""Knowledge files changed at one key, loaded through `load_knowledge(path)` like an institution's copy.

The packaged YAML is read once; each variant is written to a temporary folder (JSON is YAML) and loaded,
so that every variant passes the same validation and start-up checks as production.
"""

from __future__ import annotations

import atexit
import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.schema import PACKAGED_DIR, PACKAGED_FILE

PACKAGED_DATA: dict[str, Any] = yaml.safe_load(PACKAGED_FILE.read_text(encoding="utf-8"))
_FOLDER = Path(tempfile.mkdtemp(prefix="knowledge-variants-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
_COUNTER = iter(range(1, 1_000_000))


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every configurable leaf as (dotted path, value): scalars, lists of scalars (one value: a word
    list, a [system, code] pair) and empty lists; lists of mappings/lists are walked by index."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, str(key)))
    elif isinstance(value, list) and value and all(isinstance(item, (dict, list)) for item in value):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, str(index)))
    else:
        yield ".".join(path), value


def _node(data: Any, parts: list[str]) -> Any:
    for part in parts:
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def get(path: str, data: Any = None) -> Any:
    return _node(PACKAGED_DATA if data is None else data, path.split("."))


def write_variant(edit: Callable[[dict[str, Any]], None], folder: Path | None = None) -> Path:
    data = copy.deepcopy(PACKAGED_DATA)
    edit(data)
    target = (folder or _FOLDER) / f"knowledge-{next(_COUNTER)}.yaml"
    target.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return target


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        parent = _node(data, parents)
        if isinstance(parent, list):
            parent[int(last)] = value
        else:
            parent[last] = value

    return edit


def variant(path: str, value: Any) -> Knowledge:
    """The packaged knowledge file with `path` set to `value`, loaded from disk."""
    return load_knowledge(write_variant(setter(path, value)))


def table_folder() -> Path:
    """A fresh folder for a variant that brings its own code tables."""
    folder = Path(tempfile.mkdtemp(dir=_FOLDER))
    (folder / "codes").mkdir()
    for table in ("conditions", "medications", "observations"):
        shutil.copy(PACKAGED_DIR / "codes" / f"{table}.csv", folder / "codes" / f"{table}.csv")
    return folder
