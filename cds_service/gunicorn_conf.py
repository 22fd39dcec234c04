"""Gunicorn settings derived from the service settings (used by `cds-service serve`)."""

from __future__ import annotations

import math
import os
from typing import Any

from cds_service.config import Settings

THREADS = 4
GRACEFUL_TIMEOUT_S = 30
KEEPALIVE_S = 5
MIN_WORKER_TIMEOUT_S = 30
# Only used if someone turns the access log on: %(U)s is the path without the query string.
# Worker heartbeat files in RAM, not on a possibly slow container disk (gunicorn uses mkstemp there).
SHM_DIR = "/dev/shm"  # noqa: S108
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


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
        "worker_class": "gthread",
        "threads": THREADS,
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
    if os.path.isdir(SHM_DIR):
        options["worker_tmp_dir"] = SHM_DIR
    return options
