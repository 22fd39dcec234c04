"""`cds-service knowledge check FILE`: validates a site's edited knowledge file and prints, per demo patient,
what changes between the shipped knowledge and the copy (before -> after)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service import cli
from cds_service.knowledge.json_schema import schema_text
from cds_service.knowledge.schema import PACKAGED_FILE
from cds_service.knowledge_check import DEFAULT_PATIENTS_DIR, demo_patients


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped file with one line edited, as a site edits its copy (comments and layout kept)."""
    text = PACKAGED_FILE.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    target = tmp_path / "site-knowledge.yaml"
    target.write_text(text.replace(old, new), encoding="utf-8")
    return target


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["knowledge", "check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_changed_threshold_names_the_patient_it_flips_with_both_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # s03 meets the total-hip target exactly (+0.20 T): a stricter target escalates it.
    edited = _edited(tmp_path, 'target_delta_t_total_hip: "0.20"', 'target_delta_t_total_hip: "0.21"')
    code, out, err = _check(capsys, str(edited))
    assert (code, err) == (0, "")
    assert f"{edited}: valid" in out
    assert "1 with decision changes" in out
    block = out.split("\ns03: ", 1)[1]
    assert block.startswith("Targets met exactly on the thresholds (as of 2025-06-01)")
    assert "  outcome: RESPONSE_MET -> ESCALATE" in block
    assert "  rank 1 agent: (none) -> romosozumab" in block
    assert "    + Hip BMD target not met after 3 y of alendronate" in block
    assert "\ns01: " not in out  # unchanged patients are not listed


SUMMARY_HEAD = "Hip and spine BMD targets not met after 3 y of alendronate: consider anabolic therapy"


def test_a_policy_change_shows_the_new_rank_1_agent_and_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = _edited(tmp_path, "romosozumab_in_men: exclude", "romosozumab_in_men: allow")
    code, out, _ = _check(capsys, str(edited))
    assert code == 0
    block = out.split("\ns26: ", 1)[1]
    assert "outcome:" not in block  # still ESCALATE: only the agent and the card change
    assert "  rank 1 agent: teriparatide -> romosozumab" in block
    assert f"    - {SUMMARY_HEAD} (teriparatide first)" in block
    assert f"    + {SUMMARY_HEAD} (romosozumab first)" in block


def test_an_unchanged_copy_says_no_decision_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = _edited(tmp_path, "# Knowledge file of", "# A site's copy of the knowledge file of")
    code, out, _ = _check(capsys, str(edited))
    assert code == 0
    patients = len(demo_patients())
    assert out.splitlines()[-1] == f"{patients} demo patients evaluated: no decision changes"
    shipped, copied = out.splitlines()[1].removeprefix("protocol_version ").split(" -> ")
    assert shipped != copied  # the file's bytes changed, so its version did


def test_every_error_is_listed_and_the_exit_code_is_2(tmp_path: Path) -> None:
    """Through the installed entry point: one line per error on stderr, nothing on stdout."""
    text = PACKAGED_FILE.read_text(encoding="utf-8")
    text = text.replace("  duration_card: false", "  duration_card: [false]").replace(
        'target_pct_total_hip: "3.0"', 'target_pct_total_hip: "three"'
    )
    target = tmp_path / "broken.yaml"
    target.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "cds_service", "knowledge", "check", str(target)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{target}: invalid knowledge file (2 error(s)):"
    assert "policy.duration_card" in result.stderr and "thresholds.target_pct_total_hip" in result.stderr
    assert len(lines) == 3


def test_unreadable_yaml_and_a_missing_patients_folder_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: [unclosed", encoding="utf-8")
    code, out, err = _check(capsys, str(broken))
    assert (code, out) == (2, "") and "not valid YAML" in err
    code, out, err = _check(capsys, str(PACKAGED_FILE), "--patients", str(tmp_path))
    assert (code, out) == (2, "") and "cannot read the demo patients" in err and "--patients DIR" in err


def test_the_demo_patients_are_every_shipped_scenario() -> None:
    scenarios = {path.stem for path in DEFAULT_PATIENTS_DIR.glob("*.json")} - {"index"}
    assert {patient.scenario for patient in demo_patients()} == scenarios


def test_knowledge_schema_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["knowledge", "schema"]) == 0
    assert capsys.readouterr().out == schema_text()
