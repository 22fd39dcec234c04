"""Which parts of the decision object (protocol §9) a meaning-preserving transform must keep.

DECIDING_FIELDS must be equal for every meaning-preserving transform: outcome, rule, as_of,
protocol_version, reevaluate_from, warnings, missing, each agent's (agent, rank, status) and each
follow-on agent's (agent, status).
For `syntactic` transforms (encoding only) `reasons` must be equal too.
`caveats` may legitimately GAIN shape-specific lines (e.g. "identified by name", "adherence not
verifiable"), so they are never compared for equality; for syntactic transforms no caveat may be LOST.
"""

from __future__ import annotations

from typing import Any

DECIDING_FIELDS: tuple[str, ...] = (
    "outcome",
    "rule",
    "as_of",
    "protocol_version",
    "reevaluate_from",
    "warnings",
    "missing",
    "agents",
    "follow_on",
)


def deciding_view(decision: dict[str, Any]) -> dict[str, Any]:
    """The fields a meaning-preserving transform must not change, normalised for comparison."""
    return {
        "outcome": decision.get("outcome"),
        "rule": decision.get("rule"),
        "as_of": decision.get("as_of"),
        "protocol_version": decision.get("protocol_version"),
        "reevaluate_from": decision.get("reevaluate_from"),
        "warnings": sorted(decision.get("warnings") or []),
        "missing": sorted(decision.get("missing") or []),
        "agents": [(a.get("agent"), a.get("rank"), a.get("status")) for a in decision.get("agents") or []],
        "follow_on": [(f.get("agent"), f.get("status")) for f in decision.get("follow_on") or []],
    }


def differences(expected: dict[str, Any], got: dict[str, Any], *, strict: bool) -> list[str]:
    """Human-readable differences: `field: expected X, got Y` (empty when equal)."""
    want, have = deciding_view(expected), deciding_view(got)
    found = [
        f"{name}: expected {want[name]!r}, got {have[name]!r}"
        for name in DECIDING_FIELDS
        if want[name] != have[name]
    ]
    if strict:
        if list(expected.get("reasons") or []) != list(got.get("reasons") or []):
            found.append(f"reasons: expected {expected.get('reasons')!r}, got {got.get('reasons')!r}")
        lost = [c for c in expected.get("caveats") or [] if c not in (got.get("caveats") or [])]
        if lost:
            found.append(f"caveats: lost {lost!r}")
    return found


def failure_message(transform: str, scenario: str, path: str, diffs: list[str]) -> str:
    lines = "\n  ".join(diffs)
    return f"transform {transform} x scenario {scenario} ({path}) changed the decision:\n  {lines}"
