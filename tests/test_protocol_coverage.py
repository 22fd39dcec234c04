"""Protocol traceability: docs/protocol-coverage.md is generated from the `@pytest.mark.protocol` markers and
must be current; every protocol item must have at least one test; markers may only name known items."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tools import load_tool

coverage = load_tool("protocol_coverage")

# The item list of the common brief, in its order (the tool holds the one list; this pins it).
BRIEF_IDS = """
R0 R0b R1 R2 R3 R3c R4 R5 R6 R7 R7f R7h R7a R8 R9a R9b R9c R10 R11 R12 R13 RENAL
W-DENOSUMAB_OVERDUE W-ANABOLIC_FOLLOW_ON_MISSING 3a-blocking 3a-cap 3a-caveat
3b-dates 3b-icd-category 3b-cancer 3b-cv-undated 3b-labs 3b-months 3b-rounding 3b-therapy-start
3b-prior-denosumab 3b-fractures 3b-site-unknown 3b-sex 3b-aace
3c-comparators 3c-implausible 3c-stopped 3c-medication-reference 3c-dose-per-date 3c-statement-doses
3c-brands 3c-duplicates 3c-undated-history 3c-panels 4-coverage 4-oncology 4-anabolic-course
5-dxa 6-agents 7-plan
""".split()  # noqa: SIM905 - a readable block of ids


def test_the_tool_lists_exactly_the_protocol_items() -> None:
    assert [item for item, _ in coverage.PROTOCOL_ITEMS] == BRIEF_IDS
    assert all(description for _, description in coverage.PROTOCOL_ITEMS)


def test_committed_doc_is_current() -> None:
    expected = coverage.render(coverage.collect())
    assert coverage.DOC_PATH.read_text(encoding="utf-8") == expected, (
        "docs/protocol-coverage.md is out of date: run `python tools/protocol_coverage.py`"
    )


def test_markers_name_only_known_items() -> None:
    assert coverage.unknown_ids(coverage.collect()) == {}


def test_every_protocol_item_has_a_test() -> None:
    empty = coverage.empty_items(coverage.collect())
    assert not empty, f"protocol items without any @pytest.mark.protocol test: {', '.join(empty)}"


def test_scanner_reads_functions_classes_and_module_marks(tmp_path: Path) -> None:
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    (tests_dir / "test_sample.py").write_text(
        "import pytest\n"
        "from pytest import mark\n"
        'pytestmark = [pytest.mark.protocol("R1"), pytest.mark.slow]\n'
        '@pytest.mark.protocol("R4", "3c-panels")\n'
        "def test_a(): pass\n"
        "@pytest.mark.protocol('R0')\n"
        "class TestGroup:\n"
        '    @mark.protocol("R2")\n'
        "    def test_b(self): pass\n"
        "def helper(): pass\n",
        encoding="utf-8",
    )
    found = coverage.collect(tests_dir)
    assert found == {
        "R1": ["tests/test_sample.py::TestGroup::test_b", "tests/test_sample.py::test_a"],
        "R4": ["tests/test_sample.py::test_a"],
        "3c-panels": ["tests/test_sample.py::test_a"],
        "R0": ["tests/test_sample.py::TestGroup::test_b"],
        "R2": ["tests/test_sample.py::TestGroup::test_b"],
    }
    assert coverage.empty_items(found)[:2] == ["R0b", "R3"]
    assert "| R0b | " in coverage.render(found) and "**none**" in coverage.render(found)


def test_check_mode_reports_empty_rows_and_stale_doc(capsys: pytest.CaptureFixture[str]) -> None:
    status = coverage.main(["--check"])
    errors = capsys.readouterr().err
    empty = coverage.empty_items(coverage.collect())
    assert status == (1 if empty or "out of date" in errors else 0)
    for item in empty:
        assert f"protocol item {item} has no test" in errors
