"""SQLite WAL checkpoints run in the background, never inside the commit of a hook call's write."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cds_service.record.db import wal_checkpoint
from cds_service.record.db.engine import make_engine, writer
from cds_service.record.db.wal_checkpoint import (
    AUTOCHECKPOINT_BACKSTOP_PAGES,
    CHECKPOINT_EVERY_COMMITS,
    BackgroundCheckpointer,
)

ROW = "x" * 3000  # most of a page per row: the WAL grows quickly


@pytest.fixture(name="database")
def database_fixture(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite3"


@pytest.fixture(name="engine")
def engine_fixture(database: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{database}")
    with writer(engine).begin() as connection:
        connection.execute(text("CREATE TABLE rows (body TEXT)"))
    yield engine
    engine.dispose()


def _commit_rows(engine: Engine, count: int) -> None:
    for _ in range(count):
        with writer(engine, durable=False).begin() as connection:
            connection.execute(text("INSERT INTO rows (body) VALUES (:body)"), {"body": ROW})


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_the_automatic_checkpoint_is_only_a_backstop(engine: Engine) -> None:
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == AUTOCHECKPOINT_BACKSTOP_PAGES


def test_a_background_checkpoint_copies_the_wal_into_the_database(engine: Engine, database: Path) -> None:
    size_before = database.stat().st_size
    _commit_rows(engine, 2 * CHECKPOINT_EVERY_COMMITS)
    # below the backstop, only a background checkpoint writes pages into the database file itself
    assert _wait_for(lambda: database.stat().st_size > size_before + 50 * 4096)


def test_commits_go_on_while_a_checkpoint_runs_and_only_one_runs_at_a_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started: list[str] = []

    def held_checkpoint(self: BackgroundCheckpointer) -> None:
        started.append(threading.current_thread().name)
        release.wait(10)

    monkeypatch.setattr(BackgroundCheckpointer, "checkpoint_now", held_checkpoint)
    _commit_rows(engine, CHECKPOINT_EVERY_COMMITS)
    assert _wait_for(lambda: len(started) == 1)
    # the held checkpoint does not hold the writers, and no second checkpoint starts meanwhile
    _commit_rows(engine, 3 * CHECKPOINT_EVERY_COMMITS)
    assert len(started) == 1
    release.set()
    assert started == ["wal-checkpoint"]


def test_a_failed_checkpoint_is_logged_by_class_and_retried(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def failing_once(self: BackgroundCheckpointer) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error at /secret/path")

    monkeypatch.setattr(BackgroundCheckpointer, "checkpoint_now", failing_once)
    with caplog.at_level(logging.WARNING, logger=wal_checkpoint.__name__):
        _commit_rows(engine, CHECKPOINT_EVERY_COMMITS)
        assert _wait_for(lambda: "background WAL checkpoint failed (OperationalError)" in caplog.text)
        assert _wait_for(lambda: not _checkpoint_running())
        _commit_rows(engine, CHECKPOINT_EVERY_COMMITS)
        assert _wait_for(lambda: len(calls) == 2)
    assert "/secret/path" not in caplog.text


def _checkpoint_running() -> bool:
    return any(thread.name == "wal-checkpoint" for thread in threading.enumerate())


def test_every_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BackgroundCheckpointer(engine, every=0)
