"""matplotlib's font list is built with the image and used, not rebuilt, under the Helm chart.

The Dockerfile builds the list into MPLCONFIGDIR at build time; matplotlib only uses a *writable*
MPLCONFIGDIR, so under the chart's read-only root filesystem the service copies the prebuilt files to
CDS_DATA_DIR (an emptyDir) before importing matplotlib (cds_service/mpl_cache.py). These checks keep the
Dockerfile, the chart and that step in agreement; tests/deploy/test_readonly_rootfs.py runs the service
with the SMART app on a read-only filesystem.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from cds_service.mpl_cache import SUBDIRECTORY, use_prebuilt_font_cache
from tests.deploy.helm_render import Manifest, only, pod_spec, render
from tests.deploy.test_helm_chart import MINIMAL, PACKAGED_KNOWLEDGE, PRODUCTION
from tests.test_dockerfile import all_of, instructions

TEMPORARY_DIR_WARNING = "Matplotlib created a temporary cache directory"


def image_mplconfigdir() -> str:
    values = [args.split("=", 1)[1] for args in all_of("ENV") if args.startswith("MPLCONFIGDIR=")]
    assert len(values) == 1, "the image sets MPLCONFIGDIR once"
    assert PurePosixPath(values[0]).is_absolute()
    return values[0]


def font_list_build() -> str:
    """The Dockerfile's RUN that builds the font list (the same command the tests run)."""
    builds = [run for run in all_of("RUN") if "import matplotlib.font_manager" in run]
    assert len(builds) == 1, "one RUN builds matplotlib's font list"
    return builds[0]


def build_font_list(directory: Path) -> None:
    """Run the Dockerfile's build step with this MPLCONFIGDIR (python from this virtualenv)."""
    command = font_list_build().replace("chown -R 10001:10001", "true")  # no such user here
    env = {
        **os.environ,
        "MPLCONFIGDIR": str(directory),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run(["sh", "-c", command], env=env, check=True, capture_output=True)


def test_the_image_builds_the_font_list_at_build_time_into_mplconfigdir() -> None:
    steps = instructions()
    env_at = next(
        i for i, (key, args) in enumerate(steps) if key == "ENV" and args.startswith("MPLCONFIGDIR=")
    )
    build_at = next(i for i, (key, args) in enumerate(steps) if key == "RUN" and args == font_list_build())
    install_at = next(i for i, (key, args) in enumerate(steps) if key == "RUN" and "pip install" in args)
    user_at = next(i for i, (key, _args) in enumerate(steps) if key == "USER")
    assert install_at < build_at < user_at, "after matplotlib is installed, as root, before USER"
    assert env_at < build_at, "into the MPLCONFIGDIR the service runs with"
    run = font_list_build()
    assert '"$MPLCONFIGDIR"/fontlist-' in run, "the build fails when no font list was written"
    assert "chown -R 10001:10001" in run, "writable by the service's user when the root filesystem is"


def test_the_build_step_writes_the_font_list(tmp_path: Path) -> None:
    build_font_list(tmp_path / "mpl")
    assert list((tmp_path / "mpl").glob("fontlist-*.json"))


@pytest.mark.parametrize("values_file", [MINIMAL, PRODUCTION], ids=["minimal", "production"])
def test_the_chart_keeps_the_prebuilt_font_list_and_a_writable_copy_target(values_file: Path) -> None:
    """The chart neither hides the image's MPLCONFIGDIR under a volume nor points it elsewhere, and the
    copy target (CDS_DATA_DIR) is a writable emptyDir on the read-only root filesystem."""
    prebuilt = PurePosixPath(image_mplconfigdir())
    manifests: list[Manifest] = render([values_file], set_files={"knowledge.content": PACKAGED_KNOWLEDGE})
    (deployment,) = only(manifests, "Deployment")
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # why the copy is needed
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    assert env.get("MPLCONFIGDIR", str(prebuilt)) == str(prebuilt)
    for mount in container["volumeMounts"]:
        mounted = PurePosixPath(mount["mountPath"])
        assert not (mounted == prebuilt or mounted in prebuilt.parents), f"{mounted} hides {prebuilt}"
    empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    data_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == env["CDS_DATA_DIR"])
    assert data_mount["name"] in empty_dirs and not data_mount.get("readOnly")


def test_a_read_only_prebuilt_directory_is_copied_and_used_without_a_rebuild(tmp_path: Path) -> None:
    prebuilt, data_dir = tmp_path / "image" / "matplotlib", tmp_path / "data"
    build_font_list(prebuilt)
    (font_list,) = prebuilt.glob("fontlist-*.json")
    environ = {"MPLCONFIGDIR": str(prebuilt)}
    used = use_prebuilt_font_cache(data_dir, environ, writable=lambda _path: False)
    assert used == data_dir / SUBDIRECTORY and environ["MPLCONFIGDIR"] == str(used)
    copied = used / font_list.name
    assert copied.read_bytes() == font_list.read_bytes()
    os.utime(copied, (1_000_000_000, 1_000_000_000))
    probe = "import logging, matplotlib.font_manager; logging.basicConfig(); print(matplotlib.get_cachedir())"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(used)
    assert TEMPORARY_DIR_WARNING not in result.stderr
    assert copied.stat().st_mtime == 1_000_000_000, "read, not rebuilt"
    assert not [p.name for p in used.iterdir() if p.name.startswith(".")], "no partial copy left"


@pytest.mark.parametrize(
    ("environ", "writable"),
    [
        pytest.param({}, False, id="MPLCONFIGDIR unset -> matplotlib's default"),
        pytest.param({"MPLCONFIGDIR": "PREBUILT"}, True, id="writable (docker run) -> used as it is"),
        pytest.param({"MPLCONFIGDIR": "MISSING"}, False, id="no such directory -> matplotlib decides"),
    ],
)
def test_nothing_changes_when_matplotlib_can_use_the_directory(
    tmp_path: Path, environ: dict[str, str], writable: bool
) -> None:
    (tmp_path / "prebuilt").mkdir()
    paths = {"PREBUILT": str(tmp_path / "prebuilt"), "MISSING": str(tmp_path / "missing")}
    environ = {key: paths[value] for key, value in environ.items()}
    before = dict(environ)
    assert use_prebuilt_font_cache(tmp_path / "data", environ, writable=lambda _path: writable) is None
    assert environ == before
    assert not (tmp_path / "data").exists()
