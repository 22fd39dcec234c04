"""Exceptions that cross layer boundaries, each mapped to one HTTP status by the API layer.

Every error carries an OperationOutcome-ready description: an issue code (FHIR `IssueType`),
a human-readable diagnostic and, where known, the FHIRPath-like `expression` of the bad element.
Messages must never contain PHI, access tokens or JWTs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue."""

    code: str  # FHIR IssueType, e.g. "invalid", "required", "not-found", "exception"
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"


@dataclass
class ServiceError(Exception):
    """Base class: an error with an HTTP status and OperationOutcome issues."""

    issues: list[Issue] = field(default_factory=list)
    status: int = 500

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues) or self.__class__.__name__


class BadRequest(ServiceError):
    """400: the request body is not a valid CDS Hooks request."""

    def __init__(self, diagnostics: str, expression: str | None = None, code: str = "invalid") -> None:
        super().__init__([Issue(code, diagnostics, (expression,) if expression else ())], 400)


class DataUnavailable(ServiceError):
    """412: data the protocol needs could not be obtained (prefetch absent and FHIR fetch failed).

    Never answered with a partial recommendation.
    """

    def __init__(self, diagnostics: str, expression: str | None = None, code: str = "incomplete") -> None:
        super().__init__([Issue(code, diagnostics, (expression,) if expression else ())], 412)


class NotR4Server(DataUnavailable):
    """412: the FHIR server (or the prefetch) is not FHIR R4."""


class InvalidBundle(ValueError):
    """Offline evaluator input is not a usable single-patient Bundle (CLI exit code 2)."""
