"""Durability: a feedback entry answered 200 survives the server process being SIGKILLed at once.

A real process (a tiny Flask app around handle_feedback, on 127.0.0.1 with an ephemeral port) is
started, sent one batch, killed with SIGKILL right after the 200, and the database is reopened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from cds_service.record.db.engine import make_engine
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.schema import feedback
from cds_service.record.feedback.store import FeedbackStore, IssuedCard
from tests.support import leak_guard
from tests.support.databases import (  # noqa: F401 - pytest fixtures
    any_db_url_fixture,
    postgres_admin_fixture,
    postgres_url_fixture,
    sqlite_url_fixture,
)

ROOT = Path(__file__).resolve().parents[2]
FEEDBACK_PATH = "/cds-services/osteoporosis-escalation/feedback"
SERVER = """
import sys
from flask import Flask, jsonify, request
from werkzeug.serving import make_server
from cds_service.wire.cdshooks import operation_outcome
from cds_service.record.db.engine import make_engine
from cds_service.core.errors import ServiceError
from cds_service.wire.feedback_routes import handle_feedback
from cds_service.record.feedback.store import FeedbackStore

store = FeedbackStore(make_engine(sys.argv[1]))
app = Flask("feedback-kill-test")

@app.post(sys.argv[2])
def post_feedback():
    try:
        status, body, headers = handle_feedback(request.get_json(force=True), store)
    except ServiceError as error:
        return jsonify(operation_outcome(error)), error.status, getattr(error, "headers", {})
    return jsonify(body), status, headers

server = make_server("127.0.0.1", 0, app)
print(server.port, flush=True)
server.serve_forever()
"""


@pytest.fixture(name="server")
def server_fixture(any_db_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, any_db_url, FEEDBACK_PATH],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        process.kill()
        pytest.fail(f"server did not start: {process.communicate(timeout=10)[1][-2000:]}")
    yield process, f"http://127.0.0.1:{line}{FEEDBACK_PATH}"
    if process.poll() is None:
        process.kill()
    out, err = process.communicate(timeout=10)
    leak_guard.scan("feedback server process output", out + err)


def test_entry_survives_sigkill_right_after_200(
    any_db_url: str, server: tuple[subprocess.Popen[str], str]
) -> None:
    engine = make_engine(any_db_url)
    upgrade(engine)
    FeedbackStore(engine).record_cards(
        [IssuedCard("card-1", "ESCALATE", "R12", ())],
        hook_instance="hi-1",
        patient_key="k" * 64,
        protocol_version="1.0",
        service_version="0.1.0",
        issued_at=datetime(2025, 6, 2, 9, tzinfo=UTC),
    )
    engine.dispose()
    process, url = server
    body = {
        "feedback": [
            {"card": "card-1", "outcome": "overridden", "outcomeTimestamp": "2025-06-02T09:01:00Z"},
            {"card": "unknown", "outcome": "overridden", "outcomeTimestamp": "2025-06-02T09:02:00Z"},
        ]
    }
    response = requests.post(url, json=body, timeout=30)
    os.kill(process.pid, signal.SIGKILL)
    assert (response.status_code, response.json()) == (200, {})
    assert process.wait(timeout=10) == -signal.SIGKILL

    reopened = make_engine(any_db_url)
    try:
        with reopened.connect() as connection:
            stored = connection.execute(
                select(feedback.c.card, feedback.c.matched).order_by(feedback.c.card)
            ).all()
    finally:
        reopened.dispose()
    assert [tuple(row) for row in stored] == [("card-1", True), ("unknown", False)]


def test_bad_batch_over_http_is_400_and_stores_nothing(
    any_db_url: str, server: tuple[subprocess.Popen[str], str]
) -> None:
    engine = make_engine(any_db_url)
    upgrade(engine)
    _process, url = server
    body = {
        "feedback": [
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2025-06-02T09:01:00Z"},
            {"card": "c"},
        ]
    }
    response = requests.post(url, json=body, timeout=30)
    assert response.status_code == 400
    assert [i["expression"] for i in response.json()["issue"]] == [
        ["feedback[1].outcome", "feedback[1].outcomeTimestamp"]
    ]
    with engine.connect() as connection:
        assert connection.execute(select(feedback)).all() == []
    engine.dispose()
