"""401/403 errors for client authentication and the fhirServer guard, plus start-up configuration errors.

The 401 body is the same for every failure (the reason category goes to the log only); the 403 body names
the check that failed. Neither ever contains a token, a claim value or a URL.
"""

from __future__ import annotations

from typing import Final, Literal

from cds_service.core.errors import Issue, ServiceError

Reason = Literal[
    "expired",
    "bad_signature",
    "bad_audience",
    "replay",
    "unknown_kid",
    "jku_not_allowed",
    "unknown_issuer",
    "missing_token",
    "bad_algorithm",
    "missing_claim",
    "lifetime_too_long",
    "not_yet_valid",
    "issued_in_future",
    "bad_type",
    "malformed",
]
ForbiddenCheck = Literal["issuer", "tenant", "fhirServer"]

UNAUTHORIZED_DIAGNOSTICS: Final = "Client authentication failed: a valid CDS Hooks client JWT is required"
WWW_AUTHENTICATE: Final = {"WWW-Authenticate": "Bearer"}
_FORBIDDEN_DIAGNOSTICS: Final[dict[ForbiddenCheck, str]] = {
    "issuer": "The client (JWT issuer) is not allowed to use this CDS Service",
    "tenant": "The client's tenant is not allowed to use this CDS Service",
    "fhirServer": "fhirServer is not an allowed FHIR server for this client",
}


class Unauthorized(ServiceError):
    """401 with a fixed body; `reason` is for the log line only and never reaches the HTTP answer."""

    headers: Final = WWW_AUTHENTICATE

    def __init__(self, reason: Reason) -> None:
        super().__init__([Issue("login", UNAUTHORIZED_DIAGNOSTICS)], 401)
        self.reason: Reason = reason


class Forbidden(ServiceError):
    """403: authenticated, but the issuer/tenant may not use this service, or fhirServer is not allowed."""

    def __init__(self, check: ForbiddenCheck) -> None:
        expression = ("fhirServer",) if check == "fhirServer" else ()
        super().__init__([Issue("forbidden", _FORBIDDEN_DIAGNOSTICS[check], expression)], 403)
        self.check: ForbiddenCheck = check


class SecurityConfigError(ValueError):
    """The security configuration is invalid; the service must not start. The message is one line."""


def error_headers(error: BaseException) -> dict[str, str]:
    """Extra response headers for an error (`WWW-Authenticate: Bearer` on every 401)."""
    return dict(WWW_AUTHENTICATE) if isinstance(error, Unauthorized) else {}
