"""Blocking SQLite work off the gevent event loop.

An SQLite commit (with `synchronous=FULL`, as feedback writes: an fsync) and SQLite's busy wait are C
calls: under gevent they hold the worker's whole event loop, so `/healthz` and every other connection of
the worker waited behind each ledger or replay write (measured: `/healthz` p99 100-120 ms under load).
When the standard library is patched by gevent (`cds-service serve` with gevent workers), SQLite work
runs in gevent's pool of native threads and the calling greenlet waits cooperatively. Otherwise (gthread
workers, tests, the CLI) it runs on the caller's thread. PostgreSQL needs no move: psycopg 3 waits on
gevent's patched sockets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

Result = TypeVar("Result")


def run_off_loop(engine: Engine, function: Callable[..., Result], *args: Any) -> Result:
    """`function(*args)`, in a native thread when `engine` is SQLite and gevent has patched threading."""
    if engine.dialect.name != "sqlite" or not gevent_patched():
        return function(*args)
    from gevent import get_hub  # noqa: PLC0415 - only when serving with gevent

    result: Result = get_hub().threadpool.apply(function, args)
    return result


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def start_native_thread(function: Callable[[], None]) -> None:
    """Run `function` in a new OS thread, also under gevent (where `threading.Thread` is a greenlet, which a
    native thread, such as the one an SQLite commit runs in, must never spawn: no loop would run it).
    `function` must touch nothing of the event loop's: only C calls that release the GIL and native locks."""
    _native("_thread", "start_new_thread")(function, ())


def native_lock() -> Any:
    """A lock of the operating system, shared safely between native threads and the event loop's thread."""
    return _native("_thread", "allocate_lock")()


def _native(module: str, name: str) -> Any:
    if gevent_patched():
        from gevent import monkey  # noqa: PLC0415 - only when serving with gevent

        return monkey.get_original(module, name)
    return getattr(__import__(module), name)
