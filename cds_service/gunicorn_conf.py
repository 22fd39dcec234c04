"""Gunicorn settings derived from the service settings (used by `cds-service serve`), and the server hooks
that keep the Prometheus metrics correct across worker processes (see cds_service.record.metrics)."""

from __future__ import annotations

import gc
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import config as gunicorn_config
from prometheus_client.multiprocess import mark_process_dead

from cds_service.config import Settings
from cds_service.record.metrics import MULTIPROC_ENV

THREADS = 4
WORKER_CLASSES = {
    "gevent": "cds_service.workers.gevent_worker.OperationOutcomeGeventWorker",
    "gthread": "cds_service.workers.gthread_worker.OperationOutcomeThreadWorker",
}
GRACEFUL_TIMEOUT_S = 30
# No keep-alive: with gthread workers a kept-alive connection stays on the worker that accepted it, so a
# few busy clients pin every call to one worker and leave the other core idle (measured with wrk: 20 calls/s
# with keep-alive, 34 without, realistic record, 2 workers). A reverse proxy in front keeps client
# connections alive anyway; the hop to gunicorn is plain HTTP on the same host or network.
KEEPALIVE_S = 0
MIN_WORKER_TIMEOUT_S = 30
# Only used if someone turns the access log on: %(U)s is the path without the query string.
# Worker heartbeat files in RAM, not on a possibly slow container disk (gunicorn uses mkstemp there).
SHM_DIR = "/dev/shm"  # noqa: S108
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
# gunicorn >= 25 opens a control socket (for `gunicornc`) under $XDG_RUNTIME_DIR or ~/.gunicorn: the
# image's user has no home and Kubernetes runs it on a read-only root filesystem, so it only logged
# "Control server error: Read-only file system". Nothing here uses it: off (no runtime admin socket).
CONTROL_SOCKET_DISABLE = True
METRICS_SUBDIR = "metrics"


def bind_address(host: str, port: int) -> str:
    """host:port, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def worker_timeout_s(fhir_deadline_s: float) -> int:
    """Well above the per-call FHIR deadline, so a slow call is answered (412/500) and not killed."""
    return max(MIN_WORKER_TIMEOUT_S, math.ceil(4 * fhir_deadline_s))


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """Gunicorn config keys and values; each key must be a known gunicorn setting."""
    options: dict[str, Any] = {
        "bind": [bind_address(settings.host, settings.port)],
        "workers": settings.workers,
        "worker_class": WORKER_CLASSES[settings.worker_class],
        "threads": THREADS,
        "worker_connections": settings.worker_connections,
        "timeout": worker_timeout_s(settings.fhir_deadline_s),
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "preload_app": False,
        "accesslog": None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "proc_name": "cds-service",
    }
    if any(setting.name == "control_socket_disable" for setting in gunicorn_config.KNOWN_SETTINGS):
        options["control_socket_disable"] = CONTROL_SOCKET_DISABLE
    if os.path.isdir(SHM_DIR):
        options["worker_tmp_dir"] = SHM_DIR
    hooks = MetricsDirHooks(settings.data_dir if "data_dir" in settings.model_fields_set else None)
    options.update(
        on_starting=hooks.on_starting,
        child_exit=hooks.child_exit,
        on_exit=hooks.on_exit,
        post_worker_init=tune_gc_after_worker_init,
    )
    return options


class MetricsDirHooks:
    """Gunicorn server hooks for prometheus_client multiprocess mode (they run in the master process).

    The directory is, in order: PROMETHEUS_MULTIPROC_DIR when already set (e.g. a tmpfs), CDS_DATA_DIR/metrics
    when CDS_DATA_DIR is set, else a private temporary directory that is removed again when gunicorn exits.
    """

    def __init__(self, data_dir: Path | None) -> None:
        self._data_dir = data_dir
        self._temporary: Path | None = None

    def on_starting(self, server: Any) -> None:
        """Before the workers fork: create and empty the directory, export it to the workers."""
        directory = self._directory()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        clear_metrics_dir(directory)
        os.environ[MULTIPROC_ENV] = str(directory)
        server.log.info("metrics: multiprocess directory %s", directory)

    def child_exit(self, server: Any, worker: Any) -> None:
        """A worker exited: drop its live-gauge files (its counters stay in the totals)."""
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]

    def on_exit(self, server: Any) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def _directory(self) -> Path:
        preset = os.environ.get(MULTIPROC_ENV)
        if preset:
            return Path(preset)
        if self._data_dir is not None:
            return self._data_dir / METRICS_SUBDIR
        self._temporary = Path(tempfile.mkdtemp(prefix="cds-metrics-"))
        return self._temporary


# A hook call on a 1.6 MB record allocates ~10^5 short-lived objects: with CPython's default thresholds
# the cyclic collector runs inside calls and rescans every object alive since start-up (measured on the
# heavy record in-process: p50 32.5 -> 26.5 ms, p90 85.6 -> 27.5 ms with the settings below).
GC_GEN0_THRESHOLD = 50_000
GC_OLDER_THRESHOLDS = (20, 100)


def tune_gc_after_worker_init(worker: Any = None) -> None:
    """Freeze the objects of the loaded app (knowledge, code tables, models) out of the collector's
    sight and collect young objects less often. Reference counting still frees almost everything."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *GC_OLDER_THRESHOLDS)


def clear_metrics_dir(directory: Path) -> int:
    """Remove the metric files (`*.db`) a previous run left; nothing else in the directory is touched."""
    removed = 0
    for path in directory.glob("*.db"):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
    return removed
