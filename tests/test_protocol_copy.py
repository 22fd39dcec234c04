"""docs/protocol.md is the shipped copy of the shared clinical contract: every "protocol §..." reference in
the code resolves inside the repository. When the shared contract is beside the checkout (developers, CI),
the copy must be identical to it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPY = REPO / "docs" / "protocol.md"
SHARED = REPO.parent / "shared" / "clinical" / "protocol.md"


def test_the_protocol_ships_with_the_repository() -> None:
    text = COPY.read_text(encoding="utf-8")
    for heading in ("## 1. Outcomes", "## 3. Decision table", "### 3c. Real-world data shapes", "## 9."):
        assert heading in text


def test_the_shipped_copy_matches_the_shared_contract() -> None:
    if not SHARED.exists():  # a checkout without the shared folder: nothing to compare against
        return
    assert COPY.read_bytes() == SHARED.read_bytes(), "run: cp ../shared/clinical/protocol.md docs/protocol.md"
