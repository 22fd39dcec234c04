"""Malformed but schema-plausible FHIR data: a fixed corpus and a hypothesis strategy.

Every case is `(name, prefetch key, resource or raw value)`: the value is added to that key's searchset
Bundle of a real scenario's prefetch (or replaces the Patient for key `patient`). The service must answer
200 (the bad entry ignored or counted as unreadable, with caveats) or a clear 4xx/412 OperationOutcome;
never a 5xx.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from hypothesis import strategies as st

PID = "s01"
SUBJECT = {"reference": f"Patient/{PID}"}
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

TSCORE_HIP: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "fz-dxa",
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "38264-8", "display": "DXA Hip [T-score] Bone density"}]},
    "subject": SUBJECT,
    "effectiveDateTime": "2024-05-20",
    "valueQuantity": {"value": -2.5, "unit": "{T-score}"},
}
EGFR: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "fz-egfr",
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "33914-3"}]},
    "subject": SUBJECT,
    "effectiveDateTime": "2025-03-01",
    "valueQuantity": {"value": 75, "unit": "mL/min/{1.73_m2}"},
    "referenceRange": [{"low": {"value": 60}}],
}
FRACTURE: dict[str, Any] = {
    "resourceType": "Condition",
    "id": "fz-cond",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"coding": [{"system": ICD10CM, "code": "S72.001A"}]},
    "subject": SUBJECT,
    "onsetDateTime": "2020-01-01",
}
DENOSUMAB: dict[str, Any] = {
    "resourceType": "MedicationAdministration",
    "id": "fz-admin",
    "status": "completed",
    "medicationCodeableConcept": {
        "coding": [{"system": RXNORM, "code": "993452"}],
        "text": "denosumab 60 mg",
    },
    "subject": SUBJECT,
    "effectiveDateTime": "2024-01-01",
}
STATEMENT: dict[str, Any] = {
    "resourceType": "MedicationStatement",
    "id": "fz-stmt",
    "status": "active",
    "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "904431"}]},
    "subject": SUBJECT,
    "effectivePeriod": {"start": "2021-03-01"},
}
TEMPLATES: dict[str, tuple[str, dict[str, Any]]] = {
    "dxa": ("dxa", TSCORE_HIP),
    "lab": ("labs", EGFR),
    "condition": ("conditions", FRACTURE),
    "administration": ("medicationAdministrations", DENOSUMAB),
    "statement": ("medicationStatements", STATEMENT),
}


def _with(template: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    key, base = TEMPLATES[template]
    resource = copy.deepcopy(base)
    for name, value in changes.items():
        if value is _DROP:
            resource.pop(name, None)
        else:
            resource[name] = value
    return key, resource


_DROP = object()
DEEP: Any = {"value": "x"}
for _ in range(200):
    DEEP = {"extension": [DEEP]}
HUGE = "x" * 200_000


def _corpus() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []

    def add(name: str, case: tuple[str, Any]) -> None:
        cases.append((name, case[0], case[1]))

    # wrong types for resourceType/status/code
    add("resourceType as list", _with("dxa", resourceType=["Observation"]))
    add("resourceType as object", _with("dxa", resourceType={"value": "Observation"}))
    add("resourceType missing", _with("lab", resourceType=_DROP))
    add("status as list", _with("dxa", status=["final"]))
    add("status as object", _with("statement", status={"code": "active"}))
    add("status number", _with("administration", status=3))
    add("code as list", _with("dxa", code=[{"coding": []}]))
    add("code as string", _with("condition", code="S72.001A"))
    add("coding as object", _with("dxa", code={"coding": {"system": LOINC, "code": "38264-8"}}))
    add("coding entries wrong", _with("lab", code={"coding": [None, 5, "x", {"system": 1, "code": []}]}))
    add("id as object", _with("dxa", id={"v": 1}))
    add("id invalid chars", _with("condition", id="../../etc/passwd"))
    add("subject as string", _with("lab", subject="Patient/s01"))
    # numbers
    add("T-score 1e30", _with("dxa", valueQuantity={"value": 1e30, "unit": "{T-score}"}))
    add("T-score -1e308", _with("dxa", valueQuantity={"value": -1e308, "unit": "{T-score}"}))
    add("T-score huge int", _with("dxa", valueQuantity={"value": 10**18, "unit": "{T-score}"}))
    add("T-score max float", _with("dxa", valueQuantity={"value": sys.float_info.max, "unit": "SD"}))
    add("T-score tiny", _with("dxa", valueQuantity={"value": 5e-324, "unit": "SD"}))
    add("eGFR negative", _with("lab", valueQuantity={"value": -40, "unit": "mL/min"}))
    add("eGFR as string value", _with("lab", valueQuantity={"value": "seventy", "unit": "mL/min"}))
    add("eGFR bool", _with("lab", valueQuantity={"value": True}))
    add("valueQuantity list", _with("lab", valueQuantity=[{"value": 70}]))
    add("valueString NaN", _with("dxa", valueQuantity=_DROP, valueString="NaN"))
    add("valueString inf", _with("dxa", valueQuantity=_DROP, valueString="-Infinity"))
    add("valueString 1e999", _with("lab", valueQuantity=_DROP, valueString="<1e999"))
    add("comparator garbage", _with("lab", valueQuantity={"value": 20, "comparator": "<<"}))
    add("referenceRange wrong", _with("lab", referenceRange={"low": "x"}))
    add(
        "referenceRange huge",
        _with("lab", referenceRange=[{"low": {"value": 1e300}, "high": {"value": -1e300}}]),
    )
    add(
        "daysSupply huge",
        _with(
            "administration",
            resourceType="MedicationDispense",
            status="completed",
            whenHandedOver="2024-01-01",
            daysSupply={"value": 10**15},
            quantity={"value": 1e20},
        ),
    )
    add(
        "dispense negative quantity",
        _with(
            "administration",
            resourceType="MedicationDispense",
            whenHandedOver="2024-01-01",
            quantity={"value": -3},
        ),
    )
    add(
        "order repeats huge",
        _with(
            "statement",
            resourceType="MedicationRequest",
            status="active",
            intent="order",
            authoredOn="2021-03-01",
            effectivePeriod=_DROP,
            dispenseRequest={
                "numberOfRepeatsAllowed": 10**12,
                "expectedSupplyDuration": {"value": 10**9, "unit": "d"},
            },
        ),
    )
    # dates
    add("date 0001-01-01", _with("dxa", effectiveDateTime="0001-01-01"))
    add("date 9999-12-31", _with("dxa", effectiveDateTime="9999-12-31"))
    add("onset 0001-01-01", _with("condition", onsetDateTime="0001-01-01"))
    add(
        "period end 9999-12-31",
        _with("statement", effectivePeriod={"start": "2021-03-01", "end": "9999-12-31"}),
    )
    add("period reversed", _with("statement", effectivePeriod={"start": "2024-03-01", "end": "2001-01-01"}))
    add("period start 0001", _with("statement", effectivePeriod={"start": "0001-01-01"}))
    add("date garbage", _with("administration", effectiveDateTime="yesterday"))
    add("date month 13", _with("dxa", effectiveDateTime="2024-13-40"))
    add("date as number", _with("condition", onsetDateTime=20200101))
    add("datetime offset +14", _with("administration", effectiveDateTime="2024-01-01T23:59:59+14:00"))
    add("datetime year 10000", _with("dxa", effectiveDateTime="10000-01-01"))
    # references
    add(
        "medicationReference dangling",
        _with(
            "administration",
            medicationCodeableConcept=_DROP,
            medicationReference={"reference": "Medication/nowhere"},
        ),
    )
    add(
        "medicationReference contained self-cycle",
        _with(
            "administration",
            medicationCodeableConcept=_DROP,
            medicationReference={"reference": "#m"},
            contained=[
                {
                    "resourceType": "Medication",
                    "id": "m",
                    "ingredient": [{"itemReference": {"reference": "#m"}}],
                }
            ],
        ),
    )
    add(
        "medicationReference not a string",
        _with("statement", medicationCodeableConcept=_DROP, medicationReference={"reference": ["#m"]}),
    )
    add(
        "medicationReference empty",
        _with("statement", medicationCodeableConcept=_DROP, medicationReference={}),
    )
    add("contained not a list", _with("administration", contained={"resourceType": "Medication"}))
    add(
        "contained wrong type",
        _with(
            "administration",
            medicationCodeableConcept=_DROP,
            medicationReference={"reference": "#m"},
            contained=[{"resourceType": "Patient", "id": "m"}],
        ),
    )
    add("device dangling", _with("dxa", device={"reference": "Device/none"}))
    add(
        "device contained cycle",
        _with(
            "dxa",
            device={"reference": "#d"},
            contained=[{"resourceType": "Device", "id": "d", "parent": {"reference": "#d"}}],
        ),
    )
    add(
        "hasMember loop",
        _with(
            "dxa",
            id="fz-loop-a",
            hasMember=[{"reference": "Observation/fz-loop-a"}],
            derivedFrom=[{"reference": "Observation/fz-loop-a"}],
        ),
    )
    add(
        "panel components broken",
        _with("dxa", valueQuantity=_DROP, component=[None, {"code": 5}, {"valueQuantity": "x"}]),
    )
    add("subject other patient", _with("lab", subject={"reference": "Patient/other"}))
    add("subject missing", _with("condition", subject=_DROP))
    # sizes
    add("deeply nested extension", _with("dxa", extension=[DEEP]))
    add("enormous string", _with("condition", code={"text": HUGE}))
    add("enormous display", _with("statement", medicationCodeableConcept={"text": "denosumab " + HUGE}))
    add(
        "many codings",
        _with("lab", code={"coding": [{"system": LOINC, "code": str(i)} for i in range(5000)]}),
    )
    # raw values in the Bundle
    cases.append(("entry resource is a string", "labs", "Observation"))
    cases.append(("entry resource is null", "conditions", None))
    cases.append(("entry resource is a list", "dxa", [TSCORE_HIP]))
    # the Patient
    cases.append(
        (
            "patient birthDate 0001",
            "patient",
            {"resourceType": "Patient", "id": PID, "birthDate": "0001-01-01"},
        )
    )
    cases.append(
        (
            "patient birthDate future",
            "patient",
            {"resourceType": "Patient", "id": PID, "birthDate": "9999-12-31"},
        )
    )
    cases.append(
        (
            "patient gender list",
            "patient",
            {"resourceType": "Patient", "id": PID, "gender": ["female"], "birthDate": "1957-04-01"},
        )
    )
    cases.append(
        (
            "patient deceased string",
            "patient",
            {"resourceType": "Patient", "id": PID, "deceasedDateTime": "soon", "birthDate": "1957-04-01"},
        )
    )
    cases.append(
        (
            "patient wrong id",
            "patient",
            {"resourceType": "Patient", "id": "someone-else", "birthDate": "1957-04-01"},
        )
    )
    cases.append(("patient as Observation", "patient", TSCORE_HIP))
    return cases


CORPUS: list[tuple[str, str, Any]] = _corpus()

# -------------------------------------------------------------------------------------------------------
# Hypothesis strategy: a template with one to three fields replaced by wrong-typed or extreme values
# -------------------------------------------------------------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "2024-02-30",
            "2024-01-01T25:00:00Z",
            "<15",
            ">60",
            "-2.5",
            "final",
            "entered-in-error",
            "#self",
            "Medication/x",
            "Patient/s01",
            "1e999",
        ]
    ),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=12,
)
FIELDS = [
    "resourceType",
    "id",
    "status",
    "code",
    "subject",
    "effectiveDateTime",
    "effectivePeriod",
    "valueQuantity",
    "valueString",
    "component",
    "device",
    "bodySite",
    "referenceRange",
    "onsetDateTime",
    "clinicalStatus",
    "verificationStatus",
    "medicationCodeableConcept",
    "medicationReference",
    "contained",
    "dosage",
    "whenHandedOver",
    "daysSupply",
    "quantity",
    "intent",
    "authoredOn",
    "dispenseRequest",
    "hasMember",
]


@st.composite
def malformed_resources(draw: st.DrawFn) -> tuple[str, str, Any]:
    template = draw(st.sampled_from(sorted(TEMPLATES)))
    key, base = TEMPLATES[template]
    resource = copy.deepcopy(base)
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()) and field in resource:
            resource.pop(field)
        else:
            resource[field] = draw(JSON_VALUE)
    return f"generated {template}", key, resource
