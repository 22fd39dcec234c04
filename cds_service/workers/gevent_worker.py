"""gevent worker with OperationOutcome error responses and a clean drain (see cds_service.workers)."""

from __future__ import annotations

from typing import Any

from gevent.server import StreamServer
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from cds_service.workers import answer_draining, catch_early_term, install


class DrainingStreamServer(StreamServer):  # type: ignore[misc]  # gevent is untyped
    """Closing the listener reset every connection still waiting in its accept queue (the client saw
    ECONNRESET for a request it had sent). On close, those connections are accepted first and answered
    503 + Retry-After; only then is the listener closed. A connection the kernel completes after that
    meets a closed port (connection refused: nothing was sent, the client retries elsewhere)."""

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None and self.pool is not None:
            while (accepted := self.do_read()) is not None:
                self.pool.spawn(answer_draining, accepted[0])
        super().close()


class OperationOutcomeGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    def init_process(self) -> None:
        catch_early_term(self)
        install()
        use_draining_server(ggevent)
        super().init_process()


def use_draining_server(module: Any) -> None:
    """gunicorn's gevent worker builds `StreamServer`s from its module's global (in this worker process)."""
    module.StreamServer = DrainingStreamServer
