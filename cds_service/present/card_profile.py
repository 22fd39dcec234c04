"""The issuer's EHR profile applied to rendered cards: one step after the renderer, in the hook pipeline.

The renderer writes typed cards for the CDS Hooks defaults; this step adapts them in place to what the
calling EHR accepts, without touching their clinical content:
- `selectionBehavior` as the EHR supports it (`at-most-one` keeps at most one `isRecommended`, cds-resp-1);
- the RxNorm system URI of suggested draft orders (Epic expects `urn:oid:2.16.840.1.113883.6.88`);
- card links only to allowed hosts (Oracle Health strips links not registered with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from cds_service.core.ehr_profile import RXNORM_URL, ResolvedProfile, SelectionBehavior, host_allowed
from cds_service.present.card_model import Card, Suggestion


def apply_profile(
    cards: list[Card], profile: ResolvedProfile, default_behavior: SelectionBehavior
) -> list[Card]:
    """The same cards (changed in place and returned) as `profile` wants them."""
    behavior = profile.selection_behavior or default_behavior
    for card in cards:
        if card.suggestions:
            card.selection_behavior = behavior
            if behavior == "at-most-one":
                _one_recommended(card.suggestions)
            for coding in _suggested_codings(card.suggestions):
                if coding.get("system") == RXNORM_URL:
                    coding["system"] = profile.suggestion_code_system
        if profile.allowed_link_hosts is not None:
            # an emptied list is omitted on the wire (CDS Hooks: never [])
            card.links = [link for link in card.links if _url_allowed(link.url, profile.allowed_link_hosts)]
    return cards


def _one_recommended(suggestions: list[Suggestion]) -> None:
    seen = False
    for suggestion in suggestions:
        if suggestion.is_recommended:
            if seen:
                suggestion.is_recommended = False
            seen = True


def _suggested_codings(suggestions: list[Suggestion]) -> Iterator[dict[str, Any]]:
    for suggestion in suggestions:
        for action in suggestion.actions:
            concept = action.resource.get("medicationCodeableConcept") if action.resource else None
            codings = concept.get("coding", []) if isinstance(concept, dict) else []
            yield from (coding for coding in codings if isinstance(coding, dict))


def _url_allowed(url: str, allowed: frozenset[str]) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and host_allowed(host, allowed)
