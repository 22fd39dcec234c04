"""gthread worker with OperationOutcome error responses (see cds_service.workers)."""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker

from cds_service.workers import catch_early_term, install


class OperationOutcomeThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    def init_process(self) -> None:
        catch_early_term(self)
        install()
        super().init_process()
