"""What lower layers may know about the verified caller of a hook (wire/auth's AuthContext satisfies it)."""

from __future__ import annotations

from typing import Protocol


class VerifiedCaller(Protocol):
    """The verified client: its issuer entry (None when no JWT was checked) and the fhirServers it lists."""

    @property
    def issuer(self) -> object | None: ...

    @property
    def fhir_servers(self) -> tuple[str, ...]: ...
