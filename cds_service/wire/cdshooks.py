"""CDS Hooks 2.0 wire format: request models with 400-level validation, and response helpers."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from cds_service.core.errors import BadRequest, Issue, ServiceError
from cds_service.core.fhir_id import FHIR_ID_MAX_CHARS, FHIR_ID_PATTERN, is_fhir_id
from cds_service.core.json_empty import drop_empty

PATIENT_VIEW = "patient-view"

_USER_ID_RE = re.compile(rf"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/{FHIR_ID_PATTERN}$")
_HTTP_URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_Model = TypeVar("_Model", bound=BaseModel)
_PRE_1_0_FIELDS = {"user": "context.userId", "patient": "context.patientId"}


class _WireModel(BaseModel):
    """Strict JSON types; unknown fields are kept but never required (Epic and others add fields)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class FhirAuthorization(_WireModel):
    access_token: str = Field(min_length=1, repr=False)
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("must be 'Bearer'")
        return value


class PatientViewContext(_WireModel):
    userId: str  # noqa: N815 - CDS Hooks wire name
    patientId: str  # noqa: N815
    encounterId: str | None = None  # noqa: N815

    @field_validator("userId")
    @classmethod
    def _user_reference(cls, value: str) -> str:
        if not _USER_ID_RE.match(value):
            raise ValueError(
                "must be Practitioner/<id>, PractitionerRole/<id>, Patient/<id> or RelatedPerson/<id>"
            )
        return value

    @field_validator("patientId", "encounterId")
    @classmethod
    def _fhir_id(cls, value: str | None) -> str | None:
        if value is not None and not is_fhir_id(value):
            raise ValueError(f"must be a FHIR id (1-{FHIR_ID_MAX_CHARS} letters, digits, '-' and '.')")
        return value


class PatientViewRequest(_WireModel):
    hook: str
    # A UUID per the spec; any printable token up to 128 characters is accepted (stored in the ledger).
    hookInstance: str = Field(min_length=1, max_length=128, pattern=r"^[!-~]+$")  # noqa: N815
    fhirServer: str | None = None  # noqa: N815
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815
    context: PatientViewContext
    prefetch: dict[str, dict[str, Any] | None] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("hook")
    @classmethod
    def _patient_view(cls, value: str) -> str:
        if value != PATIENT_VIEW:
            raise ValueError(f"this service answers the '{PATIENT_VIEW}' hook only")
        return value

    @field_validator("fhirServer")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL_RE.match(value):
            raise ValueError("must be an absolute http(s) URL")
        return value


class AcceptedSuggestion(_WireModel):
    id: str = Field(min_length=1)


class FeedbackEntry(_WireModel):
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: str  # noqa: N815
    acceptedSuggestions: list[AcceptedSuggestion] | None = None  # noqa: N815
    overrideReason: dict[str, Any] | None = None  # noqa: N815

    @field_validator("outcomeTimestamp")
    @classmethod
    def _date_time(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an RFC 3339 date-time") from None
        return value


class FeedbackRequest(_WireModel):
    feedback: list[FeedbackEntry]


def parse_patient_view_request(body: Any) -> PatientViewRequest:
    """Validate a decoded JSON body; raise BadRequest naming each bad element in `expression`."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="structure")
    _reject_pre_1_0_shapes(body)
    if body.get("fhirAuthorization") is not None and body.get("fhirServer") is None:
        raise BadRequest("fhirServer is required when fhirAuthorization is present", "fhirServer", "required")
    return _validate(PatientViewRequest, body)


def parse_feedback_request(body: Any) -> FeedbackRequest:
    """Validate a feedback body `{"feedback": [...]}`; raise BadRequest naming the bad element."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="structure")
    return _validate(FeedbackRequest, body)


def _reject_pre_1_0_shapes(body: dict[str, Any]) -> None:
    if isinstance(body.get("context"), list):
        raise BadRequest(
            "context must be a JSON object; the pre-1.0 array form is not supported", "context", "structure"
        )
    for old, new in _PRE_1_0_FIELDS.items():
        if old in body:
            raise BadRequest(
                f"top-level '{old}' is a pre-1.0 CDS Hooks field; CDS Hooks 2.0 sends {new}",
                old,
                "not-supported",
            )


def _validate(model: type[_Model], body: dict[str, Any]) -> _Model:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise _bad_request(error) from None


def _bad_request(error: ValidationError) -> BadRequest:
    details = error.errors(include_url=False, include_input=False, include_context=False)
    first, *rest = [_issue(detail) for detail in details]
    bad = BadRequest(first.diagnostics, first.expression[0] if first.expression else None, first.code)
    bad.issues.extend(issue for issue in rest if issue not in bad.issues)
    return bad


def _issue(detail: ErrorDetails) -> Issue:
    expression = _expression(detail["loc"])
    kind = detail["type"]
    message = detail["msg"].removeprefix("Value error, ")
    where = expression or "the request body"
    if kind == "missing":
        return Issue("required", f"{where} is required", (expression,) if expression else ())
    if kind in ("value_error", "literal_error", "string_too_short"):
        return Issue("value", f"{where}: {message}", (expression,) if expression else ())
    return Issue("structure", f"{where}: {_type_message(kind, message)}", (expression,) if expression else ())


def _type_message(kind: str, message: str) -> str:
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a JSON object"
    if kind == "list_type":
        return "must be a JSON array"
    if kind == "string_type":
        return "must be a JSON string"
    if kind.startswith("int_"):
        return "must be a JSON integer"
    return message


def _expression(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def operation_outcome(error: ServiceError) -> dict[str, Any]:
    """The FHIR OperationOutcome body for an error (at least one issue; optional fields omitted)."""
    issues = error.issues or [Issue("exception", str(error))]
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            drop_empty(
                {
                    "severity": issue.severity,
                    "code": issue.code,
                    "diagnostics": issue.diagnostics,
                    "expression": list(issue.expression),
                }
            )
            for issue in issues
        ],
    }
