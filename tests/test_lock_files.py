"""Reproducible installs: the venv (make venv, so CI) and the Docker image install exactly the locked
versions, and the locks satisfy what pyproject.toml asks for. After a dependency change: `make lock`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)")


def pins(lock: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / lock).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{lock}: not an exact pin: {line!r}"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return data


def _unsatisfied(requirements: list[str], locked: dict[str, str]) -> list[str]:
    wrong = []
    for text in requirements:
        requirement = Requirement(text)
        version = locked.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{text} (locked: {version})")
    return wrong


def test_runtime_lock_satisfies_the_dependencies() -> None:
    runtime = list(project()["dependencies"])  # type: ignore[call-overload]
    assert _unsatisfied(runtime, pins("runtime.lock")) == []


def test_dev_lock_satisfies_dependencies_and_dev_extra() -> None:
    extras = project()["optional-dependencies"]
    wanted = [*project()["dependencies"], *extras["dev"]]  # type: ignore[index, misc]
    assert _unsatisfied(wanted, pins("dev.lock")) == []


def test_runtime_and_dev_locks_agree() -> None:
    dev, runtime = pins("dev.lock"), pins("runtime.lock")
    assert {
        name: (version, dev.get(name)) for name, version in runtime.items() if dev.get(name) != version
    } == {}


def test_installs_use_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install -r requirements/dev.lock" in makefile
    assert "pip install --no-deps -e ." in makefile
    assert "$(VENV)/.installed: pyproject.toml requirements/dev.lock" in makefile
