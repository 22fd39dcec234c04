"""The 412 of a failed FHIR request: why the server refused it, and which key it was for.

A refusal's OperationOutcome often echoes the query (patient ids, codes), so its text is never used; its
first `issue.code` (a FHIR IssueType such as `not-supported` or `forbidden`) says why without any PHI.
"""

from __future__ import annotations

import re
from typing import Final

import orjson
import requests

from cds_service.core.errors import DataUnavailable
from cds_service.gather.fhir_urls import SERVER_EXPRESSION

MAX_REFUSAL_BYTES: Final = 64 * 1024
_ISSUE_CODE: Final = re.compile(r"[a-z][a-z-]{1,39}")


def issue_code(body: bytes) -> str | None:
    """The first issue's code of an OperationOutcome body, when it is a plain IssueType token."""
    try:
        parsed = orjson.loads(body[:MAX_REFUSAL_BYTES])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or parsed.get("resourceType") != "OperationOutcome":
        return None
    issues = parsed.get("issue")
    first = issues[0] if isinstance(issues, list) and issues else None
    code = first.get("code") if isinstance(first, dict) else None
    return code if isinstance(code, str) and _ISSUE_CODE.fullmatch(code) else None


def refusal(response: requests.Response, kind: str) -> DataUnavailable:
    """The 412 for a non-2xx answer; a 4xx's OperationOutcome (first 64 KiB) adds its FHIR issue code."""
    code = None
    if 400 <= response.status_code < 500:
        code = issue_code(next(response.iter_content(MAX_REFUSAL_BYTES), b""))
    return DataUnavailable(refusal_text(response.status_code, kind, code), SERVER_EXPRESSION)


def refusal_text(status: int, kind: str, code: str | None) -> str:
    """`The FHIR server answered HTTP 400 (not-supported) to a Observation request`."""
    why = f" ({code})" if code else ""
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return f"The FHIR server answered HTTP {status}{why} to a {kind} request{redirect}"


def relabel(error: DataUnavailable, expression: str) -> DataUnavailable:
    """The same error (same class, diagnostics and code) naming `expression` instead of the server."""
    issue = error.issues[0] if error.issues else None
    if issue is None or issue.expression not in ((), (SERVER_EXPRESSION,)):
        return error
    return type(error)(issue.diagnostics, expression, issue.code)
