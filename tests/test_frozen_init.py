"""core.frozen_init: the one-step __init__ builds exactly what the dataclass __init__ builds (issue 14)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cds_service.core.frozen_init import one_step_init
from cds_service.facts.dates import Interval
from cds_service.facts.observation_values import Implausible, Measured, Unreadable
from cds_service.facts.patient_record import (
    BmdResult,
    ClinicalFinding,
    Demographics,
    FraxResult,
    LabResult,
    MedicationRecord,
    PatientRecord,
    ScannerId,
)
from cds_service.rules import bmd, decision, labs

DAY = date(2024, 5, 6)
SCANNER = ScannerId("identifier", "sn:1001", "DXA-1")
BMD = BmdResult(DAY, "total_hip", "left", "t_score", Decimal("-2.6"), SCANNER, "o1")
MEDICATION = MedicationRecord("alendronate", "first_line", "dispense", "completed", "d1", event_date=DAY)
FINDING = ClinicalFinding(
    "Condition", "c1", frozenset({"osteoporosis"}), (("s", "c"),), "label", DAY, None, "active"
)
LAB = LabResult("egfr", DAY, Decimal(62), "mL/min/{1.73_m2}", None, None, "l1", comparator="<")
# (class, positional arguments, keyword arguments): every decorated class, with and without defaults.
CASES: list[tuple[type, tuple[Any, ...], dict[str, Any]]] = [
    (Demographics, (DAY, "female", False), {}),
    (ScannerId, ("display", "lunar idxa", "Lunar iDXA"), {}),
    (BmdResult, (DAY, "lumbar_spine", None, "bmd", Decimal("0.9"), None, "o2"), {}),
    (FraxResult, (DAY, "mof", Decimal(21)), {}),
    (MedicationRecord, ("denosumab", "first_line", "administration", "completed", "a1"), {}),
    (MedicationRecord, (), {**dataclasses.asdict(MEDICATION), "quantity": Decimal(12), "per_pen": True}),
    (
        ClinicalFinding,
        (),
        {field.name: getattr(FINDING, field.name) for field in dataclasses.fields(FINDING)},
    ),
    (LabResult, (), {field.name: getattr(LAB, field.name) for field in dataclasses.fields(LAB)}),
    (PatientRecord, (None,), {}),
    (PatientRecord, (Demographics(DAY, "male", True),), {"bmd": (BMD,), "medications": (MEDICATION,)}),
    (Interval, (DAY, date(2024, 6, 1)), {}),
    (Measured, (Decimal(-2), "<", ["{T-score}"]), {}),
    (Unreadable, ("pending",), {}),
    (Implausible, ("1e99",), {}),
    (bmd.Scan, (DAY, SCANNER, (BMD,)), {}),
    (labs.Reading, (), {field.name: None for field in dataclasses.fields(labs.Reading)}),
    (decision.Evidence, (), {}),
    (decision.WarningDetail, (), {field.name: "x" for field in dataclasses.fields(decision.WarningDetail)}),
]


def hash_or_error(value: object) -> int | type[Exception]:
    try:
        return hash(value)
    except TypeError:  # a field holds a list (Measured.units): unhashable either way
        return TypeError


@pytest.mark.parametrize(("cls", "args", "kwargs"), CASES, ids=lambda case: getattr(case, "__name__", ""))
def test_one_step_init_builds_what_the_dataclass_init_builds(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    quick = cls(*args, **kwargs)
    careful = object.__new__(cls)
    cls._dataclass_init(careful, *args, **kwargs)  # type: ignore[attr-defined]
    assert vars(quick) == vars(careful)
    assert list(vars(quick)) == [field.name for field in dataclasses.fields(cls)]
    assert quick == careful
    assert hash_or_error(quick) == hash_or_error(careful)
    assert repr(quick) == repr(careful)
    assert pickle.loads(pickle.dumps(quick)) == careful
    assert copy.deepcopy(quick) == careful
    assert inspect.signature(cls.__init__) == inspect.signature(cls._dataclass_init)  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.extra = 1


def test_replace_goes_through_the_one_step_init() -> None:
    changed = dataclasses.replace(MEDICATION, role="oncology_dose", strength="oncology")
    assert vars(changed) == {**vars(MEDICATION), "role": "oncology_dose", "strength": "oncology"}


def test_wrong_arguments_fail_as_with_the_dataclass_init() -> None:
    with pytest.raises(TypeError):
        Interval(DAY)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Interval(DAY, DAY, DAY)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ScannerId("display", "x", "y", colour="red")  # type: ignore[call-arg]


def test_other_shapes_are_refused() -> None:
    with pytest.raises(TypeError):

        @one_step_init
        @dataclasses.dataclass
        class NotFrozen:
            value: int

    with pytest.raises(TypeError):

        @one_step_init
        @dataclasses.dataclass(frozen=True)
        class WithFactory:
            values: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError):

        @one_step_init
        @dataclasses.dataclass(frozen=True)
        class WithPostInit:
            value: int

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError):

        @one_step_init
        @dataclasses.dataclass(frozen=True)
        class WithInitVar:
            value: int
            scale: dataclasses.InitVar[int] = 1
