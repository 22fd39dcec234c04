"""tools/coverage_layers.py: branch coverage per layer from the JSON report; fails under a minimum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.tools import load_tool


def _summary(lines: int, covered: int, branches: int, covered_branches: int) -> dict[str, object]:
    return {
        "summary": {
            "num_statements": lines,
            "covered_lines": covered,
            "num_branches": branches,
            "covered_branches": covered_branches,
        }
    }


REPORT = {
    "meta": {"branch_coverage": True},
    "files": {
        "cds_service/rules/labs.py": _summary(90, 90, 10, 9),  # 99/100
        "cds_service/rules/bmd.py": _summary(40, 36, 10, 5),  # 41/50
        "cds_service/cli.py": _summary(10, 5, 0, 0),
        "cds_service/record/db/engine.py": _summary(10, 10, 2, 2),
    },
}


def test_layers_are_the_packages_under_cds_service() -> None:
    tool = load_tool("coverage_layers")
    layers = tool.by_layer(REPORT)
    assert list(layers) == ["composition root", "record", "rules"]
    rules = layers["rules"]
    assert (rules.covered_lines, rules.lines, rules.covered_branches, rules.branches) == (126, 130, 14, 20)
    assert rules.percent == pytest.approx(140 / 150 * 100)
    assert rules.branch_percent == pytest.approx(70.0)


@pytest.mark.parametrize(("minimum", "code"), [("93", 0), ("94", 1)])
def test_a_layer_under_its_minimum_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], minimum: str, code: int
) -> None:
    report = tmp_path / "coverage.json"
    report.write_text(json.dumps(REPORT), encoding="utf-8")
    assert load_tool("coverage_layers").main([str(report), "--min", f"rules={minimum}"]) == code
    out = capsys.readouterr().out
    assert "rules" in out and "70.0 % (14/20)" in out
    assert ("is under" in out) is (code == 1)


def test_a_report_without_branches_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    report.write_text(json.dumps({**REPORT, "meta": {"branch_coverage": False}}), encoding="utf-8")
    assert load_tool("coverage_layers").main([str(report)]) == 1
