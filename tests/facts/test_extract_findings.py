"""facts.extract_findings: Condition, Procedure and AllergyIntolerance shapes -> findings (§2, §3b, §3c)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.facts.extract_findings import extract_findings
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import ClinicalFinding
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, RXNORM, SNOMED

SUBJECT = {"reference": "Patient/p1"}


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def condition(system: str, code: str, display: str | None = None, **extra: Any) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {
        "resourceType": "Condition",
        "id": "c1",
        "subject": SUBJECT,
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [coding], **({"text": extra.pop("text")} if "text" in extra else {})},
        **extra,
    }


def only(resources: list[dict[str, Any]], knowledge: Knowledge) -> ClinicalFinding:
    (finding,) = extract_findings(parse_resources(resources, knowledge), knowledge)
    return finding


def facts(finding: ClinicalFinding) -> dict[str, Any]:
    return {
        "onset": finding.onset,
        "cancer": finding.is_cancer,
        "site": finding.fracture_site,
        "initial": finding.fracture_initial,
        "osteoporotic": finding.fracture_osteoporotic,
        "level": finding.vertebral_level,
    }


def expect(
    onset: date | None = None,
    *,
    cancer: bool = False,
    site: str | None = None,
    initial: bool | None = None,
    osteoporotic: bool = False,
    level: str | None = None,
) -> dict[str, Any]:
    return {
        "onset": onset,
        "cancer": cancer,
        "site": site,
        "initial": initial,
        "osteoporotic": osteoporotic,
        "level": level,
    }


@pytest.mark.protocol("3b-fractures", "3b-dates", "3b-cancer", "3c-undated-history")
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            condition(
                ICD10CM, "S72.001A", onsetDateTime="2023-03-04T22:00:00-05:00", recordedDate="2023-03-10"
            ),
            expect(date(2023, 3, 4), site="hip_femur", initial=True),
            id="hip-fracture-local-onset-date",
        ),
        pytest.param(
            condition(ICD10CM, "M80.08XA", onsetDateTime="2023-01-05"),
            expect(date(2023, 1, 5), site="vertebra", initial=True, osteoporotic=True),
            id="osteoporotic-vertebral-fracture",
        ),
        pytest.param(
            condition(ICD10CM, "S32.010D", onsetDateTime="2023-04-01"),
            expect(date(2023, 4, 1), site="vertebra", initial=False, level="L1"),
            id="l1-subsequent-encounter",
        ),
        pytest.param(
            condition(ICD10CM, "s32030a", onsetDateTime="2023-04-01"),
            expect(date(2023, 4, 1), site="vertebra", initial=True, level="L3"),
            id="code-without-dot-lower-case",
        ),
        pytest.param(
            condition(
                ICD10, "S22.0", text="Wedge fracture T12 vertebra", onsetPeriod={"start": "2022-11-02"}
            ),
            expect(date(2022, 11, 2), site="vertebra", level="T12"),
            id="who-code-level-from-text-onset-period",
        ),
        pytest.param(
            condition(ICD10CM, "S32.000A", text="Vertebral fracture"),
            expect(site="vertebra", initial=True),
            id="undated-vertebral-fracture",
        ),
        pytest.param(
            condition(
                ICD10CM,
                "Z87.310",
                "Personal history of (healed) osteoporosis fracture",
                onsetDateTime="2021-06-01",
            ),
            expect(None, site="unspecified", osteoporotic=True),
            id="history-of-code-never-dates",
        ),
        pytest.param(
            condition(ICD10CM, "I21.9", recordedDate="2023-05-01"),
            expect(None),
            id="mi-only-recorded-date-is-undated",
        ),
        pytest.param(
            condition(ICD10CM, "C50.911", onsetString="years ago"),
            expect(None, cancer=True),
            id="breast-cancer-onset-string",
        ),
        pytest.param(condition(ICD10CM, "C7B.03"), expect(cancer=True), id="secondary-carcinoid-of-bone"),
        pytest.param(condition(ICD10, "C79.5"), expect(cancer=True), id="bone-metastasis-who"),
        pytest.param(
            condition(SNOMED, "94222008", "Secondary malignant neoplasm of bone"),
            expect(cancer=True),
            id="snomed-bone-metastasis-display",
        ),
    ],
)
def test_condition_shapes(resource: dict[str, Any], expected: dict[str, Any], knowledge: Knowledge) -> None:
    assert facts(only([resource], knowledge)) == expected


@pytest.mark.protocol("3b-cv-undated")
def test_recorded_date_is_kept_but_never_the_onset(knowledge: Knowledge) -> None:
    finding = only([condition(ICD10CM, "I21.9", recordedDate="2023-05-01")], knowledge)
    assert (finding.onset, finding.recorded) == (None, date(2023, 5, 1))
    assert "myocardial_infarction" in finding.concepts


def test_procedure_performed_period(knowledge: Knowledge) -> None:
    procedure = {
        "resourceType": "Procedure",
        "id": "pr1",
        "status": "completed",
        "subject": SUBJECT,
        "code": {"coding": [{"system": ICD10CM, "code": "S72.001A"}]},
        "performedPeriod": {"start": "2023-03-05T01:00:00+09:00", "end": "2023-03-06"},
    }
    finding = only([procedure], knowledge)
    assert (finding.resource_type, finding.onset) == ("Procedure", date(2023, 3, 5))


@pytest.mark.parametrize(
    ("allergy", "agents"),
    [
        pytest.param(
            {"code": {"coding": [{"system": RXNORM, "code": "46041", "display": "Alendronate"}]}},
            frozenset({"alendronate"}),
            id="coded-ingredient",
        ),
        pytest.param({"code": {"text": "Prolia"}}, frozenset({"denosumab"}), id="brand-text"),
        pytest.param(
            {
                "code": {"text": "Prolia"},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "resolved",
                        }
                    ]
                },
            },
            None,
            id="resolved-allergy-ignored",
        ),
    ],
)
def test_allergies(allergy: dict[str, Any], agents: frozenset[str] | None, knowledge: Knowledge) -> None:
    resource = {"resourceType": "AllergyIntolerance", "id": "al1", "patient": SUBJECT, **allergy}
    found = extract_findings(parse_resources([resource], knowledge), knowledge)
    if agents is None:
        assert found == ()
    else:
        (finding,) = found
        assert finding.allergy_agents == agents
