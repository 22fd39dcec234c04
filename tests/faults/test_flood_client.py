"""Fault suite: one client floods the service. What must hold: past its rate or its calls in flight that
client gets 429 with Retry-After and an OperationOutcome (never a 5xx), while another client's calls are
still answered 200; the client is the verified JWT issuer + client id, the source address only without
authentication; a Retry-After that has passed admits the client again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.config import SettingsError
from cds_service.wire.auth.dev_keys import mint_dev_token
from cds_service.wire.client_limit import HELD_PER_CLIENT, ClientLimiter, Throttled, client_key, parse_rate
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
SERVICE = "http://127.0.0.1:8000" + PATH
BODY = json.dumps(hook_request("s01", with_prefetch=True)).encode()


def app_client(**env: str) -> FlaskClient:
    return create_app(test_settings({"CDS_AS_OF": "2025-06-01", **env})).test_client()


def post(client: FlaskClient, address: str, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.post(
        PATH,
        data=BODY,
        headers=headers,
        content_type="application/json",
        environ_base={"REMOTE_ADDR": address},
    )
    return answer.status_code, dict(answer.headers), answer.get_json()


def test_a_flooding_address_gets_429_with_retry_after_and_others_are_served() -> None:
    client = app_client(CDS_CLIENT_RATE_LIMIT="5/minute")
    flood = [post(client, "127.0.0.2") for _ in range(8)]
    assert [status for status, _, _ in flood] == [200] * 5 + [429] * 3
    _, headers, outcome = flood[-1]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "throttled"
    status, _, answer = post(client, "127.0.0.3")
    assert status == 200 and answer["cards"], "another client keeps being served"


def test_an_authenticated_client_is_limited_by_its_token_not_its_address(tmp_path: Path) -> None:
    client = app_client(CDS_AUTH_MODE="dev", CDS_DATA_DIR=str(tmp_path), CDS_CLIENT_RATE_LIMIT="2/minute")
    statuses = [post(client, f"127.0.0.{index}", mint_dev_token(tmp_path, SERVICE))[0] for index in (2, 3, 4)]
    assert statuses == [200, 200, 429], "changing address does not escape the issuer's limit"


def test_the_limit_admits_the_client_again_after_retry_after() -> None:
    client = app_client(CDS_CLIENT_RATE_LIMIT="2/second")
    assert [post(client, "127.0.0.2")[0] for _ in range(3)] == [200, 200, 429]
    time.sleep(1.05)
    assert post(client, "127.0.0.2")[0] == 200


def test_a_client_refused_for_its_rate_is_over_its_rate_for_a_while() -> None:
    limiter = ClientLimiter("2/second")
    for _ in range(2):
        with limiter.admit("flood"):
            pass
    assert not limiter.over_rate("flood"), "within its rate"
    with pytest.raises(Throttled), limiter.admit("flood"):
        pass
    assert limiter.over_rate("flood") and not limiter.over_rate("healthy")
    assert not ClientLimiter("2/second", lowered_for_s=0.0).over_rate("flood")


def test_over_its_rate_ends_after_the_lowered_window(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = ClientLimiter("1/second", lowered_for_s=0.05)
    with limiter.admit("flood"):
        pass
    with pytest.raises(Throttled), limiter.admit("flood"):
        pass
    assert limiter.over_rate("flood")
    time.sleep(0.06)
    assert not limiter.over_rate("flood"), "the mark expires on its own"


def test_calls_in_flight_are_limited_per_client_and_released() -> None:
    limiter = ClientLimiter(max_in_flight=2)
    entered = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with limiter.admit("addr 127.0.0.2"):
            entered.wait(5)
            release.wait(5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    entered.wait(5)
    with pytest.raises(Throttled) as refused:
        limiter.admit("addr 127.0.0.2").__enter__()
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
    with limiter.admit("addr 127.0.0.3"):
        assert limiter.in_flight("addr 127.0.0.3") == 1, "another client is not affected"
    release.set()
    for holder in holders:
        holder.join(5)
    assert limiter.in_flight("addr 127.0.0.2") == 0
    with limiter.admit("addr 127.0.0.2"):
        pass


def test_a_refused_or_failed_call_gives_its_place_back() -> None:
    limiter = ClientLimiter(rate="1/minute", max_in_flight=1)
    with limiter.admit("c"):
        pass
    with pytest.raises(Throttled), limiter.admit("c"):
        pass
    assert limiter.in_flight("c") == 0
    with pytest.raises(RuntimeError), ClientLimiter(max_in_flight=1).admit("c"):
        raise RuntimeError


def test_client_keys_and_settings() -> None:
    assert client_key("https://ehr.example", "client-1", "10.0.0.1") == client_key(
        "https://ehr.example", "client-1", "10.0.0.2"
    ), "an authenticated client is its issuer and client id, whatever its address"
    assert client_key("https://ehr.example", "client-2", None) != client_key(
        "https://ehr.example", "client-1", None
    )
    assert client_key(None, None, "10.0.0.1") != client_key(None, None, "10.0.0.2")
    assert client_key("https://a", "b c", None) != client_key("https://a b", "c", None)
    assert parse_rate("") == ()
    assert len(parse_rate("20/second;600/minute")) == 2
    with pytest.raises(SettingsError, match="CDS_CLIENT_RATE_LIMIT"):
        test_settings({"CDS_CLIENT_RATE_LIMIT": "lots"})


def test_under_gevent_a_refusal_is_held_up_to_a_second_and_a_bounded_number_per_client() -> None:
    pauses: list[float] = []
    limiter = ClientLimiter(rate="1/minute", hold_refusals=True, sleep=pauses.append)
    with limiter.admit("c"):
        pass
    with pytest.raises(Throttled), limiter.admit("c"):
        pass
    assert pauses == [1.0], "held for min(1 s, Retry-After) before the 429 is answered"
    release = threading.Event()
    holding = ClientLimiter(rate="1/minute", hold_refusals=True, sleep=lambda _s: release.wait(5))
    with holding.admit("c"):
        pass
    refused: list[float] = []

    def refuse() -> None:
        started = time.monotonic()
        with pytest.raises(Throttled), holding.admit("c"):
            pass
        refused.append(time.monotonic() - started)

    held = [threading.Thread(target=refuse) for _ in range(HELD_PER_CLIENT)]
    for thread in held:
        thread.start()
    time.sleep(0.2)
    refuse()
    assert refused[0] < 0.2, "past the bound a refusal is answered at once"
    release.set()
    for thread in held:
        thread.join(5)
    not_held: list[float] = []
    threads_limiter = ClientLimiter(rate="1/minute", hold_refusals=False, sleep=not_held.append)
    with threads_limiter.admit("c"):
        pass
    with pytest.raises(Throttled), threads_limiter.admit("c"):
        pass
    assert not_held == [], "with threads (gthread) a refusal is answered at once"
