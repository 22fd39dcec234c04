"""CDS Hooks 2.0 card rules that depend on the (operator-replaceable) knowledge file, via CDS_KNOWLEDGE_FILE.

Rows 100/136/219: every override reason MUST carry a human-readable `display`; row 107: `source.url` MUST
be an absolute URL. The loader already refuses summaries of 140+ characters (row 83), so a knowledge file
that would make the service emit non-conformant cards should be refused the same way; if it is accepted,
the cards must still conform. See docs/cds-hooks-conformance.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.app import create_app
from cds_service.knowledge.schema import PACKAGED_DIR, PACKAGED_FILE, KnowledgeError
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request
from tests.wire.test_conformance_wire import check_card

URL = "/cds-services/osteoporosis-escalation"


def knowledge_copy(tmp_path: Path, edit: Any) -> Path:
    """The packaged knowledge directory (code tables included) with `edit` applied to the YAML."""
    target = tmp_path / "knowledge"
    shutil.copytree(PACKAGED_DIR / "codes", target / "codes")
    data = yaml.safe_load(PACKAGED_FILE.read_text(encoding="utf-8"))
    edit(data)
    path = target / PACKAGED_FILE.name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def cards_or_refused(path: Path) -> list[dict[str, Any]] | None:
    """None when the knowledge file is refused at start-up, else the cards of an ESCALATE scenario."""
    settings = test_settings({"CDS_AS_OF": "2025-06-01", "CDS_KNOWLEDGE_FILE": str(path)})
    try:
        client = create_app(settings).test_client()
    except KnowledgeError:
        return None
    response = client.post(URL, json=hook_request("s01", with_prefetch=True))
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    assert cards
    return cards


def test_copy_of_the_packaged_knowledge_is_accepted(tmp_path: Path) -> None:
    assert cards_or_refused(knowledge_copy(tmp_path, lambda _data: None)) is not None


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


BREAKING_EDITS = [
    pytest.param(("override_reasons", 0, "display"), "", id="overrideReason-display-empty"),  # 100/136/219
    pytest.param(("override_reasons", 0, "code"), "", id="overrideReason-code-empty"),  # 216/218
    pytest.param(("override_reasons", 0, "system"), "", id="overrideReason-system-empty"),  # 217
    pytest.param(("card_source", "label"), "", id="source-label-empty"),  # 105
    pytest.param(("card_source", "topic_system"), "", id="topic-system-empty"),  # 115/217
    pytest.param(("card_source", "url"), "doi.org/10.1136/bmj-2024-081250", id="source-url-relative"),  # 107
]


@pytest.mark.parametrize(("path", "value"), BREAKING_EDITS)
def test_knowledge_that_would_break_a_card_rule_is_refused_or_cards_still_conform(
    tmp_path: Path, path: tuple[Any, ...], value: Any
) -> None:
    cards = cards_or_refused(knowledge_copy(tmp_path, _set(path, value)))
    for card in cards or []:
        check_card(card)
