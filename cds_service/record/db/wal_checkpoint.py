"""SQLite WAL checkpoints in the background, never inside a caller's commit.

SQLite's automatic checkpoint runs inside whichever commit pushes the WAL past 1,000 pages: that one
caller copies the WAL into the database file and syncs both files, which takes tens of milliseconds on
a real disk, while it holds its worker's fair turn (measured: a 20 ms ledger write every ~100 hook
calls, the rest at about 1 ms). Here each SQLite engine raises the automatic checkpoint to a backstop
(`AUTOCHECKPOINT_BACKSTOP_PAGES`, reached only if background checkpoints keep failing) and, every
`CHECKPOINT_EVERY_COMMITS` commits of this process, starts one PASSIVE checkpoint in a new OS thread
(also under gevent). A PASSIVE checkpoint neither waits for nor blocks readers and
writers: it copies what no reader still needs; the WAL is rewound (and cut to `journal_size_limit`) by
the next write once everything has been copied. At most one runs per engine at a time; a failure is
logged by class and retried at the next interval.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from sqlalchemy import Engine, event

from cds_service.record.db.off_loop import native_lock, start_native_thread

log = logging.getLogger(__name__)

AUTOCHECKPOINT_BACKSTOP_PAGES = 10_000  # about 40 MB of WAL with 4 KiB pages
CHECKPOINT_EVERY_COMMITS = 50  # about 25 hook calls (a replay row and a ledger write each)


class BackgroundCheckpointer:
    """Counts an engine's commits; every `every` commits, a PASSIVE checkpoint in a new OS thread.

    The commit event may run on the event loop's thread or in a native one (`off_loop`), so everything
    here is native: OS locks and threads, and a plain sqlite3 connection of its own, outside the engine's
    pool (whose locks belong to the event loop)."""

    def __init__(self, database: str, *, every: int = CHECKPOINT_EVERY_COMMITS) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self._database = database
        self._every = every
        self._commits = 0
        self._count_lock = native_lock()
        self._running = native_lock()
        self.completed = 0  # checkpoints run to the end (for tests and the curious)

    def committed(self, *_: Any) -> None:
        """The engine's "commit" event: counts, and starts a background checkpoint when one is due."""
        with self._count_lock:
            self._commits += 1
            due = self._commits % self._every == 0
        if due and self._running.acquire(blocking=False):
            start_native_thread(self._run)

    def _run(self) -> None:
        try:
            self.checkpoint_now()
            self.completed += 1
        except Exception as error:  # retried at the next interval; the backstop bounds the WAL meanwhile
            log.warning("background WAL checkpoint failed (%s)", type(error).__name__)
        finally:
            self._running.release()

    def checkpoint_now(self) -> None:
        connection = sqlite3.connect(self._database, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            connection.close()


def checkpoint_in_background(
    engine: Engine, database: str, *, every: int = CHECKPOINT_EVERY_COMMITS
) -> BackgroundCheckpointer:
    """Attach a `BackgroundCheckpointer` to the commits of an engine on the SQLite file `database`."""
    checkpointer = BackgroundCheckpointer(database, every=every)
    event.listen(engine, "commit", checkpointer.committed)
    return checkpointer
