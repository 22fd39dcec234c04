"""Pure code and text matching against the knowledge tables (no FHIR objects, no I/O).

Shared by the cheap relevance filter of `fhir.parse` (raw JSON) and by extraction (validated
resources), so that both agree on what counts as a bone-relevant code.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import ATC, ICD10, ICD10CM, ICD_SYSTEMS, LOINC, RXNORM, SNOMED

# Real servers also send code systems as OIDs (HL7 v3 style) or with a trailing slash.
_SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
}
# Every system URI the code tables use, and the aliases real servers send for them.
KNOWN_SYSTEMS = frozenset({ICD10CM, ICD10, SNOMED, LOINC, RXNORM, ATC, *_SYSTEM_ALIASES})
FRACTURE_CONCEPTS = frozenset(
    {
        "hip_fracture",
        "vertebral_fracture",
        "forearm_fracture",
        "humerus_fracture",
        "osteoporotic_fracture",
        "other_fracture_site",
    }
)
# Site of a fracture found by ICD prefix only (code not in the table) -> the table's site concept.
SITE_CONCEPT = {
    "hip_femur": "hip_fracture",
    "vertebra": "vertebral_fracture",
    "forearm": "forearm_fracture",
    "humerus": "humerus_fracture",
}
_CONCEPT_SITE = {concept: site for site, concept in SITE_CONCEPT.items()}
_ICD_CANCER = re.compile(r"^C(\d\d|4A|7A|7B)")
# ICD-10-CM categories with a letter inside the malignant-neoplasm block C00-C96: C4A Merkel cell carcinoma,
# C7A malignant neuroendocrine tumors, C7B secondary neuroendocrine tumors (C7B.03: of bone). Source: the
# ICD-10-CM tabular list, chapter 2 (https://www.icd10data.com/ICD10CM/Codes/C00-D49/C7A-C7A/C7A-/C7A).
_ICD_CM_LETTER_CATEGORIES = frozenset({"4A", "7A", "7B"})
_HISTORY_ICD_PREFIXES = ("Z85", "Z86", "Z87", "Z92")


def canonical_system(system: str | None) -> str:
    """The canonical FHIR URI of a code system (OIDs and trailing slashes normalised)."""
    if not system:
        return ""
    text = system.strip()
    return _SYSTEM_ALIASES.get(text, text.rstrip("/"))


def normalise_code(system: str, code: str | None) -> str:
    """A code as the tables spell it: ICD codes upper case with the dot after the category."""
    if not code:
        return ""
    text = code.strip()
    if system in ICD_SYSTEMS:
        text = text.upper()
        if len(text) > 3 and "." not in text:
            text = f"{text[:3]}.{text[3:]}"
    return text


def is_icd(system: str) -> bool:
    return system in ICD_SYSTEMS


def is_icd_cancer(system: str, code: str) -> bool:
    """ICD-10 / ICD-10-CM C00–C96 (malignant neoplasms), protocol §3b."""
    if system not in ICD_SYSTEMS:
        return False
    match = _ICD_CANCER.match(code)
    if match is None:
        return False
    category = match.group(1)
    return category in _ICD_CM_LETTER_CATEGORIES or int(category) <= 96


def is_snomed_malignancy(system: str, display: str) -> bool:
    return system == SNOMED and "malignan" in display.lower()


def icd_fracture_site(system: str, code: str, knowledge: Knowledge) -> str | None:
    """Fracture site of an ICD code by the knowledge file's prefixes (first match wins).

    Each rule as `PrefixRule.matches` reads it, from a table of the rules that apply to `system`; most
    codes match no rule, which one search of all rules at once tells."""
    table = _icd_site_rules(knowledge).get(system)
    if table is None or (table.any_rule is not None and table.any_rule.match(code) is None):
        return None
    for prefix, pattern, site in table.rules:
        matched = code.startswith(prefix) if pattern is None else pattern.match(code) is not None
        if matched:
            return site
    return None


def is_icd_fracture(system: str, code: str, knowledge: Knowledge) -> bool:
    """`icd_fracture_site(system, code, knowledge) is not None`: some rule matches."""
    return icd_fracture_site(system, code, knowledge) is not None


class _IcdSiteRules(NamedTuple):
    rules: tuple[tuple[str, re.Pattern[str] | None, str], ...]  # (prefix, compiled pattern, site), in order
    # Matches at the start of a code exactly when some rule does; None when the rules cannot be joined
    # into one pattern without changing one (a pattern with groups of its own).
    any_rule: re.Pattern[str] | None


@lru_cache(maxsize=8)
def _icd_site_rules(knowledge: Knowledge) -> dict[str, _IcdSiteRules]:
    """Per ICD system, the fracture-site rules that apply to it in the knowledge file's order.

    Derived from the immutable knowledge only (no patient data), so kept with it."""
    tables: dict[str, _IcdSiteRules] = {}
    for system in sorted(ICD_SYSTEMS):
        rules = tuple(
            (rule.prefix or "", re.compile(rule.pattern) if rule.pattern is not None else None, rule.site)
            for rule in knowledge.model.fracture_sites.icd_prefixes
            if rule.system is None or rule.system == system
        )
        tables[system] = _IcdSiteRules(rules, _any_rule(rules))
    return tables


def _any_rule(rules: tuple[tuple[str, re.Pattern[str] | None, str], ...]) -> re.Pattern[str] | None:
    if not rules or any(pattern is not None and pattern.groups for _, pattern, _ in rules):
        return None
    alternatives = [re.escape(prefix) if pattern is None else pattern.pattern for prefix, pattern, _ in rules]
    try:
        return re.compile("|".join(f"(?:{alternative})" for alternative in alternatives))
    except re.error:  # e.g. a global flag inside one pattern: each rule is then tried on its own
        return None


def snomed_fracture_site(text: str, knowledge: Knowledge) -> str | None:
    """Fracture site from SNOMED display words; `not_counted_words` give `other`."""
    lowered = text.lower()
    for word, site in _snomed_site_words(knowledge):
        if word.search(lowered):
            return site
    return None


@lru_cache(maxsize=8)
def _snomed_site_words(knowledge: Knowledge) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(word at a word start, site): the site words, then the not-counted words (site `other`)."""
    sites = knowledge.model.fracture_sites
    words = [(rule.word, str(rule.site)) for rule in sites.snomed_words]
    words += [(word, "other") for word in sites.not_counted_words]
    return tuple((re.compile(rf"\b{re.escape(word)}"), site) for word, site in words)


