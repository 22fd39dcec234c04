"""The card ledger (what was shown) and the feedback store (what the clinician did with it).

Every write is one transaction; SQLite writers take the lock first (BEGIN IMMEDIATE). Feedback is
idempotent on (card, outcome, outcome_ts): a retried or re-batched entry is stored once.
Connection, lock and pool failures raise DatabaseUnavailable (503).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from cds_service.present.card_model import Card
from cds_service.record.db.engine import insert_for, unavailable_on_error, writer
from cds_service.record.db.off_loop import run_off_loop
from cds_service.record.db.retention import Pruned, Retention, prune
from cds_service.record.db.schema import card_ledger, card_suggestion, feedback
from cds_service.record.feedback.validate import FeedbackItem

log = logging.getLogger(__name__)

UNKNOWN = "UNKNOWN"
PRUNE_EVERY_WRITES = 1_000
MAX_HOOK_INSTANCE_CHARS = 128
_LOOKUP_CHUNK = 500


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IssuedSuggestion:
    uuid: str
    agent: str
    is_recommended: bool


@dataclass(frozen=True)
class IssuedCard:
    uuid: str
    kind: str  # outcome or warning code
    rule: str | None
    suggestions: tuple[IssuedSuggestion, ...]


def issued_cards(cards: Iterable[Card]) -> list[IssuedCard]:
    """Ledger entries of typed cards (cards.render_cards output): kind, rule and each suggestion's agent."""
    return [
        IssuedCard(
            card.uuid,
            card.kind,
            card.rule,
            tuple(IssuedSuggestion(s.uuid, s.agent or UNKNOWN, s.is_recommended) for s in card.suggestions),
        )
        for card in cards
        if card.uuid
    ]


