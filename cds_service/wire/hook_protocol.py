"""The interface the HTTP layer needs from a CDS Service (kept free of Flask so services can import it)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from cds_service.present.card_model import HookResponse
from cds_service.wire.auth.jwt_verify import AuthContext
from cds_service.wire.cdshooks import PatientViewRequest


class HookService(Protocol):
    """One CDS Service as seen by the HTTP layer."""

    service_id: str

    def descriptor(self) -> dict[str, Any]:
        """Discovery entry: id, hook, title, description, prefetch, usageRequirements."""
        ...

    def handle(
        self,
        request: PatientViewRequest,
        auth: AuthContext,
        turn: Callable[[], AbstractContextManager[object]] = ...,
    ) -> HookResponse:
        """The typed response (cards) for an authenticated caller; may raise ServiceError. The CPU-bound
        part (decision and cards) runs inside `turn()`, the caller's turn in the worker's fair queue."""
        ...

    def protocol_version(self) -> str:
        """Version of the clinical protocol (knowledge) the service applies."""
        ...
