"""The per-call memos and fast paths of extraction agree with the careful path they stand for (issue 14)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cds_service.facts import extract_medications
from cds_service.facts.extract_medications import TextDoses
from cds_service.facts.extract_strength import doses_in_text

DOSE_TEXTS = [
    ("alendronate", "alendronate 70 mg oral tablet weekly"),
    ("denosumab", "Prolia 60MG/ML injection"),
    ("denosumab", "denosumab 70 mg/mL"),
    ("zoledronic_acid", "zoledronic acid 0.05 mg/mL"),
    ("zoledronic_acid", "0.1 mg/kg"),
    ("alendronate", "70 mg and 35 mg"),
    ("alendronate", "as directed"),
]


@pytest.mark.parametrize(("agent", "text"), DOSE_TEXTS)
def test_text_doses_agree_with_doses_in_text(agent: str, text: str) -> None:
    memo = TextDoses()
    assert list(memo(agent, text)) == doses_in_text(agent, text)
    assert list(memo(agent, text)) == doses_in_text(agent, text)  # the remembered answer too


def test_text_doses_read_each_text_once_per_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[tuple[str, str]] = []

    def counted(agent: str, text: str) -> list[Decimal]:
        reads.append((agent, text))
        return doses_in_text(agent, text)

    monkeypatch.setattr(extract_medications, "doses_in_text", counted)
    memo = TextDoses()
    for _ in range(3):
        memo("denosumab", "denosumab 70 mg/mL")
        memo("zoledronic_acid", "denosumab 70 mg/mL")  # another agent reads concentrations otherwise
    assert reads == [("denosumab", "denosumab 70 mg/mL"), ("zoledronic_acid", "denosumab 70 mg/mL")]
    assert memo("denosumab", "denosumab 70 mg/mL") == (Decimal(120),)
    assert memo("zoledronic_acid", "denosumab 70 mg/mL") == ()
