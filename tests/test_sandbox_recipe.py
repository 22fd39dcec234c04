"""`make sandbox` (tools/sandbox.py) end to end: the recipe runs as its own process on free loopback ports,
with the real FHIR server (CORS on) and the service under `cds-service serve`; every demo patient is
called WITHOUT prefetch and must give the outcome and warnings it is named for; SIGTERM stops both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlencode

import pytest
import requests

from cds_service.rules.decision import Outcome, WarningCode
from cds_service.wire.auth.dev_keys import mint_dev_token
from tests.support.fhir_server import FhirServerProcess, FhirServerUnavailableError, find_node_binary
from tests.support.fixtures import REPO_ROOT, SCENARIOS_DIR, load_scenario_index
from tools.sandbox import DEMOS, DESCRIPTION_URL, READY_LINE, Demo, demo_bundle

pytestmark = pytest.mark.fhir_server

SERVICE_PATH = "/cds-services/osteoporosis-escalation"
LOCAL_SANDBOX = "http://localhost:8088"
# Every outcome and warning the engine can produce: a new one must get its demo patient.
PROTOCOL_OUTCOMES = set(get_args(Outcome))
PROTOCOL_WARNINGS = set(get_args(WarningCode))


@dataclass
class Sandbox:
    process: subprocess.Popen[str]
    fhir_base: str
    service_base: str
    data_dir: Path
    stdout: str
    stderr_file: Path

    def decision(self, hook_instance: str) -> dict[str, Any]:
        """The service's decision log line for one call (the service logs to the recipe's stderr)."""
        for _ in range(50):
            for line in self.stderr_file.read_text(encoding="utf-8", errors="replace").splitlines():
                start = line.find("{")
                if start < 0 or hook_instance not in line:
                    continue
                logged: dict[str, Any] = json.loads(line[start:])
                return logged
            time.sleep(0.1)
        raise AssertionError(f"no decision logged for {hook_instance}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    try:
        find_node_binary()
    except FhirServerUnavailableError as exc:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"FHIR test server unavailable in CI: {exc}")
        pytest.skip(f"FHIR test server unavailable: {exc}")
    tmp = tmp_path_factory.mktemp("sandbox")
    fhir_port, service_port = _free_port(), _free_port()
    stderr_file = tmp / "stderr.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    environ["CDS_FHIR_DEADLINE_S"] = "20"  # a busy CI machine must not turn a slow FHIR read into a 412
    environ["CDS_FHIR_READ_TIMEOUT_S"] = "15"
    with stderr_file.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "tools/sandbox.py",
                "--fhir-port",
                str(fhir_port),
                "--service-port",
                str(service_port),
                "--sandbox-url",
                LOCAL_SANDBOX,
                "--data-dir",
                str(tmp / "data"),
                "--workers",
                "1",
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=environ,
        )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == READY_LINE:
                break
        else:
            raise AssertionError("the sandbox did not become ready in 90 s")
        assert process.poll() is None, stderr_file.read_text()[-3000:]
        yield Sandbox(
            process,
            f"http://127.0.0.1:{fhir_port}",
            f"http://127.0.0.1:{service_port}",
            tmp / "data",
            "".join(lines),
            stderr_file,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_demo_set_covers_every_outcome_and_warning_and_keeps_the_scenarios() -> None:
    assert {d.outcome for d in DEMOS} == PROTOCOL_OUTCOMES
    assert {w for d in DEMOS for w in d.warnings} == PROTOCOL_WARNINGS
    assert {d.shows for d in DEMOS} == PROTOCOL_OUTCOMES | PROTOCOL_WARNINGS
    assert len({d.id for d in DEMOS}) == len(DEMOS)
    expected = {s["id"]: s["expect"] for s in load_scenario_index()}
    for demo in DEMOS:
        if not demo.alive:  # a committed scenario as it is: its expected decision is the index's
            assert expected[demo.scenario]["outcome"] == demo.outcome, demo
            assert sorted(expected[demo.scenario].get("warnings", [])) == sorted(demo.warnings), demo
        before = (SCENARIOS_DIR / f"{demo.scenario}.json").read_bytes()
        demo_bundle(demo)
        assert (SCENARIOS_DIR / f"{demo.scenario}.json").read_bytes() == before


def test_derived_demo_is_renamed_throughout() -> None:
    demo = next(d for d in DEMOS if d.alive)
    bundle = demo_bundle(demo)
    patient = bundle["entry"][0]["resource"]
    assert patient["id"] == demo.id
    assert "deceasedDateTime" not in patient and "deceasedBoolean" not in patient
    for entry in bundle["entry"][1:]:
        resource = entry["resource"]
        assert resource["id"].startswith(demo.id + "-")
        assert entry["request"]["url"] == f"{resource['resourceType']}/{resource['id']}"
        assert resource["subject"]["reference"] == f"Patient/{demo.id}"


def test_prints_the_urls_to_open_the_sandbox(sandbox: Sandbox) -> None:
    discovery = sandbox.service_base + "/cds-services"
    assert sandbox.fhir_base in sandbox.stdout
    assert discovery in sandbox.stdout
    query = urlencode({"fhirServiceUrl": sandbox.fhir_base, "serviceDiscoveryURL": discovery})
    assert f"https://sandbox.cds-hooks.org/?{query}" in sandbox.stdout
    assert f"{LOCAL_SANDBOX}/?{query}" in sandbox.stdout
    for demo in DEMOS:
        assert f"{query}&patientId={demo.id}" in sandbox.stdout
        assert demo.name in sandbox.stdout


def test_tests_fhir_server_sends_no_cors_headers_by_default(fhir_server: FhirServerProcess) -> None:
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    response = requests.get(fhir_server.base_url + "/metadata", headers=origin, timeout=10)
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = requests.options(
        fhir_server.base_url + "/Patient",
        headers={**origin, "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_fhir_metadata_is_r4_with_cors(sandbox: Sandbox) -> None:
    response = requests.get(
        sandbox.fhir_base + "/metadata", headers={"Origin": "https://sandbox.cds-hooks.org"}, timeout=10
    )
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"].startswith("4.0")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_fhir_cors_preflight(sandbox: Sandbox) -> None:
    response = requests.options(
        sandbox.fhir_base + "/Patient",
        headers={
            "Origin": LOCAL_SANDBOX,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, content-type",
            "Access-Control-Request-Private-Network": "true",
        },
        timeout=10,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert response.headers["Access-Control-Allow-Private-Network"] == "true"


def test_service_allows_the_local_sandbox_origin(sandbox: Sandbox) -> None:
    response = requests.options(
        sandbox.service_base + SERVICE_PATH,
        headers={"Origin": LOCAL_SANDBOX, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL_SANDBOX


def test_every_demo_patient_is_listed_with_its_name(sandbox: Sandbox) -> None:
    response = requests.get(
        sandbox.fhir_base + "/Patient",
        params={"_count": "100"},
        headers={"Accept": "application/fhir+json", "Origin": "https://sandbox.cds-hooks.org"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    listed = {e["resource"]["id"]: e["resource"] for e in response.json().get("entry", [])}
    assert set(listed) == {d.id for d in DEMOS}
    for demo in DEMOS:
        patient = listed[demo.id]
        assert patient["name"][0]["text"] == demo.name
        assert " ".join([*patient["name"][0]["given"], patient["name"][0]["family"]]) == demo.name
        notes = [x["valueString"] for x in patient["extension"] if x["url"] == DESCRIPTION_URL]
        assert len(notes) == 1 and demo.shows in notes[0]


@pytest.mark.parametrize("demo", DEMOS, ids=[d.id for d in DEMOS])
def test_demo_patient_gives_the_outcome_it_is_named_for(sandbox: Sandbox, demo: Demo) -> None:
    url = sandbox.service_base + SERVICE_PATH
    hook_instance = str(uuid.uuid4())
    request = {
        "hook": "patient-view",
        "hookInstance": hook_instance,
        "fhirServer": sandbox.fhir_base,
        "context": {"userId": "Practitioner/demo-1", "patientId": demo.id},
    }
    response = requests.post(
        url,
        json=request,
        headers={"Authorization": f"Bearer {mint_dev_token(sandbox.data_dir, url)}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:1000]
    logged = sandbox.decision(hook_instance)
    assert logged["outcome"] == demo.outcome
    assert sorted(logged["warnings"]) == sorted(demo.warnings)
    for card in response.json()["cards"]:
        decision = card["extension"]["osteo-cds/decision"]
        assert decision["outcome"] == demo.outcome
        assert sorted(decision["warnings"]) == sorted(demo.warnings)


def test_sigterm_stops_both_processes(sandbox: Sandbox) -> None:
    fhir_port = int(sandbox.fhir_base.rsplit(":", 1)[1])
    service_port = int(sandbox.service_base.rsplit(":", 1)[1])
    sandbox.process.send_signal(signal.SIGTERM)
    assert sandbox.process.wait(timeout=30) == 0
    assert not _listening(fhir_port)
    assert not _listening(service_port)
