"""The benchmark suite keeps working (smoke: tiny counts, loopback only, no timing assertions), the FHIR
deadline answers 412 while the FHIR server is stuck, and parse's fast paths change nothing downstream."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.observation import Observation

from benchmarks import profile_call, records, run, scaleout, servers, stack_floor_app
from benchmarks.auth import ISSUER, make_client
from benchmarks.fhir_stub import FhirStub
from benchmarks.harness import WsgiCaller, build_app
from cds_service.facts import parse as parse_module
from cds_service.facts.extract import extract_record
from cds_service.facts.lab_window import LabWindow
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_scope import scoped
from cds_service.facts.read_elements import read_elements
from cds_service.gather.shared_http import clear_metadata_cache
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.protocol import evaluate
from tests.support.databases import postgres_base_url
from tests.support.fixtures import load_scenario_bundle, load_scenario_index

AS_OF = date(2026, 11, 30)


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def _resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for value in request["prefetch"].values():
        if not value:
            continue
        if value.get("resourceType") == "Bundle":
            out += [entry["resource"] for entry in value.get("entry") or []]
        else:
            out.append(value)
    return out


# ----- generator and suite -----------------------------------------------------------------------------
def test_generator_is_deterministic_and_sized() -> None:
    first = records.request_bytes("realistic", AS_OF)
    assert first == records.request_bytes("realistic", AS_OF)
    sizes = {size: records.counts(records.request_for(size, AS_OF)) for size in records.SIZES}
    assert sizes["small"]["total"] < 50
    realistic = records.request_for("realistic", AS_OF)
    assert 400_000 < len(first) < 800_000
    assert len(realistic["prefetch"]["dxa"]["entry"]) == 32  # 8 scans x 4 Observations
    assert sizes["heavy"]["total"] >= 2000
    assert sizes["broad"]["total"] >= 2000
    assert records.counts(records.request_for("scale-50", AS_OF))["total"] > 9 * sizes["small"]["total"]


def test_suite_smoke_in_process(tmp_path: Path) -> None:
    """The in-process phases and the FHIR path of benchmarks.run, with tiny counts; a well-formed report."""
    output = tmp_path / "BENCHMARKS.md"
    assert run.main(["--smoke", "--skip", "http,memory,peers", "--output", str(output)]) == 0
    text = output.read_text(encoding="utf-8")
    for heading in ("## Machine", "## Records", "## 1. Service time", "## 2. Scaling", "## 3. FHIR path"):
        assert heading in text
    figures = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))
    assert figures["inprocess"]["auth_active"] is True
    assert figures["inprocess"]["ledger_active"] is True
    for size in records.SIZES:
        measured = figures["inprocess"]["sizes"][size]
        assert measured["statuses"] == {"200": run.Mode.of(smoke=True).calls}
        assert measured["cards"] >= 1
        assert measured["floor_ratio"] > 0
    for variant, by_size in figures["inprocess"]["variants"].items():
        for size, measured in by_size.items():
            assert set(measured["statuses"]) == {"200"}, (variant, size, measured["statuses"])
    assert figures["fhir"]["statuses"] == {"200": 2}
    assert figures["scaling"]["resource_ratio"] > 9


# ----- the stack floor: the fixed stack's mandatory work, and really that work ----------------------------
def test_stack_floor_refuses_bad_tokens_and_validates_what_the_service_validates(
    tmp_path: Path, knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, realistic = (records.request_bytes(size, AS_OF) for size in ("small", "realistic"))
    plans = stack_floor_app.plans_by_length([small, realistic], knowledge, AS_OF)
    # The plan is the service's own choice: as many entries as parse_resources returns models for.
    expected = run.record_info({"realistic": realistic}, AS_OF)["realistic"]["validated"]
    assert len(plans[len(realistic)]) == expected > 50
    client = make_client(tmp_path / "ehr", "http://127.0.0.1:8000")
    stranger = make_client(tmp_path / "stranger", "http://127.0.0.1:8000")
    checker = stack_floor_app.TokenCheck(client.jwks_file, ISSUER, client.audience)
    call = WsgiCaller(stack_floor_app.create_stack_floor_app(checker, plans))
    validated: list[Any] = []
    real_validate = parse_module._validate_entry
    monkeypatch.setattr(
        parse_module, "_validate_entry", lambda entry: validated.append(entry) or real_validate(entry)
    )

    token = client.token()
    status, body = call(realistic, token)
    assert status == 200, body[:300]
    assert orjson.loads(body)["cards"][0]["summary"] == "Stack floor: constant card"
    assert len(validated) == expected  # every planned entry validated on this very call
    refused = {
        "replayed": token,
        "none": None,
        "another key": stranger.token(),
        "another audience": client.token(audience="http://127.0.0.1:8000/cds-services/other"),
        "expired": client.token(now=time.time() - 3600),
        "not a JWT": "not-a-jwt",
    }
    for name, bad in refused.items():
        assert call(small, bad)[0] == 401, name
    assert call(small, client.token())[0] == 200
    # Entries are picked by position and checked: the same length with another entry there is refused.
    last = plans[len(realistic)][-1]
    assert isinstance(last.resource_id, str)
    renamed = last.resource_id[:-1] + ("x" if last.resource_id[-1] != "x" else "y")
    moved = realistic.replace(f'"id":"{last.resource_id}"'.encode(), f'"id":"{renamed}"'.encode())
    assert len(moved) == len(realistic) and moved != realistic
    assert call(moved, client.token())[0] == 400
    assert call(small + b" ", client.token())[0] == 400  # a record it was not started with


def test_stack_floor_server_answers_and_refuses_a_replay(tmp_path: Path) -> None:
    """The real server (gunicorn, one worker so that a replay meets the same jti store) over loopback."""
    client = make_client(tmp_path, "http://127.0.0.1:8000")
    body = records.request_bytes("small", AS_OF)
    record = tmp_path / "small.json"
    record.write_bytes(body)
    port = servers.free_port()
    server = servers.stack_floor_server(
        port, client.environ(), jwks_file=client.jwks_file, issuer=ISSUER, audience=client.audience,
        as_of=AS_OF.isoformat(), record_files=[record], workers=1,
    )  # fmt: skip
    server.start(timeout_s=120, log_dir=tmp_path / "logs")
    try:
        token = client.token()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        status, answer = servers.request("POST", port, run.SERVICE_PATH, body, headers)
        assert status == 200, answer[:300]
        assert orjson.loads(answer)["cards"]
        assert servers.request("POST", port, run.SERVICE_PATH, body, headers)[0] == 401
        assert (
            servers.request("POST", port, run.SERVICE_PATH, body, {"Content-Type": "application/json"})[0]
            == 401
        )
    finally:
        server.stop()


# ----- a stuck FHIR server: 412 before it is released, then the next call is served ----------------------
def test_stuck_fhir_server_gets_412_before_release(tmp_path: Path) -> None:
    request = records.request_for("small", AS_OF)
    gate = threading.Event()
    stub = FhirStub(request, gate=gate, gate_timeout_s=20)
    base = stub.start()
    try:
        client = make_client(tmp_path, "http://127.0.0.1:8000", fhir_servers=(base,))
        app = build_app({**client.environ(), "CDS_FHIR_DEADLINE_S": "0.5", "CDS_FHIR_READ_TIMEOUT_S": "0.5"})
        call = WsgiCaller(app)
        clear_metadata_cache()
        without_prefetch = {k: v for k, v in request.items() if k != "prefetch"}
        without_prefetch["fhirServer"] = base
        without_prefetch["fhirAuthorization"] = {
            "access_token": "stub-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "osteoporosis-escalation",
        }
        status, body = call(
            orjson.dumps({**without_prefetch, "hookInstance": str(uuid.uuid4())}), client.token()
        )
        released_before_answer = gate.is_set()
        assert status == 412, body[:300]
        assert not released_before_answer
        assert json.loads(body)["resourceType"] == "OperationOutcome"
        assert stub.requests, "the service did ask the FHIR server"
        gate.set()
        status, body = call(orjson.dumps({**request, "hookInstance": str(uuid.uuid4())}), client.token())
        assert status == 200, body[:300]
        assert json.loads(body)["cards"]
    finally:
        stub.stop()


# ----- parse fast paths: identical results ---------------------------------------------------------------
def _scenario_inputs() -> list[tuple[str, list[dict[str, Any]], date]]:
    inputs = []
    for scenario in load_scenario_index():
        bundle = load_scenario_bundle(scenario["id"])
        resources = [entry["resource"] for entry in bundle["entry"]]
        inputs.append((scenario["id"], resources, date.fromisoformat(scenario["as_of"])))
    for size in records.SIZES:
        request = records.request_for(size, AS_OF)
        inputs.append((size, _resources(request), AS_OF))
    return inputs


def test_as_of_hint_changes_no_decision(knowledge: Knowledge) -> None:
    for name, resources, as_of in _scenario_inputs():
        patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        plain = parse_resources(scoped(resources, patient), knowledge)
        hinted = parse_resources(scoped(resources, patient), knowledge, as_of=as_of)
        assert hinted.unreadable == plain.unreadable, name
        plain_record = extract_record(plain, knowledge)
        hinted_record = extract_record(hinted, knowledge)
        assert hinted_record.caveats == plain_record.caveats, name
        assert evaluate(hinted_record, knowledge, as_of) == evaluate(plain_record, knowledge, as_of), name


def test_element_reuse_gives_the_same_models(knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = [(name, resources) for name, resources, _ in _scenario_inputs()]
    reused = [parse_resources(copy.deepcopy(resources), knowledge) for _, resources in inputs]
    monkeypatch.setattr(parse_module._Reuse, "prepared", lambda self, model, rtype, data: (data, {}))
    for (name, resources), fast in zip(inputs, reused, strict=True):
        slow = parse_resources(copy.deepcopy(resources), knowledge)
        assert [o.model_dump() for o in fast.observations] == [o.model_dump() for o in slow.observations], (
            name
        )
        for kind in ("medication_requests", "medication_dispenses", "medication_statements", "conditions"):
            fast_dump = [m.model_dump() for m in getattr(fast, kind)]
            assert fast_dump == [m.model_dump() for m in getattr(slow, kind)], (name, kind)
        assert fast.unreadable == slow.unreadable, name


def _lab(**changes: Any) -> dict[str, Any]:
    lab = {
        "resourceType": "Observation",
        "id": "lab-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "17861-6", "display": "Calcium"}]},
        "effectiveDateTime": "2015-03-01T09:30:00Z",
        "valueQuantity": {
            "value": 9.4,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
        "referenceRange": [
            {"low": {"value": 8.5, "unit": "mg/dL"}, "high": {"value": 10.2, "unit": "mg/dL"}}
        ],
    }
    for key, value in changes.items():
        if value is None:
            lab.pop(key, None)
        else:
            lab[key] = value
    return lab


MUTATIONS: list[dict[str, Any]] = [
    {},
    {"id": "x" * 65},
    {"id": "bad id"},
    {"status": "preliminary"},
    {"effectiveDateTime": "2015-02-30"},
    {"effectiveDateTime": "2015-03-01T25:00:00Z"},
    {"effectiveDateTime": "2015-03-01T10:00:00"},
    {"effectiveDateTime": "2015-03"},
    {"effectiveDateTime": None},
    {"effectiveDateTime": "2026-10-01"},  # inside the look-back window: always validated
    {"valueQuantity": {"value": "9.4", "unit": "mg/dL"}},
    {"valueQuantity": {"value": True, "unit": "mg/dL"}},
    {"valueQuantity": {"value": 9.4, "unit": "furlongs"}},
    {"valueQuantity": {"value": 9.4, "unit": ""}},
    {"valueQuantity": {"value": 9.4, "code": "mg/dL"}},
    {"valueQuantity": {"value": 9.4, "unit": "mg/dL", "extension": []}},
    {"valueQuantity": None},
    {"code": {"coding": [{"system": "http://loinc.org", "code": "17861-6", "display": " "}]}},
    {"code": {"coding": [{"system": "http://loinc.org", "code": "17861-6", "userSelected": "yes"}]}},
    {"code": {"coding": []}},
    {"referenceRange": [{}]},
    {"referenceRange": [{"low": {"value": 8.5, "comparator": ">"}}]},
    {"referenceRange": []},
    {"component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "1751-7"}]}}]},
    {"modifierExtension": [{"url": "http://example.org/x", "valueBoolean": True}]},
    {"_effectiveDateTime": {"extension": []}},
    {"performer": [{"reference": "Practitioner/1"}]},
    {"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}},  # not a lab kind
]


@pytest.mark.parametrize("changes", MUTATIONS, ids=[",".join(m) or "as-is" for m in MUTATIONS])
def test_a_skipped_lab_surely_validates_and_yields_nothing(
    changes: dict[str, Any], knowledge: Knowledge
) -> None:
    """Soundness of the skip: skipped => validation succeeds and extraction adds no caveat."""
    lab = _lab(**changes)
    window = LabWindow.build(knowledge, AS_OF)
    if not window.never_read(lab):
        return
    Observation.model_validate(read_elements(lab))
    parsed = parse_resources([lab], knowledge)
    assert parsed.unreadable == {}
    record = extract_record(parsed, knowledge)
    assert record.caveats == ()
    assert all(not (AS_OF - timedelta(days=366) <= result.date <= AS_OF) for result in record.labs)


def test_the_common_lab_shape_is_skipped(knowledge: Knowledge) -> None:
    window = LabWindow.build(knowledge, AS_OF)
    assert window.never_read(_lab())
    assert not window.never_read(_lab(effectiveDateTime="2026-10-01"))


# ----- scale-out ------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("postgres_admin")  # PostgreSQL reachable (skips without it unless CI=true)
def test_scaleout_smoke_two_instances_one_postgresql() -> None:
    """benchmarks/scaleout.py with tiny counts: two instances behind HAProxy on one PostgreSQL schema; a
    token is accepted by exactly one instance, and no acknowledged feedback or delivered card is missing
    after one instance is SIGKILLed under load."""
    results = scaleout.run(2, 2, postgres_base_url(), smoke=True)
    assert results["replay"]["exactly_once"] == results["replay"]["rounds"] == 3
    check = results["consistency"]
    assert check["cards_delivered"] > 0
    assert check["feedback_acknowledged"] > 0
    assert check["acknowledged_feedback_missing"] == 0
    assert check["delivered_cards_missing_from_ledger"] == 0
    assert results["verdict"]["replay_exactly_once"]
    assert results["verdict"]["feedback_never_lost"]
    assert results["verdict"]["ledger_consistent"]


def test_profile_call_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/profile_call.py (the profile behind BENCHMARKS.md's top five costs) stays runnable."""
    assert profile_call.main(["--size", "small", "--calls", "2"]) == 0
    out = capsys.readouterr().out
    assert "whole call (Flask app)" in out
    assert "fhir.resources validation" in out
    assert set(profile_call.compare_parsers(1)["heavy"]) >= {"stdlib json", "orjson"}
