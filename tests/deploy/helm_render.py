"""Render the Helm chart with the pinned helm binary and validate the objects against pinned schemas.

helm and promtool come from `make deploy-tools` (deploy/tools/install.sh); the Kubernetes JSON schemas
from the kubernetes-validate package (dev extra), so nothing here reaches the network.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "cds-service"
EXAMPLES = DEPLOY / "helm" / "examples"
TOOLS_BIN = DEPLOY / "tools" / "bin"
HELM = TOOLS_BIN / "helm"
PROMTOOL = TOOLS_BIN / "promtool"
RELEASE = "cds"
# The oldest and the newest Kubernetes minor the chart is checked against (Chart.yaml kubeVersion >= 1.27).
KUBERNETES_VERSIONS = ("1.27.0", "1.33.0")

Manifest = dict[str, Any]


def tool(path: Path) -> Path:
    assert path.is_file(), f"{path.name} is missing: run `make deploy-tools` (deploy/tools/install.sh)"
    return path


def helm_template(
    values_files: Sequence[Path] = (), sets: Mapping[str, str] = {}, *, set_files: Mapping[str, Path] = {}
) -> subprocess.CompletedProcess[str]:
    argv = [str(tool(HELM)), "template", RELEASE, str(CHART), "--namespace", "cds"]
    for file in values_files:
        argv += ["--values", str(file)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    for key, path in set_files.items():
        argv += ["--set-file", f"{key}={path}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def render(
    values_files: Sequence[Path] = (), sets: Mapping[str, str] = {}, *, set_files: Mapping[str, Path] = {}
) -> list[Manifest]:
    done = helm_template(values_files, sets, set_files=set_files)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def schema_errors(manifests: Iterable[Manifest], version: str) -> list[str]:
    """Every object against the strict schema of its kind for that Kubernetes version."""
    errors = []
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{name} ({version}): {error.message} at {'/'.join(map(str, error.path))}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{name} ({version}): no schema: {error}")
    return errors


def only(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: Iterable[Manifest], kind: str, component: str | None = None) -> Manifest:
    found = [
        manifest
        for manifest in only(manifests, kind)
        if component is None or manifest["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container_env(workload: Manifest) -> list[dict[str, Any]]:
    return [entry for container in pod_spec(workload)["containers"] for entry in container.get("env", [])]


def values(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded
