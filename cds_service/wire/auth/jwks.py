"""JSON Web Key Sets: key selection, static sets (file, inline, shipped) and fetched sets with a cache.

A fetched set is only ever requested from a URL named in the trusted-issuers configuration. It is cached,
re-fetched after `max_age_s`, and re-fetched early for an unknown `kid` at most once per
`min_refresh_interval_s` per URL, so random kids cannot cause a fetch storm. Fetches use bounded
timeouts, never follow redirects, ignore proxy/.netrc settings and cap the body size.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from cds_service.core.net_deadline import Deadline, DeadlineAdapter, enforce
from cds_service.core.no_redirect import NoRedirectSession

log = logging.getLogger(__name__)

SIGNING_ALGORITHMS: Final = frozenset({"ES256", "ES384", "RS256", "RS384"})
_KTY: Final = {"ES256": "EC", "ES384": "EC", "RS256": "RSA", "RS384": "RSA"}
_CRV: Final = {"ES256": "P-256", "ES384": "P-384"}
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS: Final = 2048
DEFAULT_MAX_JWKS_BYTES: Final = 256 * 1024
DEFAULT_JWKS_DEADLINE_S: Final = 3.0
_CHUNK: Final = 16 * 1024

JwkDict = dict[str, Any]


class JwksError(ValueError):
    """A JWKS document is unusable or could not be fetched (the message holds no URL path or body)."""


def parse_jwks(document: object) -> list[JwkDict]:
    """The JWK objects of a JWKS document `{"keys": [...]}`; raises JwksError on another shape."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('a JWKS must be a JSON object with a "keys" array')
    return [key for key in document["keys"] if isinstance(key, dict)]


def is_signature_key(jwk: Mapping[str, Any]) -> bool:
    """A public key usable to verify signatures: `use` absent or `sig`, `key_ops` (if any) with `verify`."""
    use = jwk.get("use")
    if use is not None and use != "sig":
        return False
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return False
    return not (_PRIVATE_MEMBERS & jwk.keys())


