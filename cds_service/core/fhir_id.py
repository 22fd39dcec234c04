"""The FHIR R4 `id` rule, in one place: 1-64 letters, digits, '-' and '.' (FHIR R4 datatypes, `id`).

Every layer that checks an id (the CDS Hooks request, FHIR parsing, card rendering) uses this rule, so a
value the request layer accepts can never be refused further down (that mismatch was an HTTP 500).
"""

from __future__ import annotations

import re
from typing import Final

FHIR_ID_MAX_CHARS: Final = 64
FHIR_ID_PATTERN: Final = rf"[A-Za-z0-9\-.]{{1,{FHIR_ID_MAX_CHARS}}}"
_FHIR_ID_RE: Final = re.compile(rf"^{FHIR_ID_PATTERN}$")


def is_fhir_id(value: object) -> bool:
    """True for a string that is a valid FHIR R4 id."""
    return isinstance(value, str) and _FHIR_ID_RE.match(value) is not None
