"""The issuer's EHR profile applied to rendered cards: one step after the renderer, in the hook pipeline.

The renderer writes cards for the CDS Hooks defaults; this step adapts them to what the calling EHR
accepts, without touching their clinical content:
- `selectionBehavior` as the EHR supports it (`at-most-one` keeps at most one `isRecommended`, cds-resp-1);
- the RxNorm system URI of suggested draft orders (Epic expects `urn:oid:2.16.840.1.113883.6.88`);
- card links only to allowed hosts (Oracle Health strips links not registered with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from cds_service.core.ehr_profile import RXNORM_URL, ResolvedProfile, SelectionBehavior, host_allowed


def apply_profile(
    cards: list[dict[str, Any]], profile: ResolvedProfile, default_behavior: SelectionBehavior
) -> list[dict[str, Any]]:
    """The same cards (changed in place and returned) as `profile` wants them."""
    behavior = profile.selection_behavior or default_behavior
    for card in cards:
        suggestions = card.get("suggestions")
        if isinstance(suggestions, list) and suggestions:
            card["selectionBehavior"] = behavior
            if behavior == "at-most-one":
                _one_recommended(suggestions)
            for coding in _suggested_codings(suggestions):
                if coding.get("system") == RXNORM_URL:
                    coding["system"] = profile.suggestion_code_system
        if profile.allowed_link_hosts is not None and "links" in card:
            kept = [link for link in card["links"] if _link_allowed(link, profile.allowed_link_hosts)]
            if kept:
                card["links"] = kept
            else:
                del card["links"]  # CDS Hooks: an optional field is omitted, never []
    return cards


def _one_recommended(suggestions: list[Any]) -> None:
    seen = False
    for suggestion in suggestions:
        if isinstance(suggestion, dict) and suggestion.get("isRecommended") is True:
            if seen:
                del suggestion["isRecommended"]
            seen = True


def _suggested_codings(suggestions: list[Any]) -> Iterator[dict[str, Any]]:
    for suggestion in suggestions:
        actions = suggestion.get("actions", []) if isinstance(suggestion, dict) else []
        for action in actions:
            resource = action.get("resource") if isinstance(action, dict) else None
            concept = resource.get("medicationCodeableConcept") if isinstance(resource, dict) else None
            codings = concept.get("coding", []) if isinstance(concept, dict) else []
            yield from (coding for coding in codings if isinstance(coding, dict))


def _link_allowed(link: Any, allowed: frozenset[str]) -> bool:
    url = link.get("url") if isinstance(link, dict) else None
    if not isinstance(url, str):
        return False
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and host_allowed(host, allowed)
