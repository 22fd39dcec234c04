"""The layer contract in pyproject.toml ([tool.importlinter]) holds, and no module outgrows one job.

`make lint` runs `lint-imports` too; this test makes a plain `pytest` catch an upward import or a cycle.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400  # one job per module


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_package_of_the_service_is_placed_in_the_layers() -> None:
    """The layers the tree shows are the layers the contract checks: a new package must be placed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(contract for contract in config["contracts"] if contract["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    packages = {f"cds_service.{path.parent.name}" for path in (ROOT / "cds_service").glob("*/__init__.py")}
    assert packages - placed == set()


def test_no_module_is_longer_than_400_lines() -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "cds_service").rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_every_module_is_listed_in_docs_architecture() -> None:
    """docs/architecture.md gives each module (and package) of cds_service/ its one line, so it stays true."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^(?:- )?`([^`]+)`: \S", text, flags=re.MULTILINE))
    package = ROOT / "cds_service"
    modules = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" or path.parent == package
    }
    packages = {
        f"{path.parent.relative_to(package)}/"
        for path in package.rglob("*/__init__.py")
        if package in (path.parent.parent, path.parent.parent.parent)  # packages and their subpackages
    }
    packages -= {"record/db/migrations/"}  # listed by its env.py and versions
    missing = sorted((modules | packages) - listed)
    assert missing == [], f"add a line to docs/architecture.md for {missing}"
    stale = sorted(name for name in listed - modules - packages if name.endswith(".py"))
    assert stale == [], f"docs/architecture.md lists modules that do not exist: {stale}"
