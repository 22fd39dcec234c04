"""`one_step_init`: a frozen dataclass whose __init__ stores its fields in one step.

The __init__ that `dataclasses` writes for a frozen class sets each field through `object.__setattr__`
(the class's own __setattr__ refuses), a slot-wrapper call of ~1,500 CPU instructions a field. The facts
and the decision are built of such classes (a medication record has 19 fields, a call builds hundreds of
records and intervals). The __init__ given here has the same parameters, order and default objects and
fills the instance `__dict__` with the same values at once: equality, hashing, repr, ordering,
`dataclasses.replace`, copying and pickling are those of the dataclass, unchanged.

Only for the plain shape: frozen, every field in __init__, positional, with no default factory, no
`__post_init__`, no InitVar and no slots; anything else is refused when the class is defined.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

_Class = TypeVar("_Class", bound=type)


def one_step_init(cls: _Class) -> _Class:
    """Give a `@dataclass(frozen=True)` class the one-step __init__ (decorate above @dataclass)."""
    careful = cls.__dict__["__init__"]  # the one dataclasses wrote
    fields = dataclasses.fields(cls)
    _check_plain_shape(cls, fields, careful)
    defaults: dict[str, Any] = {}
    params: list[str] = []
    for field in fields:
        if field.default is dataclasses.MISSING:
            params.append(field.name)
        else:
            defaults[f"_default_{field.name}"] = field.default
            params.append(f"{field.name}=_default_{field.name}")
    values = ", ".join(f"{field.name!r}: {field.name}" for field in fields)
    source = f"def __init__(self, {', '.join(params)}):\n    _set_attribute(self, '__dict__', {{{values}}})\n"
    namespace: dict[str, Any] = {"_set_attribute": object.__setattr__, **defaults}
    exec(source, namespace)  # noqa: S102 - generated from the field names, as dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = careful.__doc__
    init.__annotations__ = dict(careful.__annotations__)
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses a plain assignment to a class's __init__
    setattr(cls, "_dataclass_init", careful)  # noqa: B010 - the careful __init__, for tests comparing both
    return cls


def _check_plain_shape(cls: type, fields: tuple[dataclasses.Field[Any], ...], careful: Any) -> None:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__}: one_step_init is for @dataclass(frozen=True) classes")
    if hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: __post_init__ or slots: keep the dataclass __init__")
    for field in fields:
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: only plain fields have a one-step __init__")
    expected = [field.name for field in fields]
    if list(inspect.signature(careful).parameters)[1:] != expected:  # an InitVar would show here
        raise TypeError(f"{cls.__name__}: __init__ parameters are not exactly its fields")
