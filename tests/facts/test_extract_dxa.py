"""facts.extract_dxa: DXA site and side, units and scanner identity (protocol §2, §3b sites, §3c, §5)."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from cds_service.facts.extract_dxa import (
    from_display,
    normalise_display,
    scanner_of,
    site_and_side,
    unit_accepted,
)
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.patient_record import ScannerId
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import LOINC, SNOMED

LEFT = {"system": SNOMED, "code": "7771000", "display": "Left"}
EPIC_LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282"


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def concept(data: dict[str, Any] | None) -> CodeableConcept | None:
    return CodeableConcept(**data) if data is not None else None


@pytest.mark.protocol("3b-site-unknown", "3c-panels")
@pytest.mark.parametrize(
    ("code_site", "code_side", "code", "body_site", "expected"),
    [
        pytest.param(
            "total_hip", "left", None, None, ("total_hip", "left"), id="site-and-side-from-loinc-code"
        ),
        pytest.param("lumbar_spine", None, None, None, ("lumbar_spine", None), id="spine-has-no-side"),
        pytest.param(
            "unknown",
            None,
            None,
            {"coding": [{"system": SNOMED, "code": "29836001", "display": "Hip region structure"}]},
            ("total_hip", None),
            id="site-from-snomed-body-site",
        ),
        pytest.param(
            "unknown",
            None,
            None,
            {"coding": [{"system": SNOMED, "code": "29627003"}, LEFT]},
            ("femoral_neck", "left"),
            id="body-site-with-laterality-coding",
        ),
        pytest.param(
            "unknown",
            None,
            None,
            {
                "coding": [{"system": SNOMED, "code": "29836001"}],
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/bodySite",
                        "valueCodeableConcept": {"coding": [LEFT]},
                    }
                ],
            },
            ("total_hip", "left"),
            id="laterality-in-qualifier-extension",
        ),
        pytest.param(
            "unknown",
            None,
            None,
            {"text": "Right femoral neck"},
            ("femoral_neck", "right"),
            id="body-site-text",
        ),
        pytest.param(
            "unknown",
            None,
            {"coding": [{"system": EPIC_LOCAL, "code": "1234"}], "text": "DXA Femoral Neck Left T-score"},
            None,
            ("femoral_neck", "left"),
            id="epic-local-code-text",
        ),
        pytest.param(
            "unknown",
            None,
            {"text": "Neck of the femur T-score"},
            None,
            ("femoral_neck", None),
            id="neck-of-the-femur-before-hip",
        ),
        pytest.param("unknown", None, {"text": "L1-L4 BMD"}, None, ("lumbar_spine", None), id="spine-levels"),
        pytest.param(
            "unknown", None, {"text": "L1–4 T-score"}, None, ("lumbar_spine", None), id="en-dash-levels"
        ),
        pytest.param(
            "unknown",
            None,
            {"text": "Forearm 33% radius"},
            None,
            ("radius", None),
            id="forearm-is-one-third-radius",
        ),
        pytest.param("unknown", None, {"text": "Ulna T-score"}, None, ("radius", None), id="ulna-is-radius"),
        pytest.param(
            "unknown", None, {"text": "Total hip, right"}, None, ("total_hip", "right"), id="total-hip"
        ),
        pytest.param(
            "unknown",
            None,
            {"text": "Left and right hip mean"},
            None,
            ("total_hip", None),
            id="both-sides-no-side",
        ),
        pytest.param(
            "unknown", None, {"text": "DXA T-score"}, None, ("unknown", None), id="undetermined-site"
        ),
        pytest.param("other", None, {"text": "Total hip"}, None, ("other", None), id="code-site-other-wins"),
    ],
)
def test_site_and_side(
    code_site: str,
    code_side: str | None,
    code: dict[str, Any] | None,
    body_site: dict[str, Any] | None,
    expected: tuple[str, str | None],
    *,
    knowledge: Knowledge,
) -> None:
    assert site_and_side(code_site, code_side, concept(code), concept(body_site), knowledge) == expected


@pytest.mark.protocol("5-dxa", "3c-panels")
@pytest.mark.parametrize(
    ("kind", "units", "accepted"),
    [
        pytest.param("t_score", ["{T-score}"], True, id="t-score-ucum-annotation"),
        pytest.param("t_score", ["SD"], True, id="epic-sd"),
        pytest.param("t_score", ["{SD}"], True, id="sd-annotation"),
        pytest.param("t_score", [], True, id="t-score-without-unit"),
        pytest.param("t_score", ["g/cm2"], False, id="t-score-in-bmd-unit"),
        pytest.param("t_score", ["%"], False, id="t-score-in-percent"),
        pytest.param("bmd", ["g/cm2"], True, id="bmd-ucum"),
        pytest.param("bmd", ["G/CM2"], True, id="bmd-upper-case"),
        pytest.param("bmd", ["g/cm^2"], True, id="bmd-caret"),
        pytest.param("bmd", ["mg/cm2"], False, id="bmd-in-mg"),
        pytest.param("bmd", [], False, id="bmd-without-unit"),
    ],
)
def test_unit_accepted(kind: str, units: list[str], accepted: bool) -> None:
    assert unit_accepted(kind, units) is accepted


@pytest.mark.protocol("3c-duplicates", "5-dxa")
@pytest.mark.parametrize(
    ("display", "expected"),
    [
        pytest.param(
            "Hologic Horizon A SN 1001",
            ScannerId("identifier", "sn:1001", "Hologic Horizon A SN 1001"),
            id="sn",
        ),
        pytest.param(
            "Lunar iDXA S/N: 200345",
            ScannerId("identifier", "sn:200345", "Lunar iDXA S/N: 200345"),
            id="s-slash-n",
        ),
        pytest.param(
            "Lunar serial no. AB-77",
            ScannerId("identifier", "sn:ab-77", "Lunar serial no. AB-77"),
            id="serial-no",
        ),
        pytest.param(
            "Hologic  Horizon-A",
            ScannerId("display", "hologic horizon a", "Hologic Horizon-A"),
            id="display-normalised",
        ),
        pytest.param(
            "Serial number unknown",
            ScannerId("display", "serial number unknown", "Serial number unknown"),
            id="serial-without-digits",
        ),
    ],
)
def test_scanner_from_display(display: str, expected: ScannerId) -> None:
    assert from_display(display) == expected


def test_same_scanner_with_different_punctuation_normalises_equal() -> None:
    assert normalise_display("HOLOGIC Horizon-A (Room 2)") == normalise_display("Hologic horizon A room 2")


def dxa_observation(**extra: Any) -> Observation:
    return Observation(
        status="final",
        code={"coding": [{"system": LOINC, "code": "38264-8"}]},
        valueQuantity={"value": -2.6, "unit": "{T-score}"},
        **extra,
    )


DEVICE_WITH_IDENTIFIER = Device(
    id="d1", identifier=[{"value": "HOL-1001"}], deviceName=[{"name": "Hologic A", "type": "model-name"}]
)
DEVICE_WITH_SERIAL = Device(id="d2", serialNumber="X77", manufacturer="GE", modelNumber="iDXA")
DEVICE_NAMED = Device(id="d3", manufacturer="GE", modelNumber="Lunar Prodigy")


@pytest.mark.protocol("3c-duplicates", "5-dxa")
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            {"device": {"reference": "Device/d1"}},
            ScannerId("identifier", "HOL-1001", "Hologic A"),
            id="device-identifier",
        ),
        pytest.param(
            {"device": {"reference": "Device/d2"}},
            ScannerId("identifier", "sn:x77", "GE iDXA"),
            id="device-serial-number",
        ),
        pytest.param(
            {"device": {"reference": "Device/d3"}},
            ScannerId("display", "ge lunar prodigy", "GE Lunar Prodigy"),
            id="device-manufacturer-and-model",
        ),
        pytest.param(
            {"device": {"reference": "Device/d2", "display": "Room 2 scanner"}},
            ScannerId("identifier", "sn:x77", "Room 2 scanner"),
            id="reference-display-labels-the-device",
        ),
        pytest.param(
            {"device": {"identifier": {"value": "SCN-9"}, "display": "Scanner 9"}},
            ScannerId("identifier", "SCN-9", "Scanner 9"),
            id="logical-reference-identifier",
        ),
        pytest.param(
            {"device": {"reference": "Device/missing", "display": "Hologic SN 42"}},
            ScannerId("identifier", "sn:42", "Hologic SN 42"),
            id="unresolved-reference-display-serial",
        ),
        pytest.param(
            {"device": {"reference": "Device/missing"}},
            ScannerId("display", "device missing", "Device/missing"),
            id="unresolved-reference-only",
        ),
        pytest.param(
            {"performer": [{"reference": "Practitioner/dr1", "display": "Dr Reader"}]},
            None,
            id="practitioner-is-never-a-scanner",
        ),
        pytest.param(
            {"performer": [{"display": "Radiology"}]},
            None,
            id="performer-of-unknown-type-is-not-a-scanner",
        ),
        pytest.param(
            {
                "performer": [
                    {"reference": "Practitioner/dr1", "display": "Dr Reader"},
                    {"reference": "Organization/o1", "display": "City Bone Clinic"},
                ]
            },
            ScannerId("display", "city bone clinic", "City Bone Clinic"),
            id="performing-organization",
        ),
        pytest.param(
            {"performer": [{"type": "Organization", "display": "North Imaging"}]},
            ScannerId("display", "north imaging", "North Imaging"),
            id="typed-organization-display-only",
        ),
        pytest.param({}, None, id="no-device-no-performer"),
    ],
)
def test_scanner_of(extra: dict[str, Any], expected: ScannerId | None) -> None:
    parsed = ParsedResources(
        devices={
            "Device/d1": DEVICE_WITH_IDENTIFIER,
            "Device/d2": DEVICE_WITH_SERIAL,
            "Device/d3": DEVICE_NAMED,
        }
    )
    assert scanner_of(dxa_observation(**extra), parsed) == expected


def test_contained_device_is_resolved() -> None:
    observation = dxa_observation(
        contained=[{"resourceType": "Device", "id": "dev", "serialNumber": "Q5"}],
        device={"reference": "#dev"},
    )
    assert scanner_of(observation, ParsedResources()) == ScannerId("identifier", "sn:q5", "serial Q5")
