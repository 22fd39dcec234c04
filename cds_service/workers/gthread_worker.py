"""gthread worker with OperationOutcome error responses and a clean drain (see cds_service.workers)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from cds_service.workers import answer_draining, catch_early_term, install

DRAIN_JOIN_S = 5.0


class OperationOutcomeThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """On SIGTERM gunicorn's gthread worker stopped watching its listeners but kept them open while it
    finished its calls (up to graceful_timeout): the kernel went on completing connections into the
    accept queue, and closing the listeners at the end reset every one of them (the client had sent its
    request). Now, as soon as the worker stops accepting, the connections already queued are accepted and
    answered 503 + Retry-After (OperationOutcome, lingering close) on their own threads, and the
    listeners are closed: a later connection meets a closed port (refused, nothing sent; the client
    retries elsewhere), as with the gevent worker's DrainingStreamServer."""

    def init_process(self) -> None:
        catch_early_term(self)
        install()
        self._draining: list[threading.Thread] = []
        super().init_process()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive and not self._draining:
            self._draining = [
                start_thread(answer_draining, client)
                for listener in self.sockets
                for client in queued_connections(listener)
            ]
            self._draining.append(threading.Thread())  # marks the drain done, even with nothing queued
            for listener in self.sockets:
                with contextlib.suppress(OSError):
                    listener.close()

    def run(self) -> None:
        super().run()
        for thread in self._draining:
            if thread.is_alive():
                thread.join(DRAIN_JOIN_S)


def queued_connections(listener: Any) -> list[Any]:
    """Every connection waiting in the listener's accept queue (the listener is non-blocking here)."""
    accepted = []
    with contextlib.suppress(OSError):  # BlockingIOError: the queue is empty
        listener.setblocking(False)
        while True:
            client, _address = listener.accept()
            client.setblocking(True)
            accepted.append(client)
    return accepted


def start_thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name="drain-answer")
    thread.start()
    return thread
