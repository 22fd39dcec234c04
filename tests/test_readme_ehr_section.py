"""The README's "Connect to an EHR" section stays in step with the code.

The 401 reason categories are collected from the code (every `_Refused("...")` in jwt_verify.py and the
`Reason` literal), so a new category fails this test until the troubleshooting table explains it. The fixed
401/403 bodies and the 412 reasons that are module constants must be quoted verbatim.
"""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

from cds_service.core import security_errors
from cds_service.core.security_errors import UNAUTHORIZED_DIAGNOSTICS, Reason
from cds_service.gather.capability import R4_REQUIRED_HINT
from cds_service.wire.service import NO_AUTHORIZATION_REASON, NO_SERVER_REASON

ROOT = Path(__file__).resolve().parents[1]
SECTION_TITLE = "## Connect to an EHR"
TROUBLESHOOTING = "### Troubleshooting"
VENDORS = ("Epic", "Oracle Health", "sandbox (public)", "sandbox (built locally)", "SMART launcher")


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION_TITLE + "\n" in readme, "the README has no 'Connect to an EHR' section"
    body = readme.split(SECTION_TITLE + "\n", 1)[1]
    return body.split("\n## ", 1)[0]


def _subsections() -> dict[str, str]:
    parts = re.split(r"^### (.+)$", _section(), flags=re.MULTILINE)
    return {title.strip(): text for title, text in zip(parts[1::2], parts[2::2], strict=True)}


def _troubleshooting_rows() -> list[str]:
    table = _subsections()[TROUBLESHOOTING.removeprefix("### ")]
    return [line for line in table.splitlines() if line.startswith("|")]


def _refusal_reasons_in_code() -> set[str]:
    """Every reason passed to `_Refused(...)` in jwt_verify.py, plus the `Reason` literal's values."""
    source = (ROOT / "cds_service" / "wire" / "auth" / "jwt_verify.py").read_text(encoding="utf-8")
    reasons: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_Refused"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            reasons.add(node.args[0].value)
    return reasons | set(typing.get_args(Reason))


def test_the_section_exists_and_the_old_title_is_gone() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION_TITLE + "\n" in readme
    assert "## Connecting an EHR" not in readme
    assert "## Two commands" in readme


def test_reasons_are_collected_from_the_code() -> None:
    reasons = _refusal_reasons_in_code()
    assert {"bad_audience", "unknown_issuer", "replay"} <= reasons
    assert len(reasons) >= 10


def test_every_401_reason_the_code_can_emit_is_in_the_troubleshooting_table() -> None:
    rows = [row for row in _troubleshooting_rows() if row.startswith("| 401 ")]
    missing = sorted(r for r in _refusal_reasons_in_code() if not any(f"`{r}`" in row for row in rows))
    assert missing == []


@pytest.mark.parametrize(
    "message",
    [
        UNAUTHORIZED_DIAGNOSTICS,
        *security_errors._FORBIDDEN_DIAGNOSTICS.values(),  # the exact 403 bodies
        NO_AUTHORIZATION_REASON,
        NO_SERVER_REASON,
        R4_REQUIRED_HINT,
    ],
)
def test_fixed_failure_messages_are_quoted_verbatim(message: str) -> None:
    assert message in _section()


def test_every_vendor_subsection_cites_an_https_source() -> None:
    subsections = _subsections()
    for vendor in VENDORS:
        titles = [title for title in subsections if vendor in title]
        assert titles, f"no subsection for {vendor}"
        for title in titles:
            sources = [line for line in subsections[title].splitlines() if line.startswith("Sources:")]
            assert sources, f"{title}: no 'Sources:' line"
            assert re.search(r"https://\S+", subsections[title].split("Sources:", 1)[1]), title
