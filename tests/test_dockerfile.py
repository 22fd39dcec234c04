"""Static checks of the Dockerfile (no Docker engine here), the Makefile and .ci/run."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def first(keyword: str) -> str:
    return next(args for key, args in instructions() if key == keyword)


def all_of(keyword: str) -> list[str]:
    return [args for key, args in instructions() if key == keyword]


def index_of(keyword: str) -> int:
    return next(i for i, (key, _args) in enumerate(instructions()) if key == keyword)


def test_base_image() -> None:
    assert instructions()[0] == ("FROM", "python:3.11-slim")


def test_runs_as_a_non_root_user() -> None:
    users = all_of("USER")
    assert users, "USER is required"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert index_of("USER") < index_of("CMD")
    assert any("useradd" in run and user in run for run in all_of("RUN")) or user.isdigit()


def test_installs_the_package_with_pip() -> None:
    runs = all_of("RUN")
    assert any(re.search(r"\bpip install -r requirements/runtime\.lock\b", run) for run in runs)
    assert any(re.search(r"\bpip install --no-deps \.(\s|$|&)", run) for run in runs)
    assert not any(run.lstrip().startswith("pip install -e") for run in runs)
    assert "requirements/runtime.lock" in first("COPY") + " ".join(all_of("COPY"))


def test_copied_sources_exist() -> None:
    for args in all_of("COPY"):
        *sources, _dest = args.split()
        for source in sources:
            if any(char in source for char in "*?["):
                continue  # optional wildcard
            assert (ROOT / source).exists(), source


def test_data_dir_is_a_volume_owned_by_the_user() -> None:
    assert any("CDS_DATA_DIR=/var/lib/cds-service" in env for env in all_of("ENV"))
    assert json.loads(first("VOLUME")) == ["/var/lib/cds-service"]
    chown = next(i for i, (key, args) in enumerate(instructions()) if key == "RUN" and "chown" in args)
    assert chown < index_of("VOLUME"), "changes to a volume path after VOLUME are discarded"


def test_exposes_8000() -> None:
    assert first("EXPOSE") == "8000"


def test_healthcheck_uses_python_urllib_on_healthz() -> None:
    healthcheck = first("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--interval" in options and "--timeout" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    ast.parse(code)
    assert "urllib.request" in code
    assert "http://127.0.0.1:8000/healthz" in code


def test_command_serves_on_all_interfaces() -> None:
    assert json.loads(first("CMD")) == ["cds-service", "serve", "--host", "0.0.0.0"]


def test_ci_script_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test$", text, re.MULTILINE)
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_targets_exist() -> None:
    # Clean make variables: under `make test` (CI) the parent's MAKEFLAGS would add directory lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    for target in ("venv", "npm", "run", "test", "lint", "postgres-up"):
        result = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False, env=env
        )
        assert result.returncode == 0, result.stderr
    dry_run = subprocess.run(
        ["make", "-n", "--no-print-directory", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=env,
    ).stdout
    assert "mypy --strict cds_service" in dry_run
    assert "ruff format --check" in dry_run
    lines = dry_run.rstrip().splitlines()
    assert lines[-2].startswith(".venv/bin/pytest --cov=cds_service --cov-branch")  # the whole suite
    assert lines[-1].startswith(".venv/bin/python tools/coverage_layers.py .coverage.json --min rules=")
