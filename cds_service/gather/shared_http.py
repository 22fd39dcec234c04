"""Process-wide resources of the FHIR client: one pooled session, one bounded thread pool, the per-server
bulkhead and circuit breaker, and the cache of servers already confirmed to be FHIR R4."""

from __future__ import annotations

import concurrent.futures as cf
import http.cookiejar
import threading
from collections import OrderedDict
from typing import Any, Final

import requests

from cds_service.core.net_deadline import DeadlineAdapter
from cds_service.gather.capability import capability_cache
from cds_service.gather.peer_guard import PeerGuard
from cds_service.gather.stale_retry import stale_connection_retry

_POOL_HOSTS: Final = 16
_POOL_CONNECTIONS_PER_HOST: Final = 32
_EXECUTOR_WORKERS: Final = 32
_METADATA_CACHE_SIZE: Final = 256
DEFAULT_MAX_CALLS_PER_SERVER: Final = 4
DEFAULT_FAILURE_THRESHOLD: Final = 5
DEFAULT_CIRCUIT_OPEN_S: Final = 30.0


class _RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that neither stores nor returns any cookie: no state between calls."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


_shared_lock = threading.Lock()
_session: requests.Session | None = None
_executor: cf.ThreadPoolExecutor | None = None


def shared_session() -> requests.Session:
    """The process-wide pooled session: no cookies kept, no proxies/.netrc from the environment."""
    global _session  # noqa: PLW0603 - one lazily created pool per process
    with _shared_lock:
        if _session is None:
            _session = _new_session()
        return _session


def _new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.auth = None
    session.cookies = requests.cookies.RequestsCookieJar(policy=_RejectAllCookies())
    session.headers["User-Agent"] = "osteoporosis-escalation-cds-service"
    adapter = DeadlineAdapter(
        pool_connections=_POOL_HOSTS,
        pool_maxsize=_POOL_CONNECTIONS_PER_HOST,
        max_retries=stale_connection_retry(),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def shared_executor() -> cf.ThreadPoolExecutor:
    """The process-wide bounded pool that runs independent FHIR queries in parallel."""
    global _executor  # noqa: PLW0603 - one lazily created pool per process
    with _shared_lock:
        if _executor is None:
            _executor = cf.ThreadPoolExecutor(max_workers=_EXECUTOR_WORKERS, thread_name_prefix="fhir")
        return _executor


_peer_guard = PeerGuard(
    max_in_flight=DEFAULT_MAX_CALLS_PER_SERVER,
    failure_threshold=DEFAULT_FAILURE_THRESHOLD,
    open_s=DEFAULT_CIRCUIT_OPEN_S,
    name="fhirServer",
)


def fhir_peer_guard() -> PeerGuard:
    """The process-wide bulkhead and circuit breaker per fhirServer base URL."""
    return _peer_guard


def configure_fhir_peer_guard(*, max_calls_per_server: int, failure_threshold: int, open_s: float) -> None:
    """Replace the process-wide guard (app start-up; tests): forgets every server's state."""
    global _peer_guard  # noqa: PLW0603 - one guard per process, configured from settings
    _peer_guard = PeerGuard(
        max_in_flight=max_calls_per_server,
        failure_threshold=failure_threshold,
        open_s=open_s,
        name="fhirServer",
    )


class _R4Cache:
    """Bounded, thread-safe set of base URLs already confirmed to be FHIR R4 (only successes are kept)."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._lock = threading.Lock()
        self._versions: OrderedDict[str, str] = OrderedDict()

    def get(self, base: str) -> str | None:
        with self._lock:
            return self._versions.get(base)

    def put(self, base: str, version: str) -> None:
        with self._lock:
            self._versions[base] = version
            self._versions.move_to_end(base)
            while len(self._versions) > self._max_size:
                self._versions.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._versions.clear()


r4_cache = _R4Cache(_METADATA_CACHE_SIZE)


def clear_metadata_cache() -> None:
    """Forget which servers were confirmed R4 and what they declare (tests, or after a server upgrade)."""
    r4_cache.clear()
    capability_cache().clear()
