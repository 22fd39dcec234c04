"""Caution codes closed from the protocol's gap list, through the real HTTP app with prefetch (and once via
a mocked FHIR server): osteonecrosis of the jaw and atypical femoral fracture make the follow-on
bisphosphonates and denosumab `caution` (§7); urolithiasis makes the PTH analogues `caution` (§6). The card
names the finding and no longer lists these concepts as unchecked.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
import responses
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.knowledge.schema import ICD10, ICD10CM
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request_for_bundle
from tests.test_scenarios import decision_from_log
from tests.wire.test_codes_http import FHIR_BASE, URL, _bundle_with, _condition, post_via_fhir_server

FOLLOW_ON_AGENTS = ("alendronate", "zoledronic_acid", "denosumab")  # allowed by s01's eGFR band
PTH = ("teriparatide", "abaloparatide")
NOT_CHECKED = "Not checked (no code list): "


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = test_settings({"CDS_AS_OF": "2025-06-01", "CDS_FHIR_ALLOWLIST": FHIR_BASE})
    return create_app(settings).test_client()


def _coded(system: str, code: str, display: str, **extra: Any) -> dict[str, Any]:
    resource = _condition(system, code, **extra)
    resource["code"]["coding"][0]["display"] = display
    return resource


def _post(client: FlaskClient, caplog: pytest.LogCaptureFixture, resources: list[dict[str, Any]]) -> Any:
    caplog.set_level(logging.INFO)
    bundle = _bundle_with(copy.deepcopy(resources))
    request = hook_request_for_bundle(bundle, with_prefetch=True, fhir_server=None, access_token=None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        resp = client.post(URL, json=request)
        assert len(rsps.calls) == 0, "a complete prefetch needs no FHIR call"
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    decisions = [c["extension"]["osteo-cds/decision"] for c in body["cards"]]
    assert decisions and all(d == decisions[0] for d in decisions)
    logged = decision_from_log(caplog, request["hookInstance"])
    assert logged["outcome"] == decisions[0]["outcome"]
    return decisions[0], body["cards"][0]["detail"]


def _statuses(items: list[dict[str, Any]]) -> dict[str, str]:
    return {item["agent"]: item["status"] for item in items}


def _not_checked(detail: str) -> str:
    return next(line for line in detail.split("\n") if NOT_CHECKED in line)


@pytest.mark.protocol("7-plan", "3a-caveat")
@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (
            _coded(ICD10CM, "M87.180", "Osteonecrosis due to drugs, jaw", onsetDateTime="2023-04-02"),
            "osteonecrosis of the jaw on record: Osteonecrosis due to drugs, jaw (2023-04-02)",
        ),
        (
            _coded(
                ICD10CM,
                "M84.754A",
                "Complete transverse atypical femoral fracture, right leg, initial encounter for fracture",
                onsetDateTime="2022-09-30",
                clinicalStatus={"coding": [{"code": "resolved"}]},
            ),
            "atypical femoral fracture on record: Complete transverse atypical femoral fracture",
        ),
    ],
    ids=["onj", "aff-resolved"],
)
def test_jaw_or_femur_finding_makes_the_follow_on_a_caution(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, resource: dict[str, Any], reason: str
) -> None:
    control, control_detail = _post(client, caplog, [])
    caplog.clear()
    decision, detail = _post(client, caplog, [resource])
    assert (decision["outcome"], decision["rule"]) == ("ESCALATE", "R12")
    assert _statuses(decision["agents"]) == _statuses(control["agents"])
    before, after = _statuses(control["follow_on"]), _statuses(decision["follow_on"])
    for agent in FOLLOW_ON_AGENTS:
        assert (before[agent], after[agent]) == ("option", "caution")
        reasons = next(f["reasons"] for f in decision["follow_on"] if f["agent"] == agent)
        assert any(r.startswith(reason) for r in reasons), reasons
    assert {a: s for a, s in after.items() if a not in FOLLOW_ON_AGENTS} == {
        a: s for a, s in before.items() if a not in FOLLOW_ON_AGENTS
    }
    finding = reason.split(":", maxsplit=1)[0]
    assert finding in detail and finding not in control_detail
    for line in (_not_checked(control_detail), _not_checked(detail)):
        assert "urolithiasis; osteonecrosis of the jaw; atypical femoral fracture;" not in line
        assert "SNOMED CT codes for urolithiasis, osteonecrosis of the jaw, atypical femoral fracture" in line


@pytest.mark.protocol("6-agents", "3b-icd-category")
@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD10CM, "N20.0", "Calculus of kidney"),
        (ICD10, "N20.0", "Calculus of kidney"),
        (ICD10CM, "Z87.442", "Personal history of urinary calculi"),
    ],
)
def test_urolithiasis_makes_the_pth_analogues_a_caution(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, system: str, code: str, display: str
) -> None:
    decision, detail = _post(client, caplog, [_coded(system, code, display)])
    assert decision["outcome"] == "ESCALATE"
    statuses = _statuses(decision["agents"])
    assert statuses["romosozumab"] == "preferred"
    for agent in PTH:
        assert statuses[agent] == "caution"
        reasons = next(a["reasons"] for a in decision["agents"] if a["agent"] == agent)
        assert f"urolithiasis on record: {display} (" in " ".join(reasons)
    assert "urolithiasis on record" in detail


@pytest.mark.protocol("3b-icd-category", "6-agents")
def test_who_and_cm_urolithiasis_give_the_same_card_decision(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Metamorphic: the same fact coded in WHO ICD-10 or ICD-10-CM gives the same decision object."""
    who, _ = _post(client, caplog, [_coded(ICD10, "N21.0", "Calculus in bladder")])
    caplog.clear()
    cm, _ = _post(client, caplog, [_coded(ICD10CM, "N21.0", "Calculus in bladder")])
    assert who == cm
    assert _statuses(who["agents"])["teriparatide"] == "caution"


@pytest.mark.protocol("7-plan")
def test_onj_via_the_fhir_server(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    onj = [_coded(ICD10CM, "M87.180", "Osteonecrosis due to drugs, jaw")]
    resp, request = post_via_fhir_server(client, caplog, monkeypatch, onj)
    decision = resp.get_json()["cards"][0]["extension"]["osteo-cds/decision"]
    assert decision_from_log(caplog, request["hookInstance"])["outcome"] == "ESCALATE"
    assert {_statuses(decision["follow_on"])[a] for a in FOLLOW_ON_AGENTS} == {"caution"}
