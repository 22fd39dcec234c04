# ruff: noqa: E501 - the protocol item table reads best one item per line
"""Protocol traceability: which tests exercise which protocol item.

Scans tests/**/*.py with the AST (nothing is imported) for `@pytest.mark.protocol("R4", "3c-panels", ...)`
on test functions, on test classes and as module `pytestmark`, and writes docs/protocol-coverage.md: each
protocol item (rules, warnings, §3a missing data, §3b conventions, §3c shapes, §4-§7) -> its description ->
the tests that exercise it.

    python tools/protocol_coverage.py            # rewrite docs/protocol-coverage.md
    python tools/protocol_coverage.py --check    # exit 1 if the doc is stale, an item has no test,
                                                 # or a marker names an unknown item
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = REPO_ROOT / "tests"
DOC_PATH = REPO_ROOT / "docs" / "protocol-coverage.md"

# THE list of protocol items (docs/protocol.md sections in brackets). Order = order in the document.
PROTOCOL_ITEMS: tuple[tuple[str, str], ...] = (
    ("R0", "§3 Deceased -> NOT_APPLICABLE, no cards, no warnings"),
    ("R0b", "§3 No Patient or no birthDate -> INSUFFICIENT_DATA (birth_date)"),
    ("R1", "§3 Age < 50 -> NOT_APPLICABLE"),
    (
        "R2",
        "§3 Skeletal malignancy / bone metastasis, oncology-dose bone agent, or unknown strength with cancer -> SPECIALIST_REVIEW",
    ),
    (
        "R3",
        "§3 An anabolic covers as_of -> ON_ANABOLIC, or SPECIALIST_REVIEW when a clinical exclusion now applies",
    ),
    ("R3c", "§3 A completed anabolic course in the past -> SPECIALIST_REVIEW"),
    (
        "R4",
        "§3 Very high risk (>= 2 distinct vertebral fractures, or a fragility fracture within 2 years) -> VERY_HIGH_RISK_PATHWAY",
    ),
    (
        "R5",
        "§3 High risk not shown (T-score, FRAX MOF, FRAX hip with low mass) -> NOT_ELIGIBLE_NOT_HIGH_RISK / INSUFFICIENT_DATA (bmd_or_frax)",
    ),
    (
        "R6",
        "§3 No first-line anti-resorptive ever -> INSUFFICIENT_DATA (medication_history) / NOT_ELIGIBLE_NO_FIRST_LINE",
    ),
    ("R7", "§3 Therapy start + 33 months after as_of -> NOT_ELIGIBLE_DURATION with reevaluate_from"),
    ("R7f", "§3 No follow-up DXA -> INSUFFICIENT_DATA (followup_dxa)"),
    ("R7h", "§3 Drug holiday before the follow-up DXA -> SPECIALIST_REVIEW"),
    (
        "R7a",
        "§3 Adherence (coverage < 0.80, gap > 90 days, denosumab interval > 213 days) -> NOT_ELIGIBLE_ADHERENCE",
    ),
    ("R8", "§3 Response not assessable (baseline, total hip at both times, scanner change)"),
    (
        "R9a",
        "§3 Secondary cause needing a specialist (calcium above range, hyperparathyroidism types) -> SPECIALIST_REVIEW",
    ),
    ("R9b", "§3 Unexplained raised alkaline phosphatase -> work-up flag; PTH analogues excluded"),
    ("R9c", "§3 Correctable cause (vitamin D < 20, secondary HPT, low calcium) -> correct-first flag"),
    ("R10", "§3 Targets met (TH ΔT >= 0.20 and LS ΔT >= 0.50, or % equivalents) -> RESPONSE_MET"),
    ("R11", "§3 Targets not met but above the personalised target -> CONSIDER, no draft orders"),
    ("R12", "§3 Targets not met, an anabolic not excluded -> ESCALATE (capped at CONSIDER by flags and §3a)"),
    (
        "R13",
        "§3 All anabolics excluded, or prior denosumab >= 12 months with romosozumab excluded -> SPECIALIST_REVIEW",
    ),
    ("RENAL", "§3 Renal gate (eGFR < 30, CKD 4-5/ESRD, dialysis, kidney transplant) -> SPECIALIST_REVIEW"),
    (
        "W-DENOSUMAB_OVERDUE",
        "§1 Warning: last denosumab 60 mg > 213 days and <= 24 months ago without coverage since",
    ),
    (
        "W-ANABOLIC_FOLLOW_ON_MISSING",
        "§1 Warning: anabolic course ended within 12 months without anti-resorptive since",
    ),
    ("3a-blocking", "§3a Blocking missing inputs -> INSUFFICIENT_DATA"),
    ("3a-cap", "§3a Missing inputs that cap ESCALATE at CONSIDER and are listed in missing"),
    ("3a-caveat", "§3a Missing inputs that only add a caveat"),
    (
        "3b-dates",
        "§3b A dateTime's calendar date is its date part as written; Period end is the last covered day",
    ),
    ("3b-icd-category", "§3b WHO ICD-10 and ICD-10-CM share three-character categories"),
    ("3b-cancer", "§3b Cancer diagnosis = C00-C96 or SNOMED malignant neoplasm; bone_malignancy table"),
    (
        "3b-cv-undated",
        "§3b MI/stroke without onset is a caution, never an exclusion, never dated by recordedDate",
    ),
    (
        "3b-labs",
        "§3b Reference bounds from referenceRange else defaults; albumin-corrected calcium; unit conversion",
    ),
    ("3b-months", "§3b D + N months clamps to month end; windows include both ends"),
    ("3b-rounding", "§3b ΔT half-up to 0.01, % change half-up to 0.1, decimal arithmetic"),
    ("3b-therapy-start", "§3b Therapy start = first covered day of the latest first-line episode"),
    (
        "3b-prior-denosumab",
        "§3b Prior denosumab >= 12 months; PTH-analogue caution within 18 months of a dose",
    ),
    (
        "3b-fractures",
        "§3b Counted sites, fragility / possible fragility, distinct vertebral fractures, history-of codes",
    ),
    ("3b-site-unknown", "§3b T-score of undetermined site counts for R5 only; radius/forearm = 1/3 radius"),
    ("3b-sex", "§3b Sex other/unknown/absent ranks as men with romosozumab caution"),
    ("3b-aace", "§3b AACE very-high-risk markers add an info line, do not reroute"),
    ("3c-comparators", "§3c Comparators and numeric valueStrings are values; unreadable strings reported"),
    ("3c-implausible", "§3c Implausible values and dates ignored with a caveat; never a 5xx"),
    ("3c-stopped", "§3c Stopped orders / stopped or on-hold statements document past exposure"),
    (
        "3c-medication-reference",
        "§3c medicationReference resolved: contained, in data, fetched (batched), or by display",
    ),
    ("3c-dose-per-date", "§3c Doses counted per date, never per unit (romosozumab 2 syringes)"),
    ("3c-statement-doses", "§3c A statement with effectiveDateTime for an injectable is one dose"),
    ("3c-brands", "§3c Brand and biosimilar names; a brand decides the strength"),
    ("3c-duplicates", "§3c The same measurement twice is one; a Practitioner is never a scanner"),
    ("3c-undated-history", "§3c Undated vertebral fractures at named different levels count for R4a only"),
    ("3c-panels", "§3c DXA values as components of one panel Observation per scan; queries find them"),
    ("4-coverage", "§4 Exposure and coverage per source, priority per ingredient, ratio and gaps"),
    ("4-oncology", "§4 Oncology doses by product, text or interval; unknown strength caveat"),
    ("4-anabolic-course", "§4 Romosozumab doses, PTH-analogue use, planned end, completed course"),
    ("5-dxa", "§5 Measuring the BMD response: baseline/follow-up, metric, scanner, sides, units, wording"),
    ("6-agents", "§6 Choosing the agent: exclusions, cautions, ranking, status, suggestions"),
    ("7-plan", "§7 Phase plan, follow-on by eGFR, monitoring, personalised target"),
)
ITEM_IDS: frozenset[str] = frozenset(item for item, _ in PROTOCOL_ITEMS)


def _is_protocol_marker(node: ast.expr) -> bool:
    """`pytest.mark.protocol(...)` (also `mark.protocol(...)`)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "protocol"
        and (
            (isinstance(func.value, ast.Attribute) and func.value.attr == "mark")
            or (isinstance(func.value, ast.Name) and func.value.id == "mark")
        )
    )