class FeedbackStore:
    """Card ledger and feedback on one engine (one per process; the engine pools connections)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _utcnow,
        retention: Retention | None = None,
        prune_every: int = PRUNE_EVERY_WRITES,
    ) -> None:
        self.engine = engine
        self._writer = writer(engine)
        # The ledger is written on every hook call: synchronous=NORMAL (survives SIGKILL, not a power loss;
        # docs/operations.md). Feedback, the clinician's acknowledged answer, keeps an fsync per commit.
        self._ledger_writer = writer(engine, durable=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._ledger_failures = 0
        self._retention = retention
        self._prune_every = max(1, prune_every)
        self._writes = 0
        self._pruning = threading.Lock()
        self._ledger_statements: tuple[Any, Any] | None = None

    def prune(self) -> Pruned | None:
        """Apply the retention now (None without a retention or while another prune runs)."""
        if self._retention is None or not self._pruning.acquire(blocking=False):
            return None
        try:
            pruned: Pruned = run_off_loop(self.engine, prune, self.engine, self._retention, self._clock())
            return pruned
        finally:
            self._pruning.release()

    def _count_write(self) -> None:
        """Every `prune_every` ledger writes, prune in the background (never on the caller's thread)."""
        with self._lock:
            self._writes += 1
            due = self._retention is not None and self._writes % self._prune_every == 0
        if due:
            threading.Thread(target=self._prune_quietly, name="retention", daemon=True).start()

    def _prune_quietly(self) -> None:
        try:
            self.prune()
        except Exception as error:  # a failed prune is retried at the next interval
            log.warning("retention prune failed (%s)", type(error).__name__)

    @property
    def ledger_failures(self) -> int:
        """Ledger writes that failed in this process (the cards were still returned)."""
        return self._ledger_failures

    def count_ledger_failure(self) -> int:
        with self._lock:
            self._ledger_failures += 1
            return self._ledger_failures

    def record_cards(
        self,
        entries: Sequence[IssuedCard],
        *,
        hook_instance: str,
        patient_key: str,
        protocol_version: str,
        service_version: str,
        issued_at: datetime,
    ) -> int:
        """Record the cards of one hook response (see `issued_cards`); returns how many were recorded."""
        if not entries:
            return 0
        ledger_rows = [
            {
                "uuid": card.uuid,
                "kind": card.kind,
                "rule": card.rule,
                "protocol_version": protocol_version,
                "service_version": service_version,
                "hook_instance": hook_instance[:MAX_HOOK_INSTANCE_CHARS],
                "patient_key": patient_key,
                "issued_at": issued_at,
            }
            for card in entries
        ]
        suggestion_rows = [
            {
                "card_uuid": card.uuid,
                "suggestion_uuid": s.uuid,
                "agent": s.agent,
                "is_recommended": s.is_recommended,
            }
            for card in entries
            for s in card.suggestions
        ]
        run_off_loop(self.engine, self._write_ledger, ledger_rows, suggestion_rows)
        self._count_write()
        return len(entries)

    def _write_ledger(self, ledger_rows: list[dict[str, Any]], suggestion_rows: list[dict[str, Any]]) -> None:
        with unavailable_on_error("card ledger write"), self._ledger_writer.begin() as connection:
            ledger, linked = self._ledger_inserts(connection)
            connection.execute(ledger, ledger_rows)
            if suggestion_rows:
                connection.execute(linked, suggestion_rows)

    def _ledger_inserts(self, connection: Connection) -> tuple[Any, Any]:
        """The two INSERT ... ON CONFLICT DO NOTHING of a ledger write, built once (on first use): the rows
        are bound at execution, so SQLAlchemy reuses their cache keys and compiled forms."""
        if self._ledger_statements is None:
            self._ledger_statements = (
                insert_for(connection, card_ledger).on_conflict_do_nothing(
                    index_elements=[card_ledger.c.uuid]
                ),
                insert_for(connection, card_suggestion).on_conflict_do_nothing(
                    index_elements=[card_suggestion.c.card_uuid, card_suggestion.c.suggestion_uuid]
                ),
            )
        return self._ledger_statements

    def store_feedback(self, entries: Sequence[FeedbackItem], *, received_at: datetime | None = None) -> int:
        """Store a validated batch in one transaction; returns how many entries were new."""
        first_of: dict[tuple[str, str, datetime], FeedbackItem] = {}
        for entry in entries:
            first_of.setdefault(entry.key, entry)
        unique = list(first_of.values())
        if not unique:
            return 0
        received = received_at or self._clock()
        stored: int = run_off_loop(self.engine, self._write_feedback, unique, received)
        return stored

    def _write_feedback(self, unique: list[FeedbackItem], received: datetime) -> int:
        with unavailable_on_error("feedback write"), self._writer.begin() as connection:
            known = _known_cards(connection, {entry.card for entry in unique})
            rows = [_feedback_row(entry, entry.card in known, received) for entry in unique]
            statement = (
                insert_for(connection, feedback)
                .on_conflict_do_nothing(
                    index_elements=[feedback.c.card, feedback.c.outcome, feedback.c.outcome_ts]
                )
                .returning(feedback.c.id)
            )
            return len(connection.execute(statement, rows).all())


def _known_cards(connection: Connection, cards: set[str]) -> set[str]:
    ordered = sorted(cards)
    known: set[str] = set()
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        chunk = ordered[start : start + _LOOKUP_CHUNK]
        known.update(connection.scalars(select(card_ledger.c.uuid).where(card_ledger.c.uuid.in_(chunk))))
    return known


def _feedback_row(entry: FeedbackItem, matched: bool, received_at: datetime) -> dict[str, Any]:
    reason = entry.reason
    return {
        "card": entry.card,
        "outcome": entry.outcome,
        "outcome_ts": entry.outcome_ts,
        "received_at": received_at,
        "matched": matched,
        "accepted_suggestions": list(entry.accepted_suggestions),
        "reason_system": reason.system if reason else None,
        "reason_code": reason.code if reason else None,
        "reason_display": reason.display if reason else None,
        "has_comment": bool(reason and reason.has_comment),
    }
