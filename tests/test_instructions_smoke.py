"""benchmarks/instructions.py (BENCHMARKS.md's instructions per call) stays runnable, without valgrind."""

from __future__ import annotations

import pytest

from benchmarks import instructions


def test_instruction_count_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/instructions.py (BENCHMARKS.md's instructions per call) stays runnable, without valgrind."""
    assert instructions.main(["--size", "small", "--calls", "1", "--warm", "0"]) == 0
    assert "1 counted calls" in capsys.readouterr().out
    assert instructions.stages("small") == [
        "request JSON parse",
        "prefetch checks",
        "parse",
        "extract facts",
        "evaluate",
    ]
