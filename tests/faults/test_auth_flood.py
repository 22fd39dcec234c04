"""Fault suite: one address floods the service with invalid client JWTs (a trusted issuer and a known key,
so each costs a signature check). What must hold: past CDS_AUTH_FAILURE_LIMIT failures from that address
its calls get 429 with Retry-After and an OperationOutcome before the token is verified (no 5xx); other
addresses, and clients whose tokens verify, are still served; the window admits the address again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.config import SettingsError
from cds_service.record.metrics import get_metrics
from cds_service.wire.auth.dev_keys import mint_dev_token
from cds_service.wire.auth_flood import HELD_AT_ONCE, AuthFailureLimiter, AuthFailuresThrottled
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
SERVICE = "http://127.0.0.1:8000" + PATH
BODY = json.dumps(hook_request("s01", with_prefetch=True)).encode()


def app_client(tmp_path: Path, limit: str) -> FlaskClient:
    settings = test_settings(
        {
            "CDS_AUTH_MODE": "dev",
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_AS_OF": "2025-06-01",
            "CDS_AUTH_FAILURE_LIMIT": limit,
        }
    )
    return create_app(settings).test_client()


def forged(tmp_path: Path) -> str:
    """A dev-issuer token with a known kid whose signature does not match (costs a verification)."""
    token = mint_dev_token(tmp_path, SERVICE)
    head, claims, signature = token.split(".")
    return f"{head}.{claims}.{signature[::-1]}"


def post(client: FlaskClient, address: str, token: str) -> tuple[int, dict[str, str], Any]:
    answer = client.post(
        PATH,
        data=BODY,
        headers={"Authorization": f"Bearer {token}"},
        content_type="application/json",
        environ_base={"REMOTE_ADDR": address},
    )
    return answer.status_code, dict(answer.headers), answer.get_json()


def signature_checks() -> float:
    value = get_metrics().registry.get_sample_value("cds_auth_refusals_total", {"reason": "bad_signature"})
    return value or 0.0


def throttled() -> float:
    value = get_metrics().registry.get_sample_value("cds_client_throttled_total", {"reason": "auth_failures"})
    return value or 0.0


def test_an_address_sending_invalid_tokens_is_refused_before_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app_client(tmp_path, "3/minute")
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    checks_before, throttled_before = signature_checks(), throttled()
    statuses = [post(client, "10.0.0.9", forged(tmp_path)) for _ in range(6)]
    assert [status for status, _, _ in statuses] == [401, 401, 401, 429, 429, 429]
    assert signature_checks() == checks_before + 3, "the refused calls were not verified"
    assert throttled() == throttled_before + 3
    verified_tokens = len(decoded)
    _, headers, outcome = statuses[-1]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "throttled"
    # a valid token from the same address is refused too while the window lasts (the documented cost)
    assert post(client, "10.0.0.9", mint_dev_token(tmp_path, SERVICE))[0] == 429
    assert len(decoded) == verified_tokens, "nothing from the blocked address reached the JWT decoder"
    # another address, with a valid token, is served; its own failures have their own budget
    status, _, answer = post(client, "10.0.0.10", mint_dev_token(tmp_path, SERVICE))
    assert status == 200 and answer["cards"]
    assert post(client, "10.0.0.10", forged(tmp_path))[0] == 401


def test_valid_tokens_never_use_up_the_budget(tmp_path: Path) -> None:
    client = app_client(tmp_path, "2/minute")
    statuses = [post(client, "10.0.0.9", mint_dev_token(tmp_path, SERVICE))[0] for _ in range(5)]
    assert statuses == [200] * 5


def test_the_window_admits_the_address_again(tmp_path: Path) -> None:
    client = app_client(tmp_path, "2/second")
    assert [post(client, "10.0.0.9", forged(tmp_path))[0] for _ in range(3)] == [401, 401, 429]
    time.sleep(1.1)
    assert post(client, "10.0.0.9", mint_dev_token(tmp_path, SERVICE))[0] == 200


def test_discovery_and_feedback_count_too_and_an_empty_limit_is_off(tmp_path: Path) -> None:
    client = app_client(tmp_path, "1/minute")
    headers = {"Authorization": "Bearer " + forged(tmp_path)}
    environ = {"REMOTE_ADDR": "10.0.0.9"}
    assert client.get("/cds-services", headers=headers, environ_base=environ).status_code == 401
    assert client.get("/cds-services", headers=headers, environ_base=environ).status_code == 429
    feedback = client.post(PATH + "/feedback", json={"feedback": []}, headers=headers, environ_base=environ)
    assert feedback.status_code == 429
    off = app_client(tmp_path, "")
    assert [post(off, "10.0.0.9", forged(tmp_path))[0] for _ in range(4)] == [401] * 4
    with pytest.raises(SettingsError, match="CDS_AUTH_FAILURE_LIMIT"):
        test_settings({"CDS_AUTH_FAILURE_LIMIT": "many"})


def test_under_gevent_a_refusal_is_held_a_second_a_bounded_number_at_once() -> None:
    pauses: list[float] = []
    limiter = AuthFailureLimiter("1/minute", hold_refusals=True, sleep=pauses.append)
    limiter.failed("10.0.0.9")
    with pytest.raises(AuthFailuresThrottled):
        limiter.check("10.0.0.9")
    assert pauses == [1.0]
    limiter.check("10.0.0.10")  # another address is not affected
    release = threading.Event()
    holding = AuthFailureLimiter("1/minute", hold_refusals=True, sleep=lambda _s: release.wait(5))
    holding.failed("a")

    def refuse() -> None:
        with pytest.raises(AuthFailuresThrottled):
            holding.check("a")

    held = [threading.Thread(target=refuse) for _ in range(HELD_AT_ONCE)]
    for thread in held:
        thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    refuse()
    assert time.monotonic() - started < 0.2, "past the bound a refusal is answered at once"
    release.set()
    for thread in held:
        thread.join(5)