def site_of_fracture_concepts(concepts: frozenset[str]) -> str | None:
    for concept, site in _CONCEPT_SITE.items():
        if concept in concepts:
            return site
    return None


# ICD-10-CM fracture 7th characters. A/B/C: initial encounter. D/G/K/P/S (closed or unspecified
# fractures) and E/F/H/J/M/N/Q/R (the open-fracture variants of long-bone categories such as S52, S72,
# S82): a subsequent encounter or sequela, i.e. the same fracture seen again (protocol §2).
_INITIAL_ENCOUNTER = frozenset("ABC")
_SEEN_AGAIN = frozenset("DEFGHJKMNPQRS")


def icd_cm_initial_encounter(system: str, code: str) -> bool | None:
    """ICD-10-CM 7th character: True for an initial encounter, False for the same fracture seen again."""
    if system != ICD10CM:
        return None
    compact = code.replace(".", "")
    if len(compact) != 7:
        return None
    seventh = compact[6]
    if seventh in _INITIAL_ENCOUNTER:
        return True
    if seventh in _SEEN_AGAIN:
        return False
    return None


def is_history_code(system: str, code: str, concepts: frozenset[str], display: str) -> bool:
    """A history-of code: it never dates an event (protocol §3b)."""
    if "history_of_cv_event" in concepts:
        return True
    if system in ICD_SYSTEMS and code.startswith(_HISTORY_ICD_PREFIXES):
        return True
    return "history of" in display.lower()


def is_osteoporotic_icd(system: str, code: str) -> bool:
    return system in ICD_SYSTEMS and code.startswith("M80")


@lru_cache(maxsize=8)
def _ingredient_pattern(knowledge: Knowledge) -> tuple[re.Pattern[str], dict[str, str]]:
    names: dict[str, str] = {}
    names.update(knowledge.medication_names())
    alternatives = sorted(names, key=len, reverse=True)
    body = "|".join(re.escape(name).replace(r"\ ", r"\s+") for name in alternatives)
    # The look-ahead only skips, in one step, the positions where no name can start (every name starts with
    # one of these characters, compared without case as the names are): the matches are the same.
    first = "".join(sorted({re.escape(name[0]) for name in names if name}))
    starts = f"(?=[{first}])" if first and all(names) else ""
    return re.compile(rf"\b{starts}(?:{body})\b", re.IGNORECASE), names


def ingredient_in_text(text: str, knowledge: Knowledge) -> str | None:
    """The agent whose ingredient or brand name appears as a whole word in `text`, if any."""
    if not text:
        return None
    pattern, names = _ingredient_pattern(knowledge)
    match = pattern.search(text)
    if match is None:
        return None
    return names.get(" ".join(match.group(0).lower().split()))


def ingredients_in_text(text: str, knowledge: Knowledge) -> set[str]:
    """Every agent named as a whole word in `text`."""
    if not text:
        return set()
    pattern, names = _ingredient_pattern(knowledge)
    found = {names.get(" ".join(m.group(0).lower().split())) for m in pattern.finditer(text)}
    return {agent for agent in found if agent}


def medication_roles(knowledge: Knowledge) -> dict[str, str]:
    """Table role per ingredient (the non-oncology role when an ingredient has several)."""
    return _medication_roles(knowledge)


@lru_cache(maxsize=8)
def _medication_roles(knowledge: Knowledge) -> dict[str, str]:
    roles: dict[str, str] = {}
    for entry in knowledge.medications.values():
        if entry.role == "oncology_dose":
            roles.setdefault(entry.ingredient, entry.role)
        elif roles.get(entry.ingredient) in (None, "oncology_dose"):
            roles[entry.ingredient] = entry.role
    return roles