def _marker_ids(node: ast.expr) -> list[str]:
    """The string ids of one marker expression (a marker call, or a list/tuple of them)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return [item for element in node.elts for item in _marker_ids(element)]
    if not _is_protocol_marker(node):
        return []
    assert isinstance(node, ast.Call)
    return [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def _tests_in(body: list[ast.stmt], prefix: str, inherited: list[str]) -> Iterator[tuple[str, list[str]]]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            ids = [*inherited, *(i for d in node.decorator_list for i in _marker_ids(d))]
            yield f"{prefix}{node.name}", ids
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            ids = [*inherited, *(i for d in node.decorator_list for i in _marker_ids(d))]
            yield from _tests_in(node.body, f"{prefix}{node.name}::", ids)


def scan_file(path: Path) -> list[tuple[str, list[str]]]:
    """(test name, protocol ids) for every test function in a file (module `pytestmark` included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_ids: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            module_ids.extend(_marker_ids(node.value))
    return list(_tests_in(tree.body, "", module_ids))


def collect(tests_dir: Path = TESTS_DIR) -> dict[str, list[str]]:
    """Protocol id -> sorted test ids (`tests/file.py::name`), for every id used by a marker."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(tests_dir.rglob("test_*.py")):
        relative = path.relative_to(tests_dir.parent).as_posix()
        for name, ids in scan_file(path):
            for item in ids:
                found[item].add(f"{relative}::{name}")
    return {item: sorted(tests) for item, tests in found.items()}


def unknown_ids(found: dict[str, list[str]]) -> dict[str, list[str]]:
    return {item: tests for item, tests in found.items() if item not in ITEM_IDS}


def empty_items(found: dict[str, list[str]]) -> list[str]:
    return [item for item, _ in PROTOCOL_ITEMS if not found.get(item)]


def render(found: dict[str, list[str]]) -> str:
    lines = [
        "# Protocol coverage",
        "",
        "Generated by `tools/protocol_coverage.py` from the `@pytest.mark.protocol(...)` markers in `tests/`;",
        "do not edit by hand (`python tools/protocol_coverage.py` rewrites it, "
        "`tests/test_protocol_coverage.py` fails when it is stale or an item has no test).",
        "",
        "| Item | Description | Tests |",
        "|---|---|---|",
    ]
    for item, description in PROTOCOL_ITEMS:
        tests = found.get(item, [])
        cell = "<br>".join(f"`{t}`" for t in tests) if tests else "**none**"
        lines.append(f"| {item} | {description.replace('|', '/')} | {cell} |")
    covered = sum(1 for item, _ in PROTOCOL_ITEMS if found.get(item))
    lines += ["", f"{covered} of {len(PROTOCOL_ITEMS)} items have at least one test.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail when the doc is stale or an item has no test"
    )
    args = parser.parse_args(argv)
    found = collect()
    text = render(found)
    problems = [f"unknown protocol id {item!r} in {tests[0]}" for item, tests in unknown_ids(found).items()]
    if args.check:
        if not DOC_PATH.is_file() or DOC_PATH.read_text(encoding="utf-8") != text:
            problems.append(
                f"{DOC_PATH.relative_to(REPO_ROOT)} is out of date: run python tools/protocol_coverage.py"
            )
        problems += [f"protocol item {item} has no test" for item in empty_items(found)]
    else:
        DOC_PATH.write_text(text, encoding="utf-8")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
