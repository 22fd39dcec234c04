"""rules/history.py: fractures that count for R4 (§3b), hyperparathyroidism types (R9a/R9c) and the
renal findings, one row per clinical situation, on findings built directly."""

from __future__ import annotations

import pytest

from cds_service.facts.patient_record import ClinicalFinding
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.history import assess_fractures, hyperparathyroidism_types
from tests.clinical_builders import AS_OF, d, finding

K = packaged_knowledge()
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
BIRTH = d("1975-06-01")  # 50 on 2025-06-01


def wrist_fracture(onset: str, osteoporotic: bool = False) -> ClinicalFinding:
    return finding(
        {"fracture"}, onset, "wrist fracture", fracture_site="forearm", fracture_osteoporotic=osteoporotic
    )


@pytest.mark.protocol("R4", "3b-fractures")
@pytest.mark.parametrize(
    ("fracture", "recent", "possible"),
    [
        pytest.param(
            wrist_fracture("2025-06-01"), True, True, id="§3b: wrist fracture at age 50 -> possible fragility"
        ),
        pytest.param(
            wrist_fracture("2025-05-31"),
            False,
            False,
            id="§3b edge: the same fracture the day before turning 50 -> not fragility",
        ),
        pytest.param(
            wrist_fracture("2025-05-31", osteoporotic=True),
            True,
            False,
            id="§3b: coded osteoporotic -> fragility at any age",
        ),
        pytest.param(
            wrist_fracture("2023-05-31"),
            False,
            False,
            id="R4b edge: onset before as_of - 2 years -> not recent",
        ),
    ],
)
def test_recent_fragility_fracture(fracture: ClinicalFinding, recent: bool, possible: bool) -> None:
    status = assess_fractures((fracture,), BIRTH, AS_OF, K)
    assert (status.recent_fragility is not None) is recent
    assert status.recent_is_possible_fragility is possible


@pytest.mark.protocol("R9a", "R9c")
@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        pytest.param("E21.0", "active", {"primary_tertiary_familial"}, id="R9a: E21.0 active -> primary"),
        pytest.param("E21.0", "resolved", set(), id="R9a: E21.0 resolved -> not active, ignored"),
        pytest.param("E21.0", None, {"primary_tertiary_familial"}, id="R9a: no status -> treated as active"),
        pytest.param("E21.1", "recurrence", {"secondary_non_renal"}, id="R9c: E21.1 recurrence -> secondary"),
        pytest.param(
            "E21.9", "active", {"unspecified"}, id="R9c: a code without a mapped type -> unspecified"
        ),
    ],
)
def test_hyperparathyroidism_types(code: str, status: str | None, expected: set[str]) -> None:
    hpt = finding(
        {"hyperparathyroidism"}, "2024-01-01", "hpt", codes=((ICD10CM, code),), clinical_status=status
    )
    assert hyperparathyroidism_types((hpt,), K) == expected
