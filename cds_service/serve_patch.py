"""`cds-service serve` with gevent workers: patch the standard library BEFORE anything imports it.

gevent makes blocking sockets cooperative by replacing `socket`, `ssl`, `threading`... A module that
already holds the originals (urllib3 keeps `ssl.SSLContext`) would do blocking TLS on the event loop and
freeze the whole worker, so the patch must run first: `cds_service.cli` imports this module before
anything else. It patches only for `serve` with the gevent worker class (the default); every other
command and every in-process use (tests, benchmarks) keeps the plain standard library.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

DEFAULT_WORKER_CLASS = "gevent"


def wants_gevent(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    if not argv or argv[0] != "serve":
        return False
    return (environ.get("CDS_WORKER_CLASS") or DEFAULT_WORKER_CLASS).strip().lower() == "gevent"


def patch_for_serve(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    if not wants_gevent(sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ):
        return False
    from gevent import monkey  # noqa: PLC0415 - only when serving with gevent

    monkey.patch_all()
    return True


patch_for_serve()
