"""CDS Hooks G2 on the wire: None, "", [] and {} are omitted from JSON answers (`drop_empty`)."""

from __future__ import annotations

from typing import Any

_KEEP_EMPTY_LISTS = frozenset({"cards", "services"})
# Tuples of types, not `str | list`: a union written in a function is built again on every call.
_SEQUENCE_TYPES = (list, tuple)
_SIZED_TYPES = (str, list, tuple, dict)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, _SIZED_TYPES) and len(value) == 0)


def drop_empty(obj: Any) -> Any:
    """Recursively omit None, "", [] and {} (CDS Hooks G2).

    `cards: []` and `services: []` are kept; the content of a CDS Hooks `extension` object is
    owned by the extension and passed through untouched (only an empty or null one is dropped).
    """
    if isinstance(obj, dict):
        return _drop_in_object(obj)
    if isinstance(obj, _SEQUENCE_TYPES):
        return _drop_in_array(obj)
    return obj


def _drop_in_object(obj: dict[Any, Any]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            cleaned: dict[Any, Any] | list[Any] = value if key == "extension" else _drop_in_object(value)
        elif isinstance(value, _SEQUENCE_TYPES):
            if not value and key in _KEEP_EMPTY_LISTS:
                result[key] = []
                continue
            cleaned = _drop_in_array(value)
        else:  # a scalar is its own cleaned form; of the sized types only a string is left here
            if value is not None and not (isinstance(value, str) and not value):
                result[key] = value
            continue
        if cleaned:
            result[key] = cleaned
    return result


def _drop_in_array(obj: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [item for item in (drop_empty(value) for value in obj) if not _is_empty(item)]
