"""Fault suite: SQLite runs out of space ("database or disk is full", simulated per connection with
PRAGMA max_page_count: no filesystem is filled).

What must hold: no 5xx other than 503 + Retry-After; hook calls still return their cards (the ledger
failure is counted); every feedback entry acknowledged with 200 is in the database (nothing
acknowledged is lost); after space returns, feedback is stored again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select

from cds_service.app import create_app
from cds_service.record.db.schema import feedback
from cds_service.wire.runtime import build_runtime
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"


def test_a_full_disk_is_503_for_feedback_cards_still_returned_nothing_acknowledged_lost(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    settings = test_settings(
        {"CDS_DATA_DIR": str(tmp_path), "CDS_DATABASE_URL": url, "CDS_AS_OF": "2025-06-01"}
    )
    runtime = build_runtime(settings)
    disk = {"full": False}

    @event.listens_for(runtime.engine, "connect")
    def _limit_pages(dbapi_connection: Any, _record: Any) -> None:
        if disk["full"]:
            cursor = dbapi_connection.cursor()
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
            cursor.close()

    client = create_app(settings, runtime=runtime).test_client()
    cards = client.post(PATH, json=hook_request("s01", with_prefetch=True)).get_json()["cards"]
    disk["full"] = True
    runtime.engine.dispose()
    acknowledged = 0
    statuses: set[int] = set()
    for index in range(300):
        entry = {
            "card": cards[0]["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": f"2025-06-01T10:{index // 60:02d}:{index % 60:02d}Z",
        }
        entry["overrideReason"] = {"reason": cards[0]["overrideReasons"][0], "userComment": "x" * 2000}
        response = client.post(f"{PATH}/feedback", json={"feedback": [entry]})
        statuses.add(response.status_code)
        if response.status_code == 200:
            acknowledged += 1
        else:
            assert response.status_code == 503 and response.headers["Retry-After"]
        hook = client.post(PATH, json=hook_request("s01", with_prefetch=True))
        assert hook.status_code == 200 and hook.get_json()["cards"]
    assert 503 in statuses, "the simulated disk never filled up"
    assert not any(status >= 500 and status != 503 for status in statuses)
    engine = create_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(feedback)).scalar_one()
    engine.dispose()
    assert stored == acknowledged, "every acknowledged entry is stored, nothing else"

    disk["full"] = False
    runtime.engine.dispose()
    runtime.db_health.succeeded()
    entry = {"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "2025-06-02T10:00:00Z"}
    entry["acceptedSuggestions"] = [{"id": cards[0]["suggestions"][0]["uuid"]}]
    assert client.post(f"{PATH}/feedback", json={"feedback": [entry]}).status_code == 200
