"""Read-only views of the shared code tables that the metamorphic transforms need.

Equivalent condition codes come ONLY from cds_service/knowledge/codes/conditions.csv: two codes are
interchangeable when the table gives them exactly the same set of concepts (the engine's meaning of a
code is its concept set). Between ICD-10-CM and WHO ICD-10 the pairing is structural (the WHO code is a
prefix of the CM code, protocol §3b shared categories); between SNOMED CT and ICD the pairs are listed
by hand below and checked against the table when this module is imported.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CODES_DIR = REPO_ROOT / "cds_service" / "knowledge" / "codes"

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# SNOMED CT <-> ICD pairs, each code present in conditions.csv with the same concept set (checked below).
SNOMED_ICD_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("22298006", ICD10CM, "I21.4"),
    ("22298006", ICD10, "I21.4"),
    ("230690007", ICD10CM, "I63.9"),
    ("230690007", ICD10, "I63.9"),
    ("94222008", ICD10CM, "C79.51"),
    ("94222008", ICD10, "C79.5"),
)


@cache
def condition_concepts() -> dict[tuple[str, str], frozenset[str]]:
    """(system, code) -> the set of concepts the table gives that code."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    with (CODES_DIR / "conditions.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            found[(row["system"], row["code"])].add(row["concept"])
    return {key: frozenset(value) for key, value in found.items()}


@cache
def observation_kinds() -> dict[tuple[str, str], tuple[str, str]]:
    """(system, code) -> (kind, site) from observations.csv (t_score, bmd, egfr, calcium, ...)."""
    kinds: dict[tuple[str, str], tuple[str, str]] = {}
    with (CODES_DIR / "observations.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            kinds.setdefault((row["system"], row["code"]), (row["kind"], row["site"]))
    return kinds


@cache
def medication_ingredients() -> dict[tuple[str, str], str]:
    """(system, code) -> ingredient from medications.csv."""
    found: dict[tuple[str, str], str] = {}
    with (CODES_DIR / "medications.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            found.setdefault((row["system"], row["code"]), row["ingredient"])
    return found


def _check_pairs() -> None:
    table = condition_concepts()
    for snomed, system, code in SNOMED_ICD_PAIRS:
        left, right = table.get((SNOMED, snomed)), table.get((system, code))
        if left is None or right is None or left != right:
            raise AssertionError(
                f"SNOMED {snomed} and {system}|{code} are not the same concept in conditions.csv"
            )


_check_pairs()


def condition_equivalents(system: str, code: str) -> list[tuple[str, str]]:
    """Codes in OTHER systems with exactly the same concept set as (system, code), per the table."""
    table = condition_concepts()
    concepts = table.get((system, code))
    if not concepts:
        return []
    found: list[tuple[str, str]] = []
    if system == ICD10CM:
        bare = code.upper()
        prefixes = [bare[:n] for n in range(len(bare), 2, -1)]
        for prefix in prefixes:
            if table.get((ICD10, prefix)) == concepts:
                found.append((ICD10, prefix))
                break
    if system == ICD10:
        for (other_system, other_code), other in sorted(table.items()):
            # the initial-encounter form when the CM code has a 7th character
            initial = len(other_code.replace(".", "")) < 7 or other_code.endswith("A")
            if other_system == ICD10CM and other == concepts and other_code.startswith(code) and initial:
                found.append((ICD10CM, other_code))
                break
    for snomed, pair_system, pair_code in SNOMED_ICD_PAIRS:
        if system == SNOMED and code == snomed:
            found.append((pair_system, pair_code))
        elif (system, code) == (pair_system, pair_code):
            found.append((SNOMED, snomed))
    return list(dict.fromkeys(found))
