"""clinical.extract: validated FHIR resources -> PatientRecord facts (protocol §2, §3b, §4, §5)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cds_service.facts.extract import extract_record
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import ClinicalFinding, MedicationRecord, PatientRecord, ScannerId
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10CM, LOINC, RXNORM, SNOMED

SUBJECT = {"reference": "Patient/p1"}


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def record(resources: list[dict[str, Any]], knowledge: Knowledge) -> PatientRecord:
    return extract_record(parse_resources(resources, knowledge), knowledge)


def observation(
    code: str = "38264-8", value: Any = -2.6, unit: str | None = "{T-score}", **extra: Any
) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value}
    if unit is not None:
        quantity["unit"] = unit
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": extra.pop("id", "o1"),
        "status": "final",
        "code": extra.pop("code_concept", {"coding": [{"system": LOINC, "code": code}]}),
        "effectiveDateTime": "2021-02-15T10:00:00",
        "valueQuantity": quantity,
    }
    resource.update(extra)
    return {key: value for key, value in resource.items() if value is not None}


# ----- demographics ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("patient", "sex", "deceased", "birth"),
    [
        ({"gender": "female", "birthDate": "1957-04-01"}, "female", False, date(1957, 4, 1)),
        ({"gender": "male"}, "male", False, None),
        ({"gender": "other"}, "other", False, None),
        ({}, "unknown", False, None),
        ({"deceasedBoolean": True}, "unknown", True, None),
        ({"deceasedBoolean": False}, "unknown", False, None),
        ({"deceasedDateTime": "2024-01-01T08:00:00"}, "unknown", True, None),
    ],
)
def test_demographics(
    patient: dict[str, Any], sex: str, deceased: bool, birth: date | None, knowledge: Knowledge
) -> None:
    demographics = record([{"resourceType": "Patient", "id": "p1", **patient}], knowledge).demographics
    assert demographics is not None
    assert (demographics.sex, demographics.deceased, demographics.birth_date) == (sex, deceased, birth)


def test_no_patient_and_several_patients(knowledge: Knowledge) -> None:
    assert record([], knowledge).demographics is None
    two = record(
        [
            {"resourceType": "Patient", "id": "p1", "gender": "female"},
            {"resourceType": "Patient", "id": "p2"},
        ],
        knowledge,
    )
    assert two.demographics is not None
    assert two.demographics.sex == "female"
    assert "several Patient resources supplied: the first was used" in two.caveats


# ----- BMD: units, sites, sides, dates ----------------------------------------------------------------
@pytest.mark.parametrize("unit", ["{T-score}", "{T-Score}", "SD", "{SD}", "sd", None])
@pytest.mark.protocol("5-dxa")
def test_t_score_units_accepted(unit: str | None, knowledge: Knowledge) -> None:
    result = record([observation(unit=unit)], knowledge)
    assert [(b.site, b.kind, b.value) for b in result.bmd] == [("total_hip", "t_score", Decimal("-2.6"))]
    assert result.caveats == ()


@pytest.mark.parametrize("unit", ["g/cm2", "g/cm-2", "g/cm^2", "G/CM2"])
@pytest.mark.protocol("5-dxa")
def test_bmd_units_accepted(unit: str, knowledge: Knowledge) -> None:
    result = record([observation("38261-4", value=0.812, unit=unit)], knowledge)
    assert [(b.site, b.kind, b.value) for b in result.bmd] == [("total_hip", "bmd", Decimal("0.812"))]


@pytest.mark.parametrize(
    ("code", "value", "unit"),
    [("38264-8", -2.6, "%"), ("38264-8", -2.6, "T"), ("38261-4", 812, "mg/cm2"), ("38261-4", 0.8, None)],
)
@pytest.mark.protocol("5-dxa")
def test_bad_dxa_unit_is_ignored_with_caveat(
    code: str, value: float, unit: str | None, knowledge: Knowledge
) -> None:
    result = record([observation(code, value=value, unit=unit)], knowledge)
    assert result.bmd == ()
    assert result.caveats == (f"ignored DXA value with unit {unit or '(none)'}",)


def test_dxa_value_without_date_is_ignored(knowledge: Knowledge) -> None:
    result = record([observation(effectiveDateTime=None)], knowledge)
    assert result.bmd == ()
    assert result.caveats == ("ignored DXA value without a date",)


def test_z_score_is_ignored(knowledge: Knowledge) -> None:
    assert record([observation("80933-5", value=-1.0, unit="{Z-score}")], knowledge).bmd == ()


HIP_FEMORAL_NECK = {"system": SNOMED, "code": "29627003"}
RIGHT = {"system": SNOMED, "code": "24028007"}


@pytest.mark.parametrize(
    ("code", "extra", "site", "side"),
    [
        ("38264-8", {}, "total_hip", None),
        ("80946-7", {}, "total_hip", "left"),  # DXA Hip - left
        ("38263-0", {}, "femoral_neck", None),  # DXA Femur [T-score]
        ("38267-1", {}, "lumbar_spine", None),
        ("38265-5", {}, "radius", None),
        ("80950-9", {}, "other", None),  # calcaneus
        ("38264-8", {"bodySite": {"coding": [RIGHT]}}, "total_hip", "right"),  # side from bodySite
        # 46383-6 (site unspecified): site and laterality from bodySite codings
        ("46383-6", {"bodySite": {"coding": [HIP_FEMORAL_NECK, RIGHT]}}, "femoral_neck", "right"),
        (
            "46383-6",
            {
                "bodySite": {
                    "coding": [{"system": SNOMED, "code": "122496007"}],
                    "extension": [
                        {
                            "url": "https://vendor.example/laterality",
                            "valueCodeableConcept": {"coding": [RIGHT]},
                        }
                    ],
                }
            },
            "lumbar_spine",
            "right",
        ),
        ("46383-6", {"bodySite": {"text": "Left forearm"}}, "radius", "left"),
        # ... else code.text words
        (
            "46383-6",
            {"code_concept": {"coding": [{"system": LOINC, "code": "46383-6"}], "text": "L1-L4"}},
            "lumbar_spine",
            None,
        ),
        (
            "46383-6",
            {"code_concept": {"coding": [{"system": LOINC, "code": "46383-6"}], "text": "Total hip right"}},
            "total_hip",
            "right",
        ),
        (
            "46383-6",
            {"code_concept": {"coding": [{"system": LOINC, "code": "46383-6"}], "text": "Left femoral neck"}},
            "femoral_neck",
            "left",
        ),
    ],
)
@pytest.mark.protocol("5-dxa")
def test_bmd_site_and_side(
    code: str, extra: dict[str, Any], site: str, side: str | None, knowledge: Knowledge
) -> None:
    unit = "g/cm2" if code == "46383-6" else "{T-score}"
    result = record([observation(code, value=0.7, unit=unit, **extra)], knowledge)
    assert [(b.site, b.side) for b in result.bmd] == [(site, side)]


@pytest.mark.protocol("3b-site-unknown")
def test_undetermined_site_counts_with_caveat(knowledge: Knowledge) -> None:
    concept = {"coding": [{"system": LOINC, "code": "46383-6"}], "text": "DXA result"}
    result = record([observation("46383-6", value=0.7, unit="g/cm2", code_concept=concept)], knowledge)
    assert [b.site for b in result.bmd] == ["unknown"]
    assert result.caveats == ("BMD (g/cm²) site could not be determined (counts for diagnosis only)",)


@pytest.mark.protocol("3c-panels")
def test_dxa_panel_components_take_the_panel_date_and_device(knowledge: Knowledge) -> None:
    panel = observation(
        "38268-9",
        valueQuantity=None,
        effectiveDateTime="2024-05-20",
        device={"display": "DXA-1 Hologic Horizon A (SN 1001)"},
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "38264-8"}]},
                "valueQuantity": {"value": -2.5, "unit": "{T-score}"},
            },
            {"code": {"coding": [{"system": LOINC, "code": "38267-1"}]}, "valueQuantity": {"value": -2.7}},
            {"code": {"coding": [{"system": LOINC, "code": "80933-5"}]}, "valueQuantity": {"value": -1.1}},
        ],
    )
    panel.pop("valueQuantity", None)
    result = record([panel], knowledge)
    assert [(b.site, b.value, b.date) for b in result.bmd] == [
        ("total_hip", Decimal("-2.5"), date(2024, 5, 20)),
        ("lumbar_spine", Decimal("-2.7"), date(2024, 5, 20)),
    ]
    assert {b.scanner for b in result.bmd} == {
        ScannerId("identifier", "sn:1001", "DXA-1 Hologic Horizon A (SN 1001)")
    }


# ----- scanner identity ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "others", "expected"),
    [
        (
            {"device": {"display": "DXA-1 Hologic Horizon A (SN 1001)"}},
            [],
            ScannerId("identifier", "sn:1001", "DXA-1 Hologic Horizon A (SN 1001)"),
        ),
        (
            {"device": {"display": "Lunar iDXA S/N: 2002"}},
            [],
            ScannerId("identifier", "sn:2002", "Lunar iDXA S/N: 2002"),
        ),
        (
            {"device": {"display": "Lunar serial 77A1"}},
            [],
            ScannerId("identifier", "sn:77a1", "Lunar serial 77A1"),
        ),
        (
            {"device": {"display": "Hologic  Horizon-A, room 2"}},
            [],
            ScannerId("display", "hologic horizon a room 2", "Hologic Horizon-A, room 2"),
        ),
        (
            {"device": {"reference": "Device/d1", "display": "Horizon A"}},
            [
                {
                    "resourceType": "Device",
                    "id": "d1",
                    "identifier": [{"system": "urn:x", "value": "HZ-0042"}],
                    "serialNumber": "1001",
                }
            ],
            ScannerId("identifier", "HZ-0042", "Horizon A"),
        ),
        (
            {"device": {"reference": "Device/d1"}},
            [
                {
                    "resourceType": "Device",
                    "id": "d1",
                    "serialNumber": "H1001",
                    "deviceName": [{"name": "Horizon A", "type": "user-friendly-name"}],
                }
            ],
            ScannerId("identifier", "sn:h1001", "Horizon A"),
        ),
        (
            {
                "device": {"reference": "#dev"},
                "contained": [{"resourceType": "Device", "id": "dev", "serialNumber": "5"}],
            },
            [],
            ScannerId("identifier", "sn:5", "serial 5"),
        ),
        ({"device": {"identifier": {"value": "ASSET-9"}}}, [], ScannerId("identifier", "ASSET-9", "ASSET-9")),
        (
            {
                "performer": [
                    {"reference": "Practitioner/x", "display": "Dr A"},
                    {"reference": "Organization/o", "display": "Bone Clinic"},
                ]
            },
            [],
            ScannerId("display", "bone clinic", "Bone Clinic"),
        ),
        ({}, [], None),
    ],
)
@pytest.mark.protocol("5-dxa", "3c-duplicates")
def test_scanner(
    extra: dict[str, Any], others: list[dict[str, Any]], expected: ScannerId | None, knowledge: Knowledge
) -> None:
    result = record([observation(**extra), *others], knowledge)
    assert [b.scanner for b in result.bmd] == [expected]


# ----- FRAX ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("system", "code", "unit", "kind"),
    [(LOINC, "90265-0", "%", "mof"), (LOINC, "90266-8", "%", "hip"), (SNOMED, "439921008", None, "hip")],
)
@pytest.mark.protocol("R5")
def test_frax(system: str, code: str, unit: str | None, kind: str, knowledge: Knowledge) -> None:
    concept = {"coding": [{"system": system, "code": code}]}
    result = record([observation(code, value=21.5, unit=unit, code_concept=concept)], knowledge)
    assert [(f.kind, f.value, f.date) for f in result.frax] == [(kind, Decimal("21.5"), date(2021, 2, 15))]


def test_frax_panel_components_and_bad_unit(knowledge: Knowledge) -> None:
    panel = observation(
        "90264-3",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "90265-0"}]},
                "valueQuantity": {"value": 18, "unit": "%"},
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "90266-8"}]},
                "valueQuantity": {"value": 0.04, "unit": "1"},
            },
        ],
    )
    panel.pop("valueQuantity")
    result = record([panel], knowledge)
    assert [(f.kind, f.value) for f in result.frax] == [("mof", Decimal("18"))]
    assert result.caveats == ("ignored FRAX value with unit 1",)


# ----- labs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "value", "unit", "kind", "expected", "canonical"),
    [
        ("17861-6", 2.35, "mmol/L", "calcium", Decimal("9.42"), "mg/dL"),
        ("17861-6", 9.4, "mg/dL", "calcium", Decimal("9.4"), "mg/dL"),
        ("1751-7", 40, "g/L", "albumin", Decimal("4.00"), "g/dL"),
        ("1751-7", 3.9, "g/dL", "albumin", Decimal("3.9"), "g/dL"),
        ("62292-8", 50, "nmol/L", "vitamin_d_25oh", Decimal("20.03"), "ng/mL"),
        ("1989-3", 32, "ng/mL", "vitamin_d_25oh", Decimal("32"), "ng/mL"),
        ("33914-3", 75, "mL/min/1.73m2", "egfr", Decimal("75"), "mL/min/{1.73_m2}"),
        ("62238-1", 28, "mL/min/{1.73_m2}", "egfr", Decimal("28"), "mL/min/{1.73_m2}"),
        ("6768-6", 80, "U/L", "alkaline_phosphatase", Decimal("80"), "U/L"),
        ("2731-8", 45, "pg/mL", "pth", Decimal("45"), "pg/mL"),
    ],
)
@pytest.mark.protocol("3b-labs")
def test_lab_units_converted(
    *, code: str, value: float, unit: str, kind: str, expected: Decimal, canonical: str, knowledge: Knowledge
) -> None:
    result = record([observation(code, value=value, unit=unit)], knowledge)
    assert [(lab.kind, lab.value, lab.unit, lab.date) for lab in result.labs] == [
        (kind, expected, canonical, date(2021, 2, 15))
    ]


@pytest.mark.protocol("3b-labs")
def test_lab_reference_range_converted(knowledge: Knowledge) -> None:
    calcium = observation(
        "17861-6",
        value=2.35,
        unit="mmol/L",
        referenceRange=[
            {"low": {"value": 2.15, "unit": "mmol/L"}, "high": {"value": 2.55, "unit": "mmol/L"}}
        ],
    )
    albumin = observation("1751-7", id="o2", value=40, unit="g/L", referenceRange=[{"high": {"value": 50}}])
    labs = {lab.kind: lab for lab in record([calcium, albumin], knowledge).labs}
    assert (labs["calcium"].ref_low, labs["calcium"].ref_high) == (Decimal("8.62"), Decimal("10.22"))
    assert (labs["albumin"].ref_low, labs["albumin"].ref_high) == (None, Decimal("5.00"))


@pytest.mark.parametrize(("code", "unit"), [("17861-6", "mEq/L"), ("1751-7", None), ("54347-0", "umol/L")])
@pytest.mark.protocol("3b-labs")
def test_lab_with_unknown_unit_is_ignored(code: str, unit: str | None, knowledge: Knowledge) -> None:
    result = record([observation(code, value=2.4, unit=unit)], knowledge)
    assert result.labs == ()
    assert len(result.caveats) == 1
    assert result.caveats[0].startswith("ignored ") and f"with unit {unit or '(none)'}" in result.caveats[0]


# ----- medications ---------------------------------------------------------------------------------
def med(resource_type: str, concept: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": resource_type,
        "id": extra.pop("id", "m1"),
        "status": extra.pop(
            "status",
            "active" if resource_type in ("MedicationStatement", "MedicationRequest") else "completed",
        ),
        "subject": SUBJECT,
    }
    if concept is not None:
        resource["medicationCodeableConcept"] = concept
    if resource_type == "MedicationRequest":
        resource["intent"] = extra.pop("intent", "order")
    if resource_type == "MedicationAdministration" and "effectivePeriod" not in extra:
        resource["effectiveDateTime"] = extra.pop("effectiveDateTime", "2022-01-10T09:30:00")
    resource.update(extra)
    return resource


def rx(code: str) -> dict[str, Any]:
    return {"coding": [{"system": RXNORM, "code": code}]}


def one_medication(resources: list[dict[str, Any]], knowledge: Knowledge) -> MedicationRecord:
    medications = record(resources, knowledge).medications
    assert len(medications) == 1
    return medications[0]


@pytest.mark.parametrize(
    ("concept", "agent", "role", "strength", "dose_text", "by_name"),
    [
        (rx("993452"), "denosumab", "first_line", "osteoporosis", "60 mg", False),
        (rx("993449"), "denosumab", "first_line", "unknown", "", False),  # ingredient only
        (
            {"text": "denosumab 120 mg/1.7 mL SC every 4 weeks"},
            "denosumab",
            "oncology_dose",
            "oncology",
            "120 mg",
            True,
        ),
        ({"text": "Xgeva injection"}, "denosumab", "oncology_dose", "oncology", "", True),
        (
            {"text": "denosumab 60 mg/mL prefilled syringe"},
            "denosumab",
            "first_line",
            "osteoporosis",
            "60 mg",
            True,
        ),
        ({"text": "Prolia"}, "denosumab", "first_line", "osteoporosis", "", True),
        ({"text": "denosumab injection"}, "denosumab", "first_line", "unknown", "", True),
        (
            {**rx("993449"), "text": "Denosumab 120 MG"},
            "denosumab",
            "oncology_dose",
            "oncology",
            "120 mg",
            False,
        ),
        (rx("1114085"), "zoledronic_acid", "oncology_dose", "oncology", "4 mg", False),
        (rx("705824"), "zoledronic_acid", "first_line", "osteoporosis", "5 mg", False),
        (
            {"text": "zoledronic acid 5 mg/100 mL IV infusion"},
            "zoledronic_acid",
            "first_line",
            "osteoporosis",
            "5 mg",
            True,
        ),
        ({"text": "Zometa 4 mg"}, "zoledronic_acid", "oncology_dose", "oncology", "4 mg", True),
        ({"text": "Aclasta"}, "zoledronic_acid", "first_line", "osteoporosis", "", True),
        (
            {"text": "alendronate 70 mg oral tablet weekly"},
            "alendronate",
            "first_line",
            "osteoporosis",
            "70 mg",
            True,
        ),
        (
            {"coding": [{"system": RXNORM, "code": "46041"}, {"system": RXNORM, "code": "904431"}]},
            "alendronate",
            "first_line",
            "osteoporosis",
            "70 mg",
            False,
        ),
        (
            {"coding": [{"system": "http://www.whocc.no/atc", "code": "M05BA04"}]},
            "alendronate",
            "first_line",
            "osteoporosis",
            "",
            False,
        ),
        (rx("2123184"), "romosozumab", "anabolic", "osteoporosis", "105 mg", False),
        (rx("72143"), "raloxifene", "other_bone_agent", "osteoporosis", "", False),
        (rx("1897"), "calcium", "supplement", "osteoporosis", "", False),
    ],
)
@pytest.mark.protocol("4-oncology")
def test_medication_identity_and_strength(
    *,
    concept: dict[str, Any],
    agent: str,
    role: str,
    strength: str,
    dose_text: str,
    by_name: bool,
    knowledge: Knowledge,
) -> None:
    found = one_medication([med("MedicationStatement", concept)], knowledge)
    assert (found.agent, found.role, found.strength, found.dose_text, found.matched_by_name) == (
        agent,
        role,
        strength,
        dose_text,
        by_name,
    )


@pytest.mark.protocol("3c-medication-reference", "3a-caveat")
def test_name_match_label(knowledge: Knowledge) -> None:
    found = one_medication([med("MedicationStatement", {"text": "Fosamax 70mg tablets"})], knowledge)
    assert (found.agent, found.matched_by_name, found.label, found.interval_days) == (
        "alendronate",
        True,
        "Fosamax 70mg tablets",
        7,
    )


@pytest.mark.protocol("3c-medication-reference")
def test_contained_medication_with_ingredient_strength(knowledge: Knowledge) -> None:
    request = med(
        "MedicationRequest",
        medicationReference={"reference": "#x"},
        contained=[
            {
                "resourceType": "Medication",
                "id": "x",
                "code": rx("993449"),
                "ingredient": [
                    {
                        "itemCodeableConcept": rx("993449"),
                        "strength": {
                            "numerator": {"value": 120, "unit": "mg"},
                            "denominator": {"value": 1.7, "unit": "mL"},
                        },
                    }
                ],
            }
        ],
    )
    found = one_medication([request], knowledge)
    assert (found.agent, found.strength, found.role, found.dose_text) == (
        "denosumab",
        "oncology",
        "oncology_dose",
        "120 mg",
    )


@pytest.mark.protocol("3c-medication-reference")
def test_referenced_medication_by_absolute_url(knowledge: Knowledge) -> None:
    administration = med(
        "MedicationAdministration",
        medicationReference={"reference": "https://ehr.example/fhir/Medication/p60"},
    )
    medication = {"resourceType": "Medication", "id": "p60", "code": rx("993456")}
    found = one_medication([administration, medication], knowledge)
    assert (found.agent, found.strength, found.source, found.event_date, found.interval_days) == (
        "denosumab",
        "osteoporosis",
        "administration",
        date(2022, 1, 10),
        183,
    )
    assert found.label == "1 ML denosumab 60 MG/ML Prefilled Syringe [Prolia]"


@pytest.mark.parametrize(
    ("concept", "dosage", "interval_days", "interval_months", "per_pen"),
    [
        (rx("904431"), None, 7, None, False),  # alendronate 70 mg: by strength
        (rx("904419"), None, 1, None, False),  # alendronate 10 mg daily
        (rx("905028"), None, 30, None, False),  # risedronate 150 mg monthly
        (rx("904952"), None, 90, None, False),  # ibandronate 3 mg IV
        (rx("46041"), None, 7, None, False),  # ingredient only: the agent's default
        (
            rx("46041"),
            {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}},
            1,
            None,
            False,
        ),
        (
            rx("993449"),
            {"timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "mo"}}},
            183,
            None,
            False,
        ),
        (rx("993449"), {"timing": {"repeat": {"period": 4, "periodUnit": "wk"}}}, 28, None, False),
        (rx("2123184"), None, None, 1, False),  # romosozumab: coverage in months per dose
        (rx("1435115"), None, 1, None, True),  # teriparatide pen injector
        ({"text": "Forteo pen 600 mcg/2.4 mL"}, None, 1, None, True),
        ({"text": "teriparatide 20 mcg daily"}, None, 1, None, False),
    ],
)
@pytest.mark.protocol("4-coverage")
def test_medication_interval(
    *,
    concept: dict[str, Any],
    dosage: dict[str, Any] | None,
    interval_days: int | None,
    interval_months: int | None,
    per_pen: bool,
    knowledge: Knowledge,
) -> None:
    extra = {"dosageInstruction": [dosage]} if dosage else {}
    found = one_medication([med("MedicationRequest", concept, **extra)], knowledge)
    assert (found.interval_days, found.interval_months, found.per_pen) == (
        interval_days,
        interval_months,
        per_pen,
    )


@pytest.mark.parametrize(
    ("resource_type", "status", "extra", "kept"),
    [
        ("MedicationAdministration", "completed", {}, True),
        ("MedicationAdministration", "in-progress", {}, True),
        ("MedicationAdministration", "stopped", {}, False),
        ("MedicationAdministration", "on-hold", {}, False),
        ("MedicationDispense", "completed", {}, True),
        ("MedicationDispense", "in-progress", {}, False),
        ("MedicationDispense", "preparation", {}, False),
        ("MedicationStatement", "active", {}, True),
        ("MedicationStatement", "completed", {}, True),
        ("MedicationStatement", "unknown", {}, True),
        ("MedicationStatement", "stopped", {}, True),  # exposure that ended: kept (fail safe)
        ("MedicationStatement", "on-hold", {}, True),  # §3c: past exposure ending at the stop
        ("MedicationRequest", "active", {"intent": "order"}, True),
        ("MedicationRequest", "completed", {"intent": "original-order"}, True),
        ("MedicationRequest", "on-hold", {"intent": "instance-order"}, True),
        ("MedicationRequest", "stopped", {"intent": "order"}, True),  # §3c: past exposure
        ("MedicationRequest", "active", {"intent": "reflex-order"}, False),
        ("MedicationRequest", "active", {"intent": "filler-order"}, False),
    ],
)
@pytest.mark.protocol("4-coverage")
def test_medication_statuses(
    resource_type: str, status: str, extra: dict[str, Any], kept: bool, knowledge: Knowledge
) -> None:
    result = record([med(resource_type, rx("904431"), status=status, **extra)], knowledge)
    assert [m.status for m in result.medications] == ([status] if kept else [])
    assert result.any_medication_resource is True


@pytest.mark.protocol("4-coverage")
def test_source_specific_fields(knowledge: Knowledge) -> None:
    resources = [
        med(
            "MedicationAdministration",
            rx("993452"),
            id="adm",
            effectivePeriod={"start": "2022-03-01T08:00:00"},
        ),
        med(
            "MedicationDispense",
            rx("904431"),
            id="disp",
            whenPrepared="2022-01-01",
            whenHandedOver="2022-01-02T17:00:00",
            daysSupply={"value": 4, "unit": "wk"},
            quantity={"value": 4},
        ),
        med(
            "MedicationDispense",
            rx("904431"),
            id="disp2",
            whenPrepared="2022-02-01",
            daysSupply={"value": 3, "code": "mo"},
        ),
        med(
            "MedicationDispense",
            rx("904431"),
            id="disp3",
            whenHandedOver="2022-03-01",
            daysSupply={"value": 28, "unit": "days"},
        ),
        med(
            "MedicationStatement",
            rx("904431"),
            id="stmt",
            effectivePeriod={"start": "2021-03-01", "end": "2024-02-29T12:00:00"},
        ),
        med("MedicationStatement", rx("904431"), id="stmt2", effectiveDateTime="2021-03-01"),
        med(
            "MedicationRequest",
            rx("904431"),
            id="req",
            status="on-hold",
            authoredOn="2021-02-20T10:00:00",
            dispenseRequest={
                "validityPeriod": {"start": "2021-02-20", "end": "2022-02-19"},
                "numberOfRepeatsAllowed": 3,
                "expectedSupplyDuration": {
                    "value": 90,
                    "unit": "days",
                    "system": "http://unitsofmeasure.org",
                    "code": "d",
                },
            },
        ),
    ]
    by_id = {m.resource_id: m for m in record(resources, knowledge).medications}
    assert by_id["adm"].event_date == date(2022, 3, 1)
    assert (by_id["disp"].event_date, by_id["disp"].days_supply, by_id["disp"].quantity) == (
        date(2022, 1, 2),
        28,
        Decimal(4),
    )
    assert (by_id["disp2"].event_date, by_id["disp2"].days_supply) == (date(2022, 2, 1), 90)
    assert by_id["disp3"].days_supply == 28
    assert (by_id["stmt"].period_start, by_id["stmt"].period_end, by_id["stmt"].event_date) == (
        date(2021, 3, 1),
        date(2024, 2, 29),
        None,
    )
    assert by_id["stmt2"].event_date == date(2021, 3, 1)
    request = by_id["req"]
    assert (request.status, request.intent, request.event_date, request.days_supply, request.repeats) == (
        "on-hold",
        "order",
        date(2021, 2, 20),
        90,
        3,
    )
    assert (request.period_start, request.period_end) == (date(2021, 2, 20), date(2022, 2, 19))


@pytest.mark.protocol("3c-medication-reference")
def test_unresolved_medication_reference_caveat(knowledge: Knowledge) -> None:
    result = record(
        [med("MedicationRequest", medicationReference={"reference": "Medication/absent"})], knowledge
    )
    assert result.medications == ()
    assert result.any_medication_resource is True
    assert result.caveats == (
        "1 medication entries reference a Medication that could not be found or fetched and whose display"
        " names no drug: drug not identified",
    )
    # An unidentified drug may be an osteoporosis drug: it counts as unreadable, which caps the outcome.
    assert result.unreadable == (("medication (unresolved reference)", 1),)


# ----- findings ------------------------------------------------------------------------------------
def condition(code: str, system: str = ICD10CM, display: str = "", **extra: Any) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": extra.pop("id", "c1"),
        "subject": SUBJECT,
        "code": {"coding": [coding], **({"text": extra.pop("text")} if "text" in extra else {})},
    }
    resource.update(extra)
    return resource


def one_finding(resources: list[dict[str, Any]], knowledge: Knowledge) -> ClinicalFinding:
    findings = record(resources, knowledge).findings
    assert len(findings) == 1
    return findings[0]


@pytest.mark.parametrize(
    ("code", "system", "display", "site", "initial", "osteoporotic", "concept"),
    [
        ("S52.531D", ICD10CM, "", "forearm", False, False, "forearm_fracture"),  # not in the table
        ("S52.531A", ICD10CM, "", "forearm", True, False, "forearm_fracture"),
        ("M80.08XA", ICD10CM, "", "vertebra", True, True, "vertebral_fracture"),
        ("M80.08XS", ICD10CM, "", "vertebra", False, True, "vertebral_fracture"),
        ("S72.001A", ICD10CM, "", "hip_femur", True, False, "hip_fracture"),
        ("S32.010G", ICD10CM, "", "vertebra", False, False, "vertebral_fracture"),
        ("S22.31XA", ICD10CM, "", "rib", True, False, None),
        ("S82.101A", ICD10CM, "", "tibia_ankle", True, False, None),
        ("S42.001A", ICD10CM, "", "clavicle", True, False, None),
        ("S22.3", "http://hl7.org/fhir/sid/icd-10", "", "rib", None, False, "other_fracture_site"),
        ("11874341000119106", SNOMED, "", "rib", None, True, "osteoporotic_fracture"),
        ("263102004", SNOMED, "", "forearm", None, False, "forearm_fracture"),
        ("10932841000119109", SNOMED, "", "hip_femur", None, False, "hip_fracture"),
        ("704284001", SNOMED, "", "other", None, True, "osteoporotic_fracture"),  # scapula: not counted
        ("704333004", SNOMED, "", "other", None, True, "osteoporotic_fracture"),  # hand
    ],
)
@pytest.mark.protocol("3b-fractures")
def test_fractures(
    *,
    code: str,
    system: str,
    display: str,
    site: str,
    initial: bool | None,
    osteoporotic: bool,
    concept: str | None,
    knowledge: Knowledge,
) -> None:
    found = one_finding([condition(code, system, display)], knowledge)
    assert (found.fracture_site, found.fracture_initial, found.fracture_osteoporotic) == (
        site,
        initial,
        osteoporotic,
    )
    if concept:
        assert concept in found.concepts


@pytest.mark.parametrize(
    ("code", "text", "level"),
    [
        ("M80.08XA", "Osteoporotic fracture of L1 vertebra", "L1"),
        ("M80.08XA", "Vertebral fracture T12", "T12"),
        ("S32.030A", "", "L3"),  # ICD-10-CM S32.03: third lumbar vertebra
        ("M80.08XA", "", None),
        ("M80.08XA", "L9 typo", None),
    ],
)
@pytest.mark.protocol("3b-fractures")
def test_vertebral_level(code: str, text: str, level: str | None, knowledge: Knowledge) -> None:
    extra = {"text": text} if text else {}
    assert one_finding([condition(code, **extra)], knowledge).vertebral_level == level


@pytest.mark.parametrize(
    ("extra", "onset", "recorded"),
    [
        ({"recordedDate": "2020-05-05"}, None, date(2020, 5, 5)),  # recordedDate never dates the event
        (
            {"onsetDateTime": "2019-01-02T22:00:00-08:00", "recordedDate": "2020-05-05"},
            date(2019, 1, 2),
            date(2020, 5, 5),
        ),
        ({"onsetPeriod": {"start": "2019-03-04"}}, date(2019, 3, 4), None),
        ({"onsetString": "years ago"}, None, None),
    ],
)
@pytest.mark.protocol("3b-dates", "3b-cv-undated")
def test_condition_onset(
    extra: dict[str, Any], onset: date | None, recorded: date | None, knowledge: Knowledge
) -> None:
    found = one_finding([condition("S72.001A", **extra)], knowledge)
    assert (found.onset, found.recorded) == (onset, recorded)


@pytest.mark.protocol("3b-fractures", "3b-cv-undated")
def test_history_codes_are_never_dated(knowledge: Knowledge) -> None:
    history = [
        condition("Z87.310", id="h1", onsetDateTime="2018-01-01"),
        condition("399211009", SNOMED, id="h2", onsetDateTime="2018-01-01", recordedDate="2019-01-01"),
        condition("I21.4", id="mi", onsetDateTime="2018-01-01"),
    ]
    by_id = {f.resource_id: f for f in record(history, knowledge).findings}
    assert by_id["h1"].onset is None
    assert "osteoporotic_fracture" in by_id["h1"].concepts
    assert by_id["h2"].onset is None
    assert "history_of_cv_event" in by_id["h2"].concepts
    assert by_id["mi"].onset == date(2018, 1, 1)
    assert "myocardial_infarction" in by_id["mi"].concepts


def test_procedure_performed_date(knowledge: Knowledge) -> None:
    procedure = {
        "resourceType": "Procedure",
        "id": "pr1",
        "status": "completed",
        "subject": SUBJECT,
        "code": {"coding": [{"system": SNOMED, "code": "84755001"}]},
        "performedPeriod": {"start": "2020-06-01T09:00:00"},
    }
    found = one_finding([procedure], knowledge)
    assert (found.resource_type, found.onset, found.clinical_status) == ("Procedure", date(2020, 6, 1), None)
    assert "radiotherapy_any" in found.concepts


@pytest.mark.parametrize(
    ("code", "system", "display", "is_cancer", "concept"),
    [
        ("M88.9", ICD10CM, "", False, "paget_disease_of_bone"),  # ICD-10-CM via the WHO M88 category
        ("C50.911", ICD10CM, "", True, None),
        ("C96.9", ICD10CM, "", True, None),
        ("C79.51", ICD10CM, "", True, "bone_malignancy"),
        ("254837009", SNOMED, "Malignant neoplasm of breast (disorder)", True, None),
        ("109989006", SNOMED, "", True, "bone_malignancy"),  # multiple myeloma (table)
        ("M81.0", ICD10CM, "", False, "osteoporosis"),
        ("E21.0", ICD10CM, "", False, "hyperparathyroidism"),
    ],
)
@pytest.mark.protocol("3b-cancer")
def test_concepts_and_cancer(
    *, code: str, system: str, display: str, is_cancer: bool, concept: str | None, knowledge: Knowledge
) -> None:
    verified = {"clinicalStatus": {"coding": [{"code": "active"}]}}
    found = one_finding([condition(code, system, display, **verified)], knowledge)
    assert found.is_cancer is is_cancer
    assert found.clinical_status == "active"
    if concept:
        assert concept in found.concepts


@pytest.mark.parametrize(
    ("allergy", "agents"),
    [
        (
            {
                "code": {"coding": [{"system": RXNORM, "code": "46041"}]},
                "clinicalStatus": {"coding": [{"code": "active"}]},
            },
            {"alendronate"},
        ),
        ({"code": {"text": "Evenity"}}, {"romosozumab"}),  # no clinicalStatus: treated as active
        (
            {
                "code": {"text": "bone drugs"},
                "reaction": [
                    {"substance": {"text": "teriparatide, Tymlos"}, "manifestation": [{"text": "rash"}]}
                ],
            },
            {"teriparatide", "abaloparatide"},
        ),
        ({"code": {"text": "Alendronate"}, "clinicalStatus": {"coding": [{"code": "inactive"}]}}, None),
        ({"code": {"text": "Alendronate"}, "clinicalStatus": {"coding": [{"code": "resolved"}]}}, None),
    ],
)
def test_allergies(allergy: dict[str, Any], agents: set[str] | None, knowledge: Knowledge) -> None:
    resource = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": SUBJECT, **allergy}
    findings = record([resource], knowledge).findings
    if agents is None:
        assert findings == ()
    else:
        assert [(f.resource_type, f.allergy_agents) for f in findings] == [
            ("AllergyIntolerance", frozenset(agents))
        ]


# ----- DXA reports, unreadable entries ----------------------------------------------------------------
def test_dxa_reports_without_values(knowledge: Knowledge) -> None:
    def report(rid: str, day: str) -> dict[str, Any]:
        return {
            "resourceType": "DiagnosticReport",
            "id": rid,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "38268-9"}]},
            "effectiveDateTime": day,
        }

    result = record(
        [
            report("r1", "2021-02-15T09:00:00"),
            report("r2", "2023-03-01"),
            report("r3", "2023-03-01"),
            observation(),
        ],
        knowledge,
    )
    assert result.dxa_reports_without_values == (date(2023, 3, 1),)


@pytest.mark.protocol("3a-cap")
def test_unreadable_counts_reach_the_record(knowledge: Knowledge) -> None:
    result = record([observation(value="not-a-number"), observation(id="o2")], knowledge)
    assert result.unreadable == (("Observation", 1),)
    assert len(result.bmd) == 1
