"""Bounded storage: hookInstance is validated and bounded, the database grows by a measured, bounded
amount per hook call, retention deletes old ledger and feedback rows (with their suggestions), and the
SQLite WAL is truncated after a checkpoint.

What must hold: an oversized or malformed hookInstance is a 400 and nothing is stored; growth per call
stays under GROWTH_LIMIT_BYTES; rows past retention are gone after a prune, recent ones stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select

from cds_service.app import create_app
from cds_service.record.db.engine import make_engine
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.retention import Retention, prune
from cds_service.record.db.schema import card_ledger, card_suggestion, feedback
from cds_service.record.feedback.store import FeedbackStore, IssuedCard, IssuedSuggestion
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"
GROWTH_LIMIT_BYTES = 4096
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def client_on(database: Path, tmp_path: Path) -> FlaskClient:
    settings = test_settings(
        {
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_DATABASE_URL": f"sqlite:///{database}",
            "CDS_AS_OF": "2025-06-01",
        }
    )
    return create_app(settings).test_client()


def count(url: str, table: Any) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("hook_instance", ["x" * 129, "has space", "tab\there", "", "x" * 9_000_000])
def test_a_malformed_or_oversized_hook_instance_is_400_and_nothing_is_stored(
    hook_instance: str, tmp_path: Path
) -> None:
    database = tmp_path / "db.sqlite3"
    client = client_on(database, tmp_path)
    body = {**hook_request("s01", with_prefetch=True), "hookInstance": hook_instance}
    response = client.post(PATH, data=json.dumps(body), content_type="application/json")
    assert response.status_code in (400, 413), response.status_code
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert count(f"sqlite:///{database}", card_ledger) == 0


def test_database_growth_per_hook_call_is_measured_and_bounded(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    client = client_on(database, tmp_path)
    body = json.dumps(hook_request("s01", with_prefetch=True))

    def size() -> int:
        engine = make_engine(f"sqlite:///{database}")
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        return sum(path.stat().st_size for path in tmp_path.glob("db.sqlite3*"))

    for _ in range(20):  # warm up: first pages of every table and index
        assert client.post(PATH, data=body, content_type="application/json").status_code == 200
    before = size()
    calls = 200
    for _ in range(calls):
        assert client.post(PATH, data=body, content_type="application/json").status_code == 200
    per_call = (size() - before) / calls
    print(f"database growth per hook call: {per_call:.0f} bytes")
    assert per_call < GROWTH_LIMIT_BYTES
    wal = tmp_path / "db.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL is truncated by a checkpoint"


def _ledger_card(uuid: str) -> IssuedCard:
    return IssuedCard(uuid, "ESCALATE", "R12", (IssuedSuggestion(f"{uuid}-s", "romosozumab", False),))


def test_retention_deletes_old_ledger_cards_with_suggestions_and_old_feedback(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    upgrade(engine)
    store = FeedbackStore(engine, clock=lambda: NOW)
    for uuid, issued in (("old-card", NOW - timedelta(days=500)), ("new-card", NOW - timedelta(days=5))):
        store.record_cards(
            [_ledger_card(uuid)],
            hook_instance="h",
            patient_key="k",
            protocol_version="p",
            service_version="v",
            issued_at=issued,
        )
    with engine.begin() as connection:
        for card, received in (("old-card", NOW - timedelta(days=500)), ("new-card", NOW)):
            connection.execute(
                feedback.insert().values(
                    card=card,
                    outcome="accepted",
                    outcome_ts=received,
                    received_at=received,
                    matched=True,
                    accepted_suggestions=[],
                    has_comment=False,
                )
            )
    pruned = prune(engine, Retention(ledger_days=400, feedback_days=400), NOW)
    assert (pruned.cards, pruned.feedback) == (1, 1)
    with engine.connect() as connection:
        assert [row.uuid for row in connection.execute(select(card_ledger.c.uuid))] == ["new-card"]
        assert [row.card_uuid for row in connection.execute(select(card_suggestion.c.card_uuid))] == [
            "new-card"
        ]
        assert [row.card for row in connection.execute(select(feedback.c.card))] == ["new-card"]
    kept = prune(engine, Retention(ledger_days=0, feedback_days=0), NOW + timedelta(days=5000))
    assert (kept.cards, kept.feedback) == (0, 0), "0 days = keep forever"
    engine.dispose()


def test_the_store_prunes_in_the_background_every_n_writes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    store = FeedbackStore(engine, clock=lambda: NOW, retention=Retention(30, 30), prune_every=3)
    for index in range(3):
        store.record_cards(
            [_ledger_card(f"c{index}")],
            hook_instance="h",
            patient_key="k",
            protocol_version="p",
            service_version="v",
            issued_at=NOW - timedelta(days=100),
        )
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while count(f"sqlite:///{tmp_path / 'db.sqlite3'}", card_ledger) and datetime.now(UTC) < deadline:
        time.sleep(0.05)
    assert count(f"sqlite:///{tmp_path / 'db.sqlite3'}", card_ledger) == 0
    engine.dispose()


def test_db_prune_command(tmp_path: Path) -> None:
    env = {**os.environ, "CDS_DATA_DIR": str(tmp_path), "CDS_LEDGER_RETENTION_DAYS": "30"}
    cli = [str(Path(sys.executable).parent / "cds-service")]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=60)
    done = subprocess.run(
        [*cli, "db", "prune"], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "deleted 0 ledger cards" in done.stdout


@pytest.mark.parametrize("path", ["/nowhere", "/cds-services/x/y/z", "/admin"])
def test_options_on_an_unknown_path_is_a_404_operation_outcome(path: str, tmp_path: Path) -> None:
    client = client_on(tmp_path / "db.sqlite3", tmp_path)
    response = client.options(path, headers={"Origin": "http://localhost:3000"})
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"
