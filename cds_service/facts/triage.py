"""Which raw resources are validated: flatten, patient scope, de-duplication, status and relevance.

Two plain loops over the raw dicts, in that order, and nothing else touches them before validation:

1. `collect_kept`: Bundles and Bundle entries flattened, the patient scope applied to the top-level items
   (`patient_scope.belongs_to`, with a fast path for `subject` = `Patient/<id>`), resource types the
   protocol never reads dropped, the first occurrence of each (type, id) kept, and the Medication and
   Device resources indexed for reference look-ups.
2. `select_wanted`: statuses the protocol ignores counted (protocol §2), then relevance to the code tables
   (`RelevanceChecker.is_relevant`) and the lab look-back window (`LabWindow.never_read`).

Decisions are exactly those of the separate filters (patient_scope, relevance, lab_window): this module only
orders the work so that each raw resource is read as few times as possible.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cds_service.facts import relevance
from cds_service.facts.lab_window import LabWindow
from cds_service.facts.parsed_resources import MEDICATION_USE_TYPES
from cds_service.facts.patient_scope import belongs_to

# Kept only when a relevant resource references them.
REFERENCED_TYPES = frozenset({"Medication", "Device"})

_VERIFIED_TYPES = frozenset({"Condition", "AllergyIntolerance"})

# (position among every flattened resource, fullUrl, resource, resourceType)
Item = tuple[int, str | None, dict[str, Any], str]


@dataclass
class Collected:
    """The resources of kept types, first occurrence of each (type, id), in input order."""

    items: list[Item] = field(default_factory=list)  # every kept type but Medication and Device
    referenced_items: list[Item] = field(default_factory=list)  # Medication and Device
    referenced: relevance.ReferencedIndex = field(default_factory=relevance.ReferencedIndex)


def collect_kept(raw: Iterable[Any], kept_types: frozenset[str], patient_id: str | None = None) -> Collected:
    """Flatten `raw` (resources, Bundles, Bundle entries) and keep the resources of `kept_types`.

    With `patient_id`, a top-level item provably about another patient is dropped first (as
    `patient_scope.scoped` does; resources inside a Bundle are not scoped). The position counts every
    resource the flattening yields (kept type or not), as log lines report it.
    """
    out = Collected()
    items = out.items
    seen: set[tuple[str, str]] = set()
    # `subject.reference` == `Patient/<id>` proves the scope (unless the id itself holds `/_history/`).
    own = f"Patient/{patient_id}" if patient_id is not None and "/_history/" not in patient_id else None
    position = -1
    for item in raw:
        if not isinstance(item, dict):
            continue
        rtype = item.get("resourceType")
        if patient_id is not None:
            subject = item.get("subject")
            proven = own is not None and isinstance(subject, dict) and subject.get("reference") == own
            if not (proven and rtype != "Patient") and not belongs_to(item, patient_id):
                continue
        if isinstance(rtype, str) and rtype != "Bundle":  # a plain resource: most items, `_keep` inlined
            position += 1
            if rtype not in kept_types:
                continue
            rid = item.get("id")
            if isinstance(rid, str) and rid:
                key = (rtype, rid)
                if key in seen:
                    continue
                seen.add(key)
            if rtype in REFERENCED_TYPES:
                _keep(out, None, (position, None, item, rtype))
            else:
                items.append((position, None, item, rtype))
            continue
        for full_url, resource in _flatten_one(item):
            position += 1
            kind = resource.get("resourceType")
            if isinstance(kind, str) and kind in kept_types:
                _keep(out, seen, (position, full_url, resource, kind))
    return out


def _keep(out: Collected, seen: set[tuple[str, str]] | None, item: Item) -> None:
    """Keep the first occurrence of each (type, id) (`seen`: None when already checked); index Medication and
    Device resources for references."""
    _, full_url, resource, kind = item
    rid = resource.get("id")
    if seen is not None and isinstance(rid, str) and rid:
        key = (kind, rid)
        if key in seen:
            return
        seen.add(key)
    if kind in REFERENCED_TYPES:
        out.referenced_items.append(item)
        index_of = out.referenced.resources
        if isinstance(rid, str) and rid:
            index_of.setdefault(f"{kind}/{rid}", resource)
        if full_url:
            index_of.setdefault(full_url, resource)
    else:
        out.items.append(item)


def _flatten_one(item: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(fullUrl, resource) of a Bundle's entries, of one Bundle entry, or of a resource."""
    if item.get("resourceType") == "Bundle":
        for entry in item.get("entry") or ():
            yield from _entry_resource(entry)
    elif "resourceType" not in item and "resource" in item:
        yield from _entry_resource(item)
    else:
        yield None, item


def _entry_resource(entry: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    if not isinstance(entry, dict):
        return
    resource = entry.get("resource")
    search = entry.get("search")
    if isinstance(search, dict) and search.get("mode") == "outcome":
        return
    if isinstance(resource, dict):
        full_url = entry.get("fullUrl")
        yield (full_url if isinstance(full_url, str) else None), resource


@dataclass
class Selected:
    """What is validated, in order (`reusable`: not a Medication or Device), and what was only counted."""

    wanted: list[tuple[Item, bool]]
    any_medication: bool
    ignored: dict[str, int]
    checker: relevance.RelevanceChecker


def select_wanted(
    collected: Collected, checker: relevance.RelevanceChecker, window: LabWindow | None
) -> Selected:
    """The entries to validate: relevant, not ignored by status, not a lab the window never reads; then
    the Medication and Device resources a relevant entry references."""
    ignored: dict[str, int] = defaultdict(int)
    any_medication = False
    wanted: list[tuple[Item, bool]] = []
    ignored_by_status, is_relevant = relevance.ignored_by_status, checker.is_relevant
    final_statuses = relevance.OBSERVATION_STATUSES
    verification_memo: dict[tuple[str, str], bool] = {}
    for item in collected.items:
        resource, rtype = item[2], item[3]
        if rtype == "Observation":  # most of a record: its status test inlined
            status = resource.get("status")
            try:
                final = status in final_statuses
            except TypeError:  # a list or object is no status (`ignored_by_status` reads it so)
                final = False
            if not final:
                ignored[rtype] += 1
                continue
        elif rtype in _VERIFIED_TYPES:  # `ignored_by_status` reads only verificationStatus for them
            if relevance.verification_ignored(resource.get("verificationStatus"), verification_memo):
                ignored[rtype] += 1
                continue
        else:
            if rtype in MEDICATION_USE_TYPES and resource.get("status") != "entered-in-error":
                any_medication = True
            if ignored_by_status(resource):
                ignored[rtype] += 1
                continue
        if is_relevant(resource):
            if window is not None and rtype == "Observation" and window.never_read(resource):
                continue
            wanted.append((item, True))
    wanted_references = checker.wanted_references
    for item in collected.referenced_items:
        if relevance.ignored_by_status(item[2]):
            continue
        if any(key in wanted_references for key in lookup_keys(item)):
            wanted.append((item, False))
    return Selected(wanted, any_medication, dict(ignored), checker)


def lookup_keys(item: Item) -> list[str]:
    """`Type/id` and fullUrl of a resource: the keys a reference to it may use."""
    _, full_url, resource, rtype = item
    keys = []
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        keys.append(f"{rtype}/{rid}")
    if full_url:
        keys.append(full_url)
    return keys
