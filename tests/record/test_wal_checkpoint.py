"""SQLite WAL checkpoints run in the background, never inside the commit of a hook call's write."""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from tests.support.fixtures import hook_request
from tests.support.serve_process import free_port, serve_env, start_serve, wait_until_healthy

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
    started: list[int] = []

    def held_checkpoint(self: BackgroundCheckpointer) -> None:
        started.append(threading.get_ident())
        release.wait(10)

    monkeypatch.setattr(BackgroundCheckpointer, "checkpoint_now", held_checkpoint)
    _commit_rows(engine, CHECKPOINT_EVERY_COMMITS)
    assert _wait_for(lambda: len(started) == 1)
    # the held checkpoint does not hold the writers, and no second checkpoint starts meanwhile
    _commit_rows(engine, 3 * CHECKPOINT_EVERY_COMMITS)
    assert len(started) == 1
    release.set()
    assert started[0] != threading.get_ident(), "the checkpoint ran in a thread of its own"


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
        for _ in range(10):  # the next due checkpoint runs (one may be skipped while the failed one ends)
            _commit_rows(engine, CHECKPOINT_EVERY_COMMITS)
            if _wait_for(lambda: len(calls) >= 2, seconds=1):
                break
    assert len(calls) >= 2
    assert "/secret/path" not in caplog.text


def test_every_must_be_positive(database: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BackgroundCheckpointer(str(database), every=0)


def test_under_gevent_serving_checkpoints_run_in_the_background_and_every_call_is_answered(
    tmp_path: Path,
) -> None:
    """The commit event fires inside gevent's native threads: what it starts must not be a greenlet (a
    greenlet spawned there never ran, held the checkpoint lock forever and stalled the pool)."""
    port = free_port()
    env = serve_env(
        tmp_path,
        port,
        CDS_WORKERS="2",
        CDS_WORKER_CLASS="gevent",
        CDS_CLIENT_RATE_LIMIT="",
        CDS_CLIENT_MAX_IN_FLIGHT="0",
    )
    log_path = tmp_path / "serve.log"
    process = start_serve(env, log_path)
    database = tmp_path / "cds-service.sqlite3"
    body = json.dumps(hook_request("s01", with_prefetch=True)).encode()
    try:
        wait_until_healthy(port, process, log_path)
        size_before = database.stat().st_size
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: _post(port, body), range(6 * CHECKPOINT_EVERY_COMMITS)))
        grew = _wait_for(lambda: database.stat().st_size > size_before)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert statuses == [200] * len(statuses)
    assert grew, "no background checkpoint copied the WAL into the database"
    assert "checkpoint failed" not in log_path.read_text()


def _post(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/cds-services/osteoporosis-escalation", body, {"Content-Type": "application/json"}
        )
        return connection.getresponse().status
    finally:
        connection.close()
