"""Feedback through the real HTTP app, on SQLite and PostgreSQL: cards from a hook call are ledgered
before the 200, feedback on them is matched, the admin report counts them, and a dead database is a 503."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select

from cds_service.app import create_app
from cds_service.record.db.schema import card_ledger, feedback
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
ADMIN_TOKEN = "admin-report-token-for-tests-0001"


def client_for(url: str, tmp_path: Path) -> FlaskClient:
    settings = test_settings(
        {
            "CDS_DATABASE_URL": url,
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_AS_OF": "2025-06-01",
            "CDS_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        }
    )
    return create_app(settings).test_client()


def entry(card: dict[str, Any], outcome: str = "accepted") -> dict[str, Any]:
    body: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": outcome,
        "outcomeTimestamp": "2025-06-01T10:00:00Z",
    }
    if outcome == "accepted":
        body["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    else:
        body["overrideReason"] = {"reason": card["overrideReasons"][1]}
    return body


def test_hook_cards_are_ledgered_and_feedback_matches(any_db_url: str, tmp_path: Path) -> None:
    client = client_for(any_db_url, tmp_path)
    cards = client.post(PATH, json=hook_request("s01", with_prefetch=True)).get_json()["cards"]
    assert cards and all("uuid" in c for c in cards)
    engine = create_engine(any_db_url)
    with engine.connect() as conn:
        ledgered = {row.uuid: row for row in conn.execute(select(card_ledger))}
    assert set(ledgered) == {c["uuid"] for c in cards}
    assert all(row.patient_key != "s01" and len(row.patient_key) == 64 for row in ledgered.values())
    assert ledgered[cards[0]["uuid"]].kind == "ESCALATE"

    batch = {"feedback": [entry(cards[0]), entry(cards[0]), {**entry(cards[0]), "card": "unknown-card"}]}
    response = client.post(f"{PATH}/feedback", json=batch)
    assert response.status_code == 200 and response.get_json() == {}
    assert client.post(f"{PATH}/feedback", json=batch).status_code == 200  # a retried batch is stored once
    with engine.connect() as conn:
        rows = list(conn.execute(select(feedback.c.card, feedback.c.matched)))
    assert sorted(rows) == sorted([(cards[0]["uuid"], True), ("unknown-card", False)])

    report = client.get("/admin/feedback-report", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert report.status_code == 200
    body = report.get_json()
    assert body["cards_issued"] == len(cards)
    assert body["by_outcome"]["ESCALATE"]["accepted"] == 1
    assert body["unmatched_feedback"] == 1
    assert "Access-Control-Allow-Origin" not in report.headers
    engine.dispose()


def test_admin_report_needs_the_exact_token(tmp_path: Path) -> None:
    client = client_for(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path)
    assert client.get("/admin/feedback-report").status_code == 401
    assert client.get("/admin/feedback-report", headers={"Authorization": "Bearer wrong"}).status_code == 401
    unset = create_app(test_settings({"CDS_DATA_DIR": str(tmp_path)})).test_client()
    assert unset.get("/admin/feedback-report").status_code == 404


def test_invalid_batch_stores_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    client = client_for(url, tmp_path)
    cards = client.post(PATH, json=hook_request("s01", with_prefetch=True)).get_json()["cards"]
    batch = {"feedback": [entry(cards[0]), {"card": cards[0]["uuid"], "outcome": "maybe"}]}
    response = client.post(f"{PATH}/feedback", json=batch)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"][0].startswith("feedback[1]")
    with create_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(feedback)).scalar_one() == 0


def test_database_down_is_503_but_cards_are_still_returned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    client = client_for(url, tmp_path)
    cards = client.post(PATH, json=hook_request("s01", with_prefetch=True)).get_json()["cards"]
    with create_engine(url).begin() as conn:  # simulate a broken database: the tables vanish
        conn.exec_driver_sql("DROP TABLE card_suggestion")
        conn.exec_driver_sql("DROP TABLE feedback")
        conn.exec_driver_sql("DROP TABLE card_ledger")
    again = client.post(PATH, json=hook_request("s01", with_prefetch=True))
    assert again.status_code == 200 and again.get_json()["cards"], "a ledger failure never hides the cards"
    assert client.get("/healthz").get_json()["ledger_write_failures"] == 1
    response = client.post(f"{PATH}/feedback", json={"feedback": [entry(cards[0])]})
    assert response.status_code == 503
    assert response.headers["Retry-After"]
