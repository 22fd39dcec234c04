"""matplotlib's font list, built with the image, used under a read-only root filesystem.

matplotlib (the SMART app's charts) needs a *writable* configuration and cache directory. When
`MPLCONFIGDIR` is not writable it makes a temporary directory and rebuilds its font list there (about
a second of CPU per worker and a warning at every start; with /tmp read-only as well, the import fails
and the worker cannot boot). The image builds the font list at build time into `MPLCONFIGDIR`
(Dockerfile); under the Helm chart's read-only root filesystem that directory cannot be written, so
before matplotlib is imported each worker copies the prebuilt files to `<CDS_DATA_DIR>/matplotlib`
(a writable emptyDir) and points `MPLCONFIGDIR` there. Nothing is rebuilt.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, MutableMapping
from pathlib import Path

SUBDIRECTORY = "matplotlib"


def _writable(directory: Path) -> bool:
    """matplotlib's own test (`os.access(W_OK)`; a read-only mount answers False, even for root)."""
    return os.access(directory, os.W_OK)


def use_prebuilt_font_cache(
    data_dir: Path,
    environ: MutableMapping[str, str] = os.environ,
    *,
    writable: Callable[[Path], bool] = _writable,
) -> Path | None:
    """Point `MPLCONFIGDIR` at a writable copy of the prebuilt directory when it is not writable itself.

    Returns the directory now used, or None when nothing needed to change (unset, missing, or writable:
    matplotlib reads and keeps its cache there). Call before matplotlib is imported."""
    configured = environ.get("MPLCONFIGDIR")
    if not configured:
        return None
    source = Path(configured)
    if not source.is_dir() or writable(source):
        return None
    target = data_dir / SUBDIRECTORY
    target.mkdir(parents=True, exist_ok=True)
    for prebuilt in sorted(source.iterdir()):
        destination = target / prebuilt.name
        if prebuilt.is_file() and not destination.exists():
            # Workers start together: each copies under its own name, the rename is atomic.
            partial = target / f".{prebuilt.name}.{os.getpid()}"
            shutil.copyfile(prebuilt, partial)
            os.replace(partial, destination)
    environ["MPLCONFIGDIR"] = str(target)
    return target
