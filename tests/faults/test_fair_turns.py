"""Fault suite: one client keeps several calls in flight. What must hold: another client's call is served
between the flooder's calls (after at most one of them), through the real HTTP endpoint and the real
service; and the fair queue keeps that order under gevent's patched primitives, the way `cds-service
serve` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterable
from datetime import date
from typing import Any

from cds_service.app import create_app
from cds_service.rules.decision import Decision
from cds_service.wire.fair_queue import FairQueue
from cds_service.wire.service import build_service
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
FLOOD_CALLS = 4


class GatedService:
    """The real service; the first evaluation waits for a release, and every evaluation is logged."""

    def __init__(self, settings: Any) -> None:
        self.real = build_service(settings)
        self.service_id = self.real.service_id
        self.order: list[str] = []
        self.release = threading.Event()
        self.real.decide = self.decide  # type: ignore[method-assign]

    def decide(
        self, resources: Iterable[dict[str, Any]], patient_id: str, as_of: date, unavailable: Any = ()
    ) -> Decision:
        self.order.append(patient_id)
        if len(self.order) == 1:
            self.release.wait(10)
        return PatientDecide.decide(self.real, resources, patient_id, as_of, unavailable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class PatientDecide:
    from cds_service.wire.service import PatientViewService

    decide = PatientViewService.decide


def test_the_healthy_tenant_is_served_between_a_flooders_calls() -> None:
    settings = test_settings({"CDS_AS_OF": "2025-06-01", "CDS_CLIENT_MAX_IN_FLIGHT": str(FLOOD_CALLS)})
    service = GatedService(settings)
    app = create_app(settings, service)  # type: ignore[arg-type]
    evaluation: FairQueue = app.extensions["cds_fair_queues"]["evaluation"]
    flood_body = json.dumps(hook_request("s01", with_prefetch=True)).encode()
    healthy_body = json.dumps(hook_request("s02", with_prefetch=True)).encode()
    flood_patient = hook_request("s01", with_prefetch=True)["context"]["patientId"]
    healthy_patient = hook_request("s02", with_prefetch=True)["context"]["patientId"]
    assert flood_patient != healthy_patient
    statuses: list[int] = []

    def call(body: bytes, address: str) -> None:
        answer = app.test_client().post(
            PATH, data=body, content_type="application/json", environ_base={"REMOTE_ADDR": address}
        )
        statuses.append(answer.status_code)

    flood = [threading.Thread(target=call, args=(flood_body, "127.0.0.2")) for _ in range(FLOOD_CALLS)]
    flood[0].start()
    wait_until(lambda: len(service.order) == 1)  # the flooder's first call holds the turn
    for thread in flood[1:]:
        thread.start()
    wait_until(lambda: evaluation.waiting() == {"addr 127.0.0.2": FLOOD_CALLS - 1})
    healthy = threading.Thread(target=call, args=(healthy_body, "127.0.0.3"))
    healthy.start()
    wait_until(lambda: evaluation.waiting().get("addr 127.0.0.3") == 1)
    service.release.set()
    for thread in [*flood, healthy]:
        thread.join(30)
    assert statuses == [200] * (FLOOD_CALLS + 1)
    assert service.order == [flood_patient, healthy_patient, flood_patient, flood_patient, flood_patient], (
        "arrival order (FIFO) would have served the healthy tenant last"
    )


GEVENT_CHILD = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import gevent, time
    from cds_service.record.db.off_loop import gevent_patched
    from cds_service.wire.fair_queue import FairQueue

    assert gevent_patched()
    queue = FairQueue("evaluation")
    served = []

    def call(client, cost_s):
        with queue.turn(client):
            served.append(client)
            time.sleep(0)          # a yield inside the turn (as the hook call does) keeps the turn
            busy = time.perf_counter() + cost_s
            while time.perf_counter() < busy:
                pass

    greenlets = [gevent.spawn(call, "flood", 0.01) for _ in range(4)]
    gevent.sleep(0)                # the flooder's four calls are ready first
    greenlets.append(gevent.spawn(call, "healthy", 0.01))
    gevent.joinall(greenlets, timeout=10)
    assert served == ["flood", "flood", "healthy", "flood", "flood"], served
    print("ok")
    """
)


def test_the_order_holds_under_gevent() -> None:
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def test_a_call_keeps_its_turn_until_its_cards_are_in_the_ledger(monkeypatch: Any) -> None:
    """Run to completion: while the first call's ledger write waits on the database, another client's
    evaluation does not start (under gevent it would run to its end before the first call resumed)."""
    import cds_service.wire.api as api_module

    settings = test_settings({"CDS_AS_OF": "2025-06-01"})
    service = GatedService(settings)
    service.release.set()  # evaluations are not gated here: the ledger write is
    app = create_app(settings, service)  # type: ignore[arg-type]
    evaluation: FairQueue = app.extensions["cds_fair_queues"]["evaluation"]
    real_record = api_module.record_issued_cards
    in_ledger = threading.Event()
    ledger_release = threading.Event()
    ledgered: list[str] = []

    def slow_first_write(store: Any, cards: Any, **fields: Any) -> bool:
        if not ledgered:
            in_ledger.set()
            ledger_release.wait(10)
        ledgered.append(fields["patient_id"])
        return bool(real_record(store, cards, **fields))

    monkeypatch.setattr(api_module, "record_issued_cards", slow_first_write)
    first_patient = hook_request("s01", with_prefetch=True)["context"]["patientId"]
    second_patient = hook_request("s02", with_prefetch=True)["context"]["patientId"]
    statuses: list[int] = []

    def call(scenario: str, address: str) -> None:
        body = json.dumps(hook_request(scenario, with_prefetch=True)).encode()
        answer = app.test_client().post(
            PATH, data=body, content_type="application/json", environ_base={"REMOTE_ADDR": address}
        )
        statuses.append(answer.status_code)

    first = threading.Thread(target=call, args=("s01", "127.0.0.2"))
    first.start()
    assert in_ledger.wait(10), "the first call reached its ledger write"
    second = threading.Thread(target=call, args=("s02", "127.0.0.3"))
    second.start()
    wait_until(lambda: evaluation.waiting() == {"addr 127.0.0.3": 1})
    time.sleep(0.05)
    assert service.order == [first_patient], "no other evaluation starts during the ledger write"
    ledger_release.set()
    for thread in (first, second):
        thread.join(30)
    assert statuses == [200, 200]
    assert service.order == [first_patient, second_patient]
    assert ledgered == [first_patient, second_patient]
