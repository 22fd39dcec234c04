"""SQLite work runs off the gevent event loop when serving with gevent (record/db/off_loop.py): checked in a
child process patched like `cds-service serve`, so this test process keeps the plain standard library."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import create_engine

from cds_service.record.db.off_loop import gevent_patched, run_off_loop

CHILD = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import sys, threading, time
    import gevent
    from gevent.monkey import get_original
    from cds_service.record.db.engine import make_engine
    from cds_service.record.db.off_loop import run_off_loop

    native_ident = get_original("threading", "get_ident")
    loop_thread = native_ident()
    engine = make_engine("sqlite:///" + sys.argv[1])
    postgres = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")

    def blocking() -> int:
        get_original("time", "sleep")(0.3)  # a C-level block, like an fsync
        return native_ident()

    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(100)])
    ran_in = run_off_loop(engine, blocking)
    assert ran_in != loop_thread, "SQLite work ran on the event loop's thread"
    assert len(ticks) >= 10, f"the event loop was blocked ({len(ticks)} ticks in 0.3 s)"
    assert run_off_loop(postgres, native_ident) == loop_thread, "PostgreSQL work stays on the loop"
    try:
        run_off_loop(engine, lambda: 1 / 0)
    except ZeroDivisionError:
        print("ok")
    """
)


def test_sqlite_work_runs_in_a_native_thread_under_gevent(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "db.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_without_gevent_the_work_runs_on_the_callers_thread() -> None:
    assert not gevent_patched()
    engine = create_engine("sqlite://")
    assert run_off_loop(engine, lambda value: value + 1, 41) == 42
