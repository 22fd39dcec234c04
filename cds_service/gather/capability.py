"""The FHIR version a server declares in its CapabilityStatement: only R4 (4.0.x) and R4B (4.3.x) are read."""

from __future__ import annotations

import re
from typing import Any, Final

from cds_service.core.errors import NotR4Server
from cds_service.gather.fhir_urls import SERVER_EXPRESSION

R4_VERSION_PREFIXES: Final = ("4.0.", "4.3.")
R4_REQUIRED_HINT: Final = (
    "FHIR R4 is required. The CDS Hooks sandbox defaults to a DSTU2 server; point it at an R4 server "
    "with ?fhirServiceUrl=https://<your R4 server>"
)

_VERSION_RE: Final = re.compile(r"[0-9A-Za-z.\-]{1,20}")


def r4_version(metadata: dict[str, Any] | None) -> str:
    """The declared fhirVersion when it is R4; NotR4Server otherwise (an unknown version is not echoed)."""
    version = metadata.get("fhirVersion") if metadata is not None else None
    if not isinstance(version, str) or not version.startswith(R4_VERSION_PREFIXES):
        shown = version if isinstance(version, str) and _VERSION_RE.fullmatch(version) else "not stated"
        raise NotR4Server(
            f"The FHIR server's CapabilityStatement declares fhirVersion {shown}. {R4_REQUIRED_HINT}",
            SERVER_EXPRESSION,
            "not-supported",
        )
    return version
