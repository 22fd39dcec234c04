"""Fault suite: the database dies and comes back while the service runs (PostgreSQL behind a loopback
proxy that the test cuts; the shared server keeps running).

What must hold (degradation policy, docs/operations.md): hook calls are still answered 200 during the
outage, with replay protection from the worker's in-process window (a replayed token is still 401);
feedback is refused with 503 + Retry-After (never acknowledged and lost); /healthz stays 200 and
/readyz turns 503; after the database returns everything is normal again and no 5xx other than the
documented 503s was ever sent. With CDS_DB_OUTAGE_POLICY=refuse, hook calls get 503 instead."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from cds_service.app import create_app
from cds_service.wire.auth.dev_keys import mint_dev_token
from tests.faults.tcp_proxy import TcpProxy
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
SERVICE = "http://127.0.0.1:8000" + PATH


def proxied(url: str, proxy: TcpProxy) -> str:
    parsed = make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def app_behind(proxy: TcpProxy, postgres_url: str, tmp_path: Path, **extra: str) -> FlaskClient:
    settings = test_settings(
        {
            "CDS_AUTH_MODE": "dev",
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_AS_OF": "2025-06-01",
            "CDS_DATABASE_URL": proxied(postgres_url, proxy),
            "CDS_DB_RETRY_S": "0.5",
            **extra,
        }
    )
    return create_app(settings).test_client()


def call(client: FlaskClient, tmp_path: Path, token: str | None = None) -> Any:
    body = json.dumps(hook_request("s01", with_prefetch=True)).encode()
    headers = {"Authorization": f"Bearer {token or mint_dev_token(tmp_path, SERVICE)}"}
    return client.post(PATH, data=body, headers=headers, content_type="application/json")


def feedback(client: FlaskClient, tmp_path: Path, card: str) -> Any:
    body = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2025-06-01T10:00:00Z"}]}
    headers = {"Authorization": f"Bearer {mint_dev_token(tmp_path, SERVICE + '/feedback')}"}
    return client.post(PATH + "/feedback", json=body, headers=headers)


@pytest.fixture(name="proxy")
def proxy_fixture(postgres_url: str) -> Any:
    parsed = make_url(postgres_url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    yield proxy
    proxy.cut()


def test_database_outage_degrades_hook_calls_refuses_feedback_and_recovers(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path
) -> None:
    client = app_behind(proxy, postgres_url, tmp_path)
    first = call(client, tmp_path)
    assert first.status_code == 200
    card = first.get_json()["cards"][0]["uuid"]
    assert client.get("/readyz").status_code == 200

    proxy.cut()
    statuses = []
    started = time.monotonic()
    for _ in range(10):
        statuses.append(call(client, tmp_path).status_code)
    assert statuses == [200] * 10, statuses
    assert time.monotonic() - started < 10, "an outage must not make each call wait for a timeout"
    token = mint_dev_token(tmp_path, SERVICE)
    assert call(client, tmp_path, token).status_code == 200
    assert call(client, tmp_path, token).status_code == 401, "replay still refused in degraded mode"
    refused = feedback(client, tmp_path, card)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["database"] == "degraded"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"] == "unavailable"

    proxy.restore()
    time.sleep(0.6)  # CDS_DB_RETRY_S
    deadline = time.monotonic() + 10
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/readyz").status_code == 200
    assert call(client, tmp_path).status_code == 200
    assert feedback(client, tmp_path, card).status_code == 200
    assert client.get("/healthz").get_json()["database"] == "ok"
    assert call(client, tmp_path, token).status_code == 401, "a pair seen during the outage stays refused"


def test_refuse_policy_answers_hook_calls_503_during_an_outage(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path
) -> None:
    client = app_behind(proxy, postgres_url, tmp_path, CDS_DB_OUTAGE_POLICY="refuse")
    assert call(client, tmp_path).status_code == 200
    proxy.cut()
    refused = call(client, tmp_path)
    assert refused.status_code == 503 and refused.headers["Retry-After"]


def test_a_corrupt_sqlite_file_is_503_and_not_ready_never_500(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    settings = test_settings(
        {"CDS_AUTH_MODE": "dev", "CDS_DATA_DIR": str(tmp_path), "CDS_DATABASE_URL": f"sqlite:///{database}"}
    )
    client = create_app(settings).test_client()
    assert call(client, tmp_path).status_code == 200
    for path in tmp_path.glob("db.sqlite3*"):
        path.write_bytes(b"this is not a database" * 100)
    client = create_app(settings.model_copy(update={"db_auto_migrate": False})).test_client()
    answer = call(client, tmp_path)
    assert answer.status_code in (200, 503), answer.status_code
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_tokens_accepted_during_an_outage_are_refused_by_every_worker_after_recovery(
    proxy: TcpProxy, postgres_url: str, tmp_path: Path
) -> None:
    """Two workers (two apps) share the database; worker A accepts a token while it is down. Once it is
    back, A writes its window to the database (in the background, no call needed), so worker B, which
    never saw the token, refuses its replay: exactly once again after recovery."""
    worker_a = app_behind(proxy, postgres_url, tmp_path)
    worker_b = app_behind(proxy, postgres_url, tmp_path)
    assert call(worker_a, tmp_path).status_code == 200
    assert call(worker_b, tmp_path).status_code == 200
    proxy.cut()
    during = [mint_dev_token(tmp_path, SERVICE) for _ in range(3)]
    assert [call(worker_a, tmp_path, token).status_code for token in during] == [200] * 3
    proxy.restore()
    deadline = time.monotonic() + 10
    while worker_a.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.2)  # two CDS_DB_RETRY_S periods: the write-back loop has run
    assert [call(worker_b, tmp_path, token).status_code for token in during] == [401] * 3
    assert call(worker_a, tmp_path, during[0]).status_code == 401
    assert call(worker_b, tmp_path).status_code == 200, "fresh tokens are still accepted"
