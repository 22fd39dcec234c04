"""Card ledger and feedback store on SQLite and PostgreSQL; the JWT replay store; 503 when down."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from cds_service.core.errors import BadRequest
from cds_service.knowledge.loader import load_knowledge
from cds_service.present.card_model import Card, Source, Suggestion
from cds_service.present.cards import render_cards
from cds_service.record.db.engine import DatabaseUnavailable, make_engine
from cds_service.record.db.migrate import upgrade
from cds_service.record.db.replay_store import DbReplayStore
from cds_service.record.db.schema import card_ledger, card_suggestion, feedback, jwt_replay
from cds_service.record.feedback.patient_key import (
    SECRET_FILE,
    PatientKeyer,
    PatientKeyError,
    load_patient_keyer,
)
from cds_service.record.feedback.store import FeedbackStore, IssuedCard, IssuedSuggestion, issued_cards
from cds_service.record.feedback.validate import validate_feedback
from cds_service.rules.decision import AgentAssessment, Decision, WarningDetail
from cds_service.wire.feedback_routes import handle_feedback, record_issued_cards
from tests.support.databases import (  # noqa: F401 - pytest fixtures
    any_db_url_fixture,
    postgres_admin_fixture,
    postgres_url_fixture,
    sqlite_url_fixture,
)

KNOWLEDGE = load_knowledge()
PATIENT = "pat-secret-42"
KEYER = PatientKeyer(b"k" * 32)
ISSUED = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"


def uuids() -> Any:
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def escalate_cards() -> list[Card]:
    decision = Decision(
        "ESCALATE",
        "R12",
        date(2025, 6, 1),
        KNOWLEDGE.protocol_version,
        agents=(
            AgentAssessment("romosozumab", "preferred", 1),
            AgentAssessment("teriparatide", "excluded", None),
            AgentAssessment("abaloparatide", "option", 2),
        ),
        warnings=(WarningDetail("DENOSUMAB_OVERDUE", "last dose 2024-07-15"),),
        suggestions_allowed=True,
        in_scope=True,
    )
    return render_cards(
        decision,
        KNOWLEDGE,
        patient_id=PATIENT,
        selection_behavior="at-most-one",
        as_of_pinned=False,
        new_uuid=uuids(),
    )


@pytest.fixture(name="engine")
def engine_fixture(any_db_url: str) -> Iterator[Engine]:
    engine = make_engine(any_db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(name="store")
def store_fixture(engine: Engine) -> FeedbackStore:
    return FeedbackStore(engine, clock=lambda: datetime(2025, 6, 2, 9, 5, tzinfo=UTC))


def record(store: FeedbackStore, cards: list[Card], hook_instance: str = "hi-1") -> int:
    return store.record_cards(
        issued_cards(cards),
        hook_instance=hook_instance,
        patient_key=KEYER(PATIENT),
        protocol_version=KNOWLEDGE.protocol_version,
        service_version="0.1.0",
        issued_at=ISSUED,
    )


def entry(card: str, outcome: str = "overridden", when: str = "2025-06-02T09:01:00Z", **extra: Any) -> Any:
    return {"card": card, "outcome": outcome, "outcomeTimestamp": when, **extra}


def rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table))]


# ----- card ledger ---------------------------------------------------------------------------
def test_issued_cards_reads_kind_rule_and_agents_from_the_typed_cards() -> None:
    cards = escalate_cards()
    assert issued_cards(cards) == [
        IssuedCard(
            cards[0].uuid,
            "ESCALATE",
            "R12",
            (
                IssuedSuggestion(cards[0].suggestions[0].uuid, "romosozumab", True),
                IssuedSuggestion(cards[0].suggestions[1].uuid, "abaloparatide", False),
            ),
        ),
        IssuedCard(cards[1].uuid, "DENOSUMAB_OVERDUE", "R12", ()),
    ]


def test_issued_cards_reads_the_typed_fields_not_the_wording() -> None:
    """The ledger's agent is the suggestion's typed agent, whatever its label says (no re-parsing)."""
    (card, _warning) = escalate_cards()
    card.suggestions[0].label = "Abaloparatide is mentioned here but this is romosozumab"
    card.suggestions.append(Suggestion("Something else", "s-x", agent=None))
    entry = issued_cards([card, Card("", "x", "info", Source("s"), kind="ESCALATE")])
    assert [(s.agent, s.is_recommended) for s in entry[0].suggestions] == [
        ("romosozumab", True),
        ("abaloparatide", False),
        ("UNKNOWN", False),
    ]
    assert len(entry) == 1  # a card without a uuid is not ledgered


def test_record_cards_stores_the_ledger_without_patient_ids(engine: Engine, store: FeedbackStore) -> None:
    cards = escalate_cards()
    assert record(store, cards) == 2
    assert record(store, cards) == 2  # idempotent on the card uuid
    ledger = sorted(rows(engine, card_ledger), key=lambda r: r["kind"])
    assert [(r["kind"], r["rule"], r["hook_instance"], r["issued_at"]) for r in ledger] == [
        ("DENOSUMAB_OVERDUE", "R12", "hi-1", ISSUED),
        ("ESCALATE", "R12", "hi-1", ISSUED),
    ]
    assert {r["patient_key"] for r in ledger} == {KEYER(PATIENT)}
    assert ledger[1]["protocol_version"] == KNOWLEDGE.protocol_version
    suggestions = rows(engine, card_suggestion)
    assert sorted((r["agent"], r["is_recommended"]) for r in suggestions) == [
        ("abaloparatide", False),
        ("romosozumab", True),
    ]
    everything = repr(ledger) + repr(suggestions)
    assert PATIENT not in everything


def test_record_issued_cards_failure_is_logged_and_counted_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(UNREACHABLE_URL)
    store = FeedbackStore(engine)
    with caplog.at_level(logging.INFO):
        ok = record_issued_cards(
            store,
            escalate_cards(),
            hook_instance="hi-1",
            patient_id=PATIENT,
            patient_key=KEYER,
            protocol_version="p",
        )
    engine.dispose()
    assert ok is False
    assert store.ledger_failures == 1
    assert '"event":"cds_ledger_write_failed"' in caplog.text
    assert PATIENT not in caplog.text


# ----- feedback ------------------------------------------------------------------------------
def test_feedback_is_matched_against_the_ledger(engine: Engine, store: FeedbackStore) -> None:
    cards = escalate_cards()
    record(store, cards)
    main, suggestion = cards[0].uuid, cards[0].suggestions[0].uuid
    body = {
        "feedback": [
            entry(main, "accepted", acceptedSuggestions=[{"id": suggestion}]),
            entry("not-in-the-ledger"),
            entry(
                cards[1].uuid,
                overrideReasons={"reason": {"code": "patient-refuses"}, "userComment": "PHI maybe"},
            ),
        ]
    }
    assert handle_feedback(body, store) == (200, {}, {"Cache-Control": "no-store"})
    stored = {r["card"]: r for r in rows(engine, feedback)}
    assert stored[main]["matched"] is True
    assert stored[main]["accepted_suggestions"] == [suggestion]
    assert stored["not-in-the-ledger"]["matched"] is False
    overridden = stored[cards[1].uuid]
    assert (overridden["reason_code"], overridden["has_comment"]) == ("patient-refuses", True)
    assert "PHI maybe" not in repr(stored)
    assert overridden["outcome_ts"] == datetime(2025, 6, 2, 9, 1, tzinfo=UTC)
    assert overridden["received_at"] == datetime(2025, 6, 2, 9, 5, tzinfo=UTC)


def test_the_same_entry_is_stored_once(engine: Engine, store: FeedbackStore) -> None:
    same_instant = [
        entry("c1", when="2025-06-02T09:01:00Z"),
        entry("c1", when="2025-06-02T11:01:00+02:00"),
        entry("c1", when="2025-06-02T09:01:00.000Z"),
    ]
    assert store.store_feedback(validate_feedback({"feedback": same_instant})) == 1
    assert store.store_feedback(validate_feedback({"feedback": same_instant})) == 0  # retried batch
    other = [
        entry("c1", when="2025-06-02T09:01:00.001Z"),
        entry("c1", "accepted", acceptedSuggestions=[{"id": "s"}]),
    ]
    assert store.store_feedback(validate_feedback({"feedback": other})) == 2
    assert len(rows(engine, feedback)) == 3


def test_a_batch_of_1000_entries(engine: Engine, store: FeedbackStore) -> None:
    cards = [f"card-{i:04d}" for i in range(1000)]
    record(store, [Card(card, "x", "info", Source("s"), kind="ESCALATE") for card in cards[:500]])
    batch = {
        "feedback": [entry(card, when=f"2025-06-02T09:{i % 60:02d}:00Z") for i, card in enumerate(cards)]
    }
    assert handle_feedback(batch, store)[0] == 200
    assert handle_feedback(batch, store)[0] == 200  # Epic retries the batch
    with engine.connect() as connection:
        total = connection.scalar(select(func.count()).select_from(feedback))
        matched = connection.scalar(select(func.count()).select_from(feedback).where(feedback.c.matched))
    assert (total, matched) == (1000, 500)


def test_an_invalid_entry_stores_nothing(engine: Engine, store: FeedbackStore) -> None:
    batch = {"feedback": [entry("ok-1"), entry("ok-2"), entry("bad", when="not a time")]}
    with pytest.raises(BadRequest) as caught:
        handle_feedback(batch, store)
    assert [i.expression for i in caught.value.issues] == [("feedback[2].outcomeTimestamp",)]
    assert rows(engine, feedback) == []


def test_database_down_is_503_with_retry_after() -> None:
    engine = make_engine(UNREACHABLE_URL)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            handle_feedback({"feedback": [entry("c1")]}, FeedbackStore(engine))
    finally:
        engine.dispose()
    assert caught.value.status == 503
    assert caught.value.headers == {"Retry-After": "5"}


# ----- JWT replay store ----------------------------------------------------------------------
def test_replay_store_accepts_a_jti_once_until_it_expires(engine: Engine) -> None:
    now = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    clock = {"now": now}
    replay = DbReplayStore(engine, clock=lambda: clock["now"])
    expires = now + timedelta(minutes=5)
    assert replay.check_and_record("https://iss", "jti-1", expires) is True
    assert replay.check_and_record("https://iss", "jti-1", expires) is False
    assert replay.check_and_record("https://other", "jti-1", expires) is True
    clock["now"] = expires  # expired at exp: the pair is free again
    assert replay.check_and_record("https://iss", "jti-1", expires + timedelta(minutes=5)) is True
    assert replay.check_and_record("https://iss", "jti-1", expires + timedelta(minutes=5)) is False
    assert replay.prune(expires + timedelta(minutes=5)) == 2
    assert rows(engine, jwt_replay) == []


def test_replay_store_prunes_every_n_inserts(engine: Engine) -> None:
    now = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    replay = DbReplayStore(engine, prune_every=3, clock=lambda: now)
    replay.check_and_record("i", "old", now - timedelta(seconds=1))  # stored already expired
    replay.check_and_record("i", "a", now + timedelta(minutes=1))
    assert len(rows(engine, jwt_replay)) == 2
    replay.check_and_record("i", "b", now + timedelta(minutes=1))  # third insert: prune, in the background
    deadline = time.monotonic() + 10
    while len(rows(engine, jwt_replay)) != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(r["jti"] for r in rows(engine, jwt_replay)) == ["a", "b"]


def test_replay_store_is_atomic_across_connections(any_db_url: str, engine: Engine) -> None:
    """Eight engines (separate connection pools) race on the same jti: exactly one wins."""
    engines = [make_engine(any_db_url) for _ in range(8)]
    expires = datetime.now(UTC) + timedelta(minutes=5)
    start = threading.Barrier(len(engines))
    results: list[bool] = []
    lock = threading.Lock()

    def race(own: Engine) -> None:
        replay = DbReplayStore(own)
        start.wait()
        outcome = replay.check_and_record("https://iss", "raced", expires)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=race, args=(own,)) for own in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for own in engines:
        own.dispose()
    assert sorted(results) == [False] * 7 + [True]


# ----- patient key ---------------------------------------------------------------------------
def test_patient_key_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_patient_keyer(tmp_path / "data")
    secret_file = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert load_patient_keyer(tmp_path / "data")(PATIENT) == first(PATIENT)
    assert first(PATIENT) != first("other") and len(first(PATIENT)) == 64
    assert PATIENT not in first(PATIENT)
    assert secret_file.read_text().strip() not in repr(first)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [SECRET_FILE]


def test_patient_key_from_the_configured_secret(tmp_path: Path) -> None:
    secret = "s" * 32
    keyer = load_patient_keyer(tmp_path, secret)
    assert keyer(PATIENT) == hmac.new(secret.encode(), PATIENT.encode(), hashlib.sha256).hexdigest()
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(PatientKeyError):
        load_patient_keyer(tmp_path, "too-short")


def test_concurrent_first_use_agrees_on_one_secret(tmp_path: Path) -> None:
    script = "import sys, pathlib; from cds_service.record.feedback.patient_key import load_patient_keyer; "
    script += "print(load_patient_keyer(pathlib.Path(sys.argv[1]))('p'))"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert len(keys) == 1
    assert keys == {load_patient_keyer(tmp_path)("p")}


def test_an_unmigrated_database_is_503(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    try:
        with pytest.raises(DatabaseUnavailable):
            handle_feedback({"feedback": [entry("c1")]}, FeedbackStore(engine))
    finally:
        engine.dispose()


def test_patient_key_is_the_hmac_sha256_hex_digest() -> None:
    import hashlib
    import hmac

    for patient_id in ("p-1", "Ünïcode.1", "x" * 64):
        expected = hmac.new(b"k" * 32, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
        assert KEYER(patient_id) == expected
