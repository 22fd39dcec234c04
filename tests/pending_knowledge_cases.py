"""Cases of tests/test_knowledge_keys_read.py waiting for the medication modules (not collected by pytest).

`oncology_min_interval_days` (protocol §4: denosumab doses < 3 months apart, zoledronic acid < 6 months
apart = oncology use) is read by nothing on this branch: the medication developer is wiring it in
extract_medications/exposure. Once that is merged, move `PENDING_CASES` into `CASES` of
test_knowledge_keys_read.py and empty its `PENDING` tuple. Run it on its own with:

    .venv/bin/pytest tests/pending_knowledge_cases.py -q -o python_files='pending_*.py'
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.clinical.dates import add_days
from tests.clinical_builders import d
from tests.knowledge_variants import PACKAGED_DATA, leaves, variant
from tests.test_knowledge_keys_read import (
    DEFAULT,
    Case,
    Change,
    _medication,
    decide,
    extracted,
    name_of,
    with_meds,
)


def _doses_apart(agent_name: str, days: int) -> list[dict[str, Any]]:
    """Two administrations of unknown strength (name only), `days` apart, the last 2025-03-01."""
    last = d("2025-03-01")
    return [
        {
            **_medication("MedicationAdministration", name_of(agent_name), effectiveDateTime=day.isoformat()),
            "id": f"ma-{index}",
        }
        for index, day in enumerate((add_days(last, -days), last))
    ]


def check_oncology_interval(c: Change) -> None:
    agent_name = c.path.split(".")[1]
    resources = _doses_apart(agent_name, c.old - 10)  # closer than the packaged interval
    before = decide(with_meds(*extracted(resources, c.default)), c.default)
    after = decide(with_meds(*extracted(resources, c.changed)), c.changed)
    assert (before.outcome, before.rule) == ("SPECIALIST_REVIEW", "R2")
    assert after.rule != "R2"


PENDING_CASES = [
    Case(
        "oncology_min_interval_days.*",
        lambda _p, old: old - 20,
        check_oncology_interval,
        ("R2", "4-oncology"),
    ),
]


def _params() -> list[Any]:
    out = []
    for path, old in leaves(PACKAGED_DATA):
        for case in PENDING_CASES:
            if case.matches(path):
                out.append(pytest.param(path, old, case, id=path, marks=pytest.mark.protocol(*case.protocol)))
    return out


@pytest.mark.parametrize(("path", "old", "case"), _params())
def test_pending_value_is_read(path: str, old: Any, case: Case) -> None:
    new = case.new_value(path, old)
    case.check(Change(path, old, new, DEFAULT, variant(path, new)))
