"""Retention: the card ledger (with its suggestions) and feedback are kept for a configurable number of
days, then deleted in bounded batches; on SQLite the WAL is then checkpointed: PASSIVE in the background
(it never blocks the hook calls' writes), TRUNCATE on demand (`cds-service db prune`, which waits for
writers and shrinks the WAL file to zero bytes).

`CDS_LEDGER_RETENTION_DAYS` / `CDS_FEEDBACK_RETENTION_DAYS` (0 = keep forever). Pruning runs in the
background every `PRUNE_EVERY_WRITES` ledger writes of a worker, and on demand (`cds-service db prune`).
Expired JWT replay rows are pruned by the replay store itself."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Engine, Table, delete, select, text

from cds_service.record.db.engine import is_sqlite, unavailable_on_error, writer
from cds_service.record.db.schema import card_ledger, feedback, jwt_replay

log = logging.getLogger(__name__)

BATCH_ROWS = 5_000
MAX_BATCHES = 200  # one run deletes at most 1 000 000 rows per table; the next run continues


@dataclass(frozen=True)
class Retention:
    ledger_days: int
    feedback_days: int


@dataclass(frozen=True)
class Pruned:
    cards: int
    feedback: int
    replay: int


def prune(engine: Engine, retention: Retention, now: datetime, *, truncate_wal: bool = False) -> Pruned:
    """Delete what is past retention (and expired replay rows); checkpoint the SQLite WAL (`truncate_wal`:
    TRUNCATE, which blocks writers meanwhile; else PASSIVE)."""
    cards = entries = 0
    if retention.ledger_days > 0:
        ledger = card_ledger.c
        cards = _delete_older(
            engine, card_ledger, ledger.uuid, ledger.issued_at, cutoff=_ago(now, retention.ledger_days)
        )
    if retention.feedback_days > 0:
        rows = feedback.c
        entries = _delete_older(
            engine, feedback, rows.id, rows.received_at, cutoff=_ago(now, retention.feedback_days)
        )
    with unavailable_on_error("replay prune"), writer(engine).begin() as connection:
        replay = connection.execute(delete(jwt_replay).where(jwt_replay.c.expires_at <= now)).rowcount
    checkpoint(engine, truncate=truncate_wal)
    if cards or entries:
        log.info("retention: deleted %d ledger cards and %d feedback entries", cards, entries)
    return Pruned(cards=cards, feedback=entries, replay=replay)


def _delete_older(
    engine: Engine, table: Table, key: Column[Any], when: Column[datetime], *, cutoff: datetime
) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        batch = select(key).where(when < cutoff).limit(BATCH_ROWS)
        with unavailable_on_error("retention prune"), writer(engine).begin() as connection:
            count = connection.execute(delete(table).where(key.in_(batch))).rowcount
        deleted += count
        if count < BATCH_ROWS:
            break
    return deleted


def _ago(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)


def checkpoint(engine: Engine, *, truncate: bool = True) -> None:
    """SQLite: copy the WAL into the database (`truncate`: wait for writers, then cut the WAL to 0 bytes)."""
    if not is_sqlite(engine):
        return
    mode = "TRUNCATE" if truncate else "PASSIVE"
    with unavailable_on_error("wal checkpoint"), engine.connect() as connection:
        connection.execute(text(f"PRAGMA wal_checkpoint({mode})"))
