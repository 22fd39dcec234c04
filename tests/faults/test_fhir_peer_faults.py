"""Fault suite: hostile FHIR servers (drip-fed body or headers, stalled) are cut off at the hook call's
wall-clock deadline whatever they send, and a failing server is fenced off (bulkhead, circuit breaker).

What must hold: the call ends within deadline + 0.5 s with a DataUnavailable (412, never 5xx), no deadline
timer is left behind, and once a server's circuit is open it is not contacted at all."""

from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path
from typing import Any

import pytest

from cds_service.app import create_app
from cds_service.core.errors import DataUnavailable
from cds_service.core.net_deadline import pending_deadlines
from cds_service.gather.client import FhirClient
from cds_service.gather.peer_guard import PeerGuard, PeerRefused
from cds_service.gather.shared_http import clear_metadata_cache
from tests.faults.hostile_peers import Behaviour, hostile_peer
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
DEADLINE_S = 0.8
SLACK_S = 0.5
FAST_S = 0.25  # "at once": far below any deadline, with room for a busy CI machine


def make_client(base: str, guard: PeerGuard | None = None, **overrides: Any) -> FhirClient:
    options: dict[str, Any] = {
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "deadline_s": DEADLINE_S,
        "max_pages": 3,
        "peer_guard": guard or PeerGuard(max_in_flight=8, failure_threshold=100, open_s=30),
    }
    options.update(overrides)
    return FhirClient(base + "/fhir", None, **options)


@pytest.fixture(autouse=True)
def _fresh_metadata() -> None:
    clear_metadata_cache()


@pytest.mark.parametrize("behaviour", ["drip", "drip_headers", "stall"])
def test_a_hostile_server_is_cut_off_at_the_wall_clock_deadline(behaviour: Behaviour) -> None:
    with hostile_peer(behaviour, interval_s=0.1, body=b"x" * 200) as peer:
        started = time.monotonic()
        with pytest.raises(DataUnavailable) as raised:
            make_client(peer.base_url).search("Observation?patient=p1")
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE_S + SLACK_S, f"{behaviour}: held the caller {elapsed:.2f} s"
    assert raised.value.status == 412
    assert "deadline" in raised.value.issues[0].diagnostics
    deadline_for_cleanup = time.monotonic() + 2
    while pending_deadlines() and time.monotonic() < deadline_for_cleanup:
        time.sleep(0.01)
    assert pending_deadlines() == 0


def test_a_drip_fed_body_does_not_hold_the_executor_thread_past_the_deadline() -> None:
    """The fetch thread itself is released (not only the caller): the executor is free again."""
    executor = cf.ThreadPoolExecutor(max_workers=2)
    with hostile_peer("drip", interval_s=0.1, body=b"x" * 500) as peer:
        with pytest.raises(DataUnavailable):
            make_client(peer.base_url, executor=executor).search("Observation?patient=p1")
        started = time.monotonic()
        executor.shutdown(wait=True)  # returns only when both fetch threads have finished
    assert time.monotonic() - started < SLACK_S


def test_the_circuit_opens_after_repeated_failures_and_the_server_is_then_not_contacted() -> None:
    guard = PeerGuard(max_in_flight=8, failure_threshold=2, open_s=60)
    with hostile_peer("stall") as peer:
        for _ in range(2):
            with pytest.raises(DataUnavailable):
                make_client(peer.base_url, guard, deadline_s=0.3).search("Observation?patient=p1")
        contacted = peer.connections
        started = time.monotonic()
        with pytest.raises(DataUnavailable) as raised:
            make_client(peer.base_url, guard).search("Observation?patient=p1")
        assert time.monotonic() - started < FAST_S
        time.sleep(0.1)
        assert peer.connections == contacted
    assert "circuit open" in raised.value.issues[0].diagnostics
    assert guard.state(peer.base_url + "/fhir") == "open"


def test_after_the_open_period_one_probe_is_let_through_and_its_success_closes_the_circuit() -> None:
    clock = [0.0]
    guard = PeerGuard(max_in_flight=8, failure_threshold=1, open_s=10, clock=lambda: clock[0])
    with guard.call("peer") as outcome:
        outcome.fail()
    assert guard.state("peer") == "open"
    clock[0] = 11.0
    assert guard.state("peer") == "half-open"
    with guard.call("peer"), pytest.raises(PeerRefused), guard.call("peer"):  # only one probe at a time
        pass
    assert guard.state("peer") == "closed"


def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = [0.0]
    guard = PeerGuard(max_in_flight=8, failure_threshold=3, open_s=10, clock=lambda: clock[0])
    for _ in range(3):
        with guard.call("peer") as outcome:
            outcome.fail()
    clock[0] = 10.5
    with guard.call("peer") as outcome:
        outcome.fail()
    assert guard.state("peer") == "open"
    clock[0] = 20.0
    assert guard.state("peer") == "open"


def test_the_peer_table_is_bounded() -> None:
    guard = PeerGuard(max_in_flight=1, failure_threshold=1, open_s=10, max_peers=4)
    for index in range(50):
        with guard.call(f"peer-{index}") as outcome:
            outcome.fail()
    assert guard.state("peer-0") == "closed"  # forgotten
    assert guard.state("peer-49") == "open"


def test_at_most_max_in_flight_calls_wait_on_one_server_the_next_is_refused_at_once() -> None:
    guard = PeerGuard(max_in_flight=2, failure_threshold=100, open_s=60)
    with hostile_peer("stall") as peer, cf.ThreadPoolExecutor(max_workers=2) as callers:
        slow = [
            callers.submit(make_client(peer.base_url, guard, deadline_s=1.0).search, "Observation?patient=p")
            for _ in range(2)
        ]
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(DataUnavailable) as raised:
            make_client(peer.base_url, guard).search("Observation?patient=p1")
        assert time.monotonic() - started < FAST_S
        for future in slow:
            with pytest.raises(DataUnavailable):
                future.result()
    assert "maximum number of calls in flight" in raised.value.issues[0].diagnostics


def test_through_the_http_app_a_drip_feeding_fhir_server_is_a_412_within_the_deadline(tmp_path: Path) -> None:
    """The production transport (the pinned, SSRF-guarded session) honours the wall-clock deadline too,
    and once the server's circuit is open its calls are answered at once while a healthy call is 200."""
    settings = test_settings(
        {"CDS_DATA_DIR": str(tmp_path), "CDS_AS_OF": "2025-06-01", "CDS_FHIR_DEADLINE_S": str(DEADLINE_S),
         "CDS_FHIR_FAILURE_THRESHOLD": "2"}
    )  # fmt: skip
    client = create_app(settings).test_client()
    with hostile_peer("drip", interval_s=0.1, body=b"x" * 500) as peer:
        body = {
            "hook": "patient-view",
            "hookInstance": "d1f1f1f1-0000-4000-8000-000000000003",
            "fhirServer": peer.base_url + "/fhir",
            "context": {"userId": "Practitioner/1", "patientId": "p1"},
        }
        for _ in range(2):
            started = time.monotonic()
            response = client.post(PATH, json=body)
            assert response.status_code == 412
            assert time.monotonic() - started < DEADLINE_S + SLACK_S
        started = time.monotonic()
        assert client.post(PATH, json=body).status_code == 412
        assert time.monotonic() - started < FAST_S, "circuit open: answered without contacting the server"
        healthy = client.post(PATH, json=hook_request("s01", with_prefetch=True))
        assert healthy.status_code == 200
