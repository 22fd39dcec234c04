"""Why a FHIR server refused a query, in words safe to log and to return: the FHIR issue code only.

A refusal's OperationOutcome often echoes the query (patient ids, codes), so its text is never used; its
first `issue.code` (a FHIR IssueType such as `not-supported` or `forbidden`) says why without any PHI.
"""

from __future__ import annotations

import re
from typing import Final

import orjson

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


def refusal_text(status: int, kind: str, code: str | None) -> str:
    """`The FHIR server answered HTTP 400 (not-supported) to a Observation request`."""
    why = f" ({code})" if code else ""
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return f"The FHIR server answered HTTP {status}{why} to a {kind} request{redirect}"
