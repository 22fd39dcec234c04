"""The SMART app link on ESCALATE, CONSIDER and SPECIALIST_REVIEW outcome cards (CDS Hooks 2.0 `links`).

`appContext` carries the decision id (the outcome card's uuid, the key of feedback) and the patient the
card was issued for; the EHR hands it back in the token response, and the app refuses a launch whose
`patient` differs. Pure: the launch URL comes from settings.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from cds_service.present.card_model import Card, Link

LINKED_OUTCOMES: Final = ("ESCALATE", "CONSIDER", "SPECIALIST_REVIEW")
LINK_LABEL: Final = "Open the bone-density chart and treatment timeline (SMART app)"
LAUNCH_PATH: Final = "/smart/launch"


def app_context(decision_id: str, patient_id: str) -> str:
    return orjson.dumps({"decision": decision_id, "patient": patient_id}).decode()


def parse_app_context(value: str | None) -> tuple[str | None, str | None]:
    """(decision id, patient id) from an appContext this service issued; (None, None) otherwise."""
    if not value or len(value) > 1024:
        return None, None
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    decision, patient = data.get("decision"), data.get("patient")
    return (
        decision if isinstance(decision, str) and decision else None,
        patient if isinstance(patient, str) and patient else None,
    )


def with_smart_link(cards: list[Card], outcome: str, *, patient_id: str, base_url: str | None) -> list[Card]:
    """Append the `smart` link to the outcome card (the first card, kind = outcome) when it is one of
    LINKED_OUTCOMES; `base_url` None (app not configured) leaves the cards as they are."""
    if base_url is None or outcome not in LINKED_OUTCOMES or not cards or cards[0].kind != outcome:
        return cards
    main = cards[0]
    url = base_url.rstrip("/") + LAUNCH_PATH
    main.links.append(Link(LINK_LABEL, url, "smart", app_context(main.uuid, patient_id)))
    return cards