def select_key(keys: Sequence[Mapping[str, Any]], kid: str, alg: str) -> PyJWK | None:
    """The first signature key with this `kid` whose type (and curve) fits `alg`, as a PyJWK bound to it."""
    if alg not in SIGNING_ALGORITHMS:
        return None
    for jwk in keys:
        if jwk.get("kid") != kid or not is_signature_key(jwk) or jwk.get("kty") != _KTY[alg]:
            continue
        if alg in _CRV and jwk.get("crv") != _CRV[alg]:
            continue
        if jwk.get("alg") is not None and jwk.get("alg") != alg:
            continue
        try:
            key = PyJWK(dict(jwk), algorithm=alg)
        except PyJWTError:
            continue
        if isinstance(key.key, RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
            continue
        return key
    return None


def usable_key_count(keys: Sequence[Mapping[str, Any]]) -> int:
    """How many keys could verify one of the accepted algorithms (used to validate configuration)."""
    count = 0
    for jwk in keys:
        kid = jwk.get("kid")
        if isinstance(kid, str) and any(select_key([jwk], kid, alg) for alg in sorted(SIGNING_ALGORITHMS)):
            count += 1
    return count


class KeySource(Protocol):
    def key_for(self, kid: str, alg: str) -> PyJWK | None:
        """The verification key for `kid`/`alg`, or None when the set has no such usable key."""
        ...


class _SelectedKeys:
    """`select_key` over one fixed key list, remembering the keys found: a PyJWK is built (the public key
    decoded and checked) once per (kid, alg), not on every call. Misses are not remembered, so random
    kids cannot grow it: it holds at most one entry per key and algorithm of the list."""

    def __init__(self, keys: list[JwkDict]) -> None:
        self.keys = keys
        self._found: dict[tuple[str, str], PyJWK] = {}

    def key_for(self, kid: str, alg: str) -> PyJWK | None:
        key = self._found.get((kid, alg))
        if key is None:
            key = select_key(self.keys, kid, alg)
            if key is not None:
                self._found[(kid, alg)] = key
        return key


class StaticKeySource:
    """A JWKS known at start-up (inline, a file, or the copy shipped in the package): never fetched."""

    def __init__(self, document: object) -> None:
        self._keys = _SelectedKeys(parse_jwks(document))

    def key_for(self, kid: str, alg: str) -> PyJWK | None:
        return self._keys.key_for(kid, alg)


class JwksFetcher:
    """GET a JWKS: no redirects, no proxies/.netrc/cookies, bounded timeouts, body capped at `max_bytes`."""

    def __init__(
        self,
        session: requests.Session | None = None,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 3.0,
        max_bytes: int = DEFAULT_MAX_JWKS_BYTES,
        total_timeout_s: float = DEFAULT_JWKS_DEADLINE_S,
    ) -> None:
        self._session = session if session is not None else _plain_session()
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._max_bytes = max_bytes
        self.total_timeout_s = total_timeout_s

    def fetch(self, url: str) -> list[JwkDict]:
        """The keys at `url`; the whole exchange (connect, headers, body) ends by `total_timeout_s`."""
        with enforce(Deadline.after(self.total_timeout_s)) as deadline:
            try:
                return self._fetch(url)
            except JwksError:
                if deadline.expired:
                    raise JwksError(f"no complete answer within {self.total_timeout_s:g} s") from None
                raise

    def _fetch(self, url: str) -> list[JwkDict]:
        try:
            response = self._session.get(
                url,
                headers={"Accept": "application/jwk-set+json, application/json"},
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as error:
            raise JwksError(f"request failed ({type(error).__name__})") from None
        try:
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            body = self._read(response)
        finally:
            response.close()
        try:
            return parse_jwks(json.loads(body))
        except ValueError:
            raise JwksError("the body is not a JWKS document") from None

    def _read(self, response: requests.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(_CHUNK):
                size += len(chunk)
                if size > self._max_bytes:
                    raise JwksError(f"the body exceeds {self._max_bytes} bytes")
                chunks.append(chunk)
        except requests.RequestException as error:
            raise JwksError(f"reading failed ({type(error).__name__})") from None
        return b"".join(chunks)


def _plain_session() -> requests.Session:
    session = NoRedirectSession()
    session.trust_env = False
    session.headers["User-Agent"] = "osteoporosis-escalation-cds-service"
    adapter = DeadlineAdapter()  # the fetch's wall-clock deadline is enforced on these connections
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def run_in_background(task: Callable[[], None]) -> None:
    """Run a cache refresh on its own daemon thread (never on a caller's thread)."""
    threading.Thread(target=task, name="jwks-refresh", daemon=True).start()


def run_inline(task: Callable[[], None]) -> None:
    """Run a cache refresh on the caller's thread (tests: deterministic)."""
    task()


class RemoteKeySource:
    """The cached JWKS at one configured URL (a `jku` entry or `jwks_url`), stale-while-revalidate.

    - A cached set older than `max_age_s` is still served while ONE background refresh runs: a slow or
      dead JWKS endpoint never delays a call whose key is cached.
    - An unknown `kid` (key rotation), or no set at all yet, needs a fetch: the caller waits for it, for
      at most the fetcher's total deadline, and at most once per `min_refresh_interval_s` per URL (callers
      arriving meanwhile get "no key" at once instead of queueing behind the slow endpoint).
    - Each URL has its own lock, held only while fetching that URL: one slow issuer never blocks another.
    - A failed fetch keeps the last good set.
    """

    def __init__(
        self,
        url: str,
        fetcher: JwksFetcher,
        *,
        min_refresh_interval_s: float = 60.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        run_refresh: Callable[[Callable[[], None]], None] = run_in_background,
    ) -> None:
        self.url = url
        self._fetcher = fetcher
        self._min_refresh_interval_s = min_refresh_interval_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._run_refresh = run_refresh
        self._state_lock = threading.Lock()  # guards the fields below; never held during a fetch
        self._fetch_lock = threading.Lock()  # one fetch at a time for this URL
        self._keys: _SelectedKeys | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._generation = 0

    @property
    def loaded(self) -> bool:
        """True once a set has been fetched (readiness)."""
        with self._state_lock:
            return self._keys is not None

    def warm(self) -> None:
        """Start a background fetch when no set is loaded yet (rate-limited like any refresh)."""
        if not self.loaded:
            self._start_background_refresh(self._clock())

    def key_for(self, kid: str, alg: str) -> PyJWK | None:
        now = self._clock()
        with self._state_lock:
            keys, fetched_at, generation = self._keys, self._fetched_at, self._generation
        if keys is not None and now - fetched_at >= self._max_age_s:
            self._start_background_refresh(now)
            with self._state_lock:
                keys, generation = self._keys, self._generation  # fresh when the refresh ran inline
        key = keys.key_for(kid, alg) if keys is not None else None
        if key is None and self._refresh_waiting(now, generation):
            with self._state_lock:
                keys = self._keys
            key = keys.key_for(kid, alg) if keys is not None else None
        return key

    def _start_background_refresh(self, now: float) -> None:
        if not self._claim_attempt(now):
            return

        def refresh() -> None:
            if self._fetch_lock.acquire(blocking=False):
                try:
                    self._fetch(now)
                finally:
                    self._fetch_lock.release()

        self._run_refresh(refresh)

    def _refresh_waiting(self, now: float, seen_generation: int) -> bool:
        """Fetch on the caller's thread (bounded); True when a newer set than `seen_generation` exists."""
        if not self._fetch_lock.acquire(timeout=self._fetcher.total_timeout_s):
            return False  # another caller's fetch is still running: do not queue behind it
        try:
            with self._state_lock:
                if self._generation != seen_generation:
                    return True  # someone else's fetch finished while we waited
            if not self._claim_attempt(now):
                return False
            return self._fetch(now)
        finally:
            self._fetch_lock.release()

    def _claim_attempt(self, now: float) -> bool:
        """Rate limit: at most one fetch attempt per `min_refresh_interval_s` for this URL."""
        with self._state_lock:
            if self._last_attempt is not None and now - self._last_attempt < self._min_refresh_interval_s:
                return False
            self._last_attempt = now
            return True

    def _fetch(self, now: float) -> bool:
        try:
            keys = self._fetcher.fetch(self.url)
        except JwksError as error:
            log.warning("jwks fetch failed host=%s reason=%s", urlsplit(self.url).hostname, error)
            return False
        with self._state_lock:
            self._keys, self._fetched_at = _SelectedKeys(keys), now
            self._generation += 1
        return True


class JwksRegistry:
    """One RemoteKeySource per URL, shared by every issuer that names the URL."""

    def __init__(
        self,
        fetcher: JwksFetcher | None = None,
        *,
        min_refresh_interval_s: float = 60.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        run_refresh: Callable[[Callable[[], None]], None] = run_in_background,
    ) -> None:
        self._fetcher = fetcher if fetcher is not None else JwksFetcher()
        self._min_refresh_interval_s = min_refresh_interval_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._run_refresh = run_refresh
        self._lock = threading.Lock()
        self._sources: dict[str, RemoteKeySource] = {}

    def remote(self, url: str) -> RemoteKeySource:
        with self._lock:
            source = self._sources.get(url)
            if source is None:
                source = self._sources[url] = RemoteKeySource(
                    url,
                    self._fetcher,
                    min_refresh_interval_s=self._min_refresh_interval_s,
                    max_age_s=self._max_age_s,
                    clock=self._clock,
                    run_refresh=self._run_refresh,
                )
            return source

    def sources(self) -> list[RemoteKeySource]:
        """Every fetched key set configured so far (readiness: each must be loaded)."""
        with self._lock:
            return list(self._sources.values())
