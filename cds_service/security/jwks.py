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

log = logging.getLogger(__name__)

SIGNING_ALGORITHMS: Final = frozenset({"ES256", "ES384", "RS256", "RS384"})
_KTY: Final = {"ES256": "EC", "ES384": "EC", "RS256": "RSA", "RS384": "RSA"}
_CRV: Final = {"ES256": "P-256", "ES384": "P-384"}
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS: Final = 2048
DEFAULT_MAX_JWKS_BYTES: Final = 256 * 1024
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


class StaticKeySource:
    """A JWKS known at start-up (inline, a file, or the copy shipped in the package): never fetched."""

    def __init__(self, document: object) -> None:
        self._keys = parse_jwks(document)

    def key_for(self, kid: str, alg: str) -> PyJWK | None:
        return select_key(self._keys, kid, alg)


class JwksFetcher:
    """GET a JWKS: no redirects, no proxies/.netrc/cookies, bounded timeouts, body capped at `max_bytes`."""

    def __init__(
        self,
        session: requests.Session | None = None,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 3.0,
        max_bytes: int = DEFAULT_MAX_JWKS_BYTES,
    ) -> None:
        self._session = session if session is not None else _plain_session()
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._max_bytes = max_bytes

    def fetch(self, url: str) -> list[JwkDict]:
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


class NoRedirectSession(requests.Session):
    """A Session that never follows a redirect, whatever `allow_redirects` says."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


def _plain_session() -> requests.Session:
    session = NoRedirectSession()
    session.trust_env = False
    session.headers["User-Agent"] = "osteoporosis-escalation-cds-service"
    return session


class RemoteKeySource:
    """The cached JWKS at one configured URL (a `jku` entry or `jwks_url`), refreshed with a rate limit."""

    def __init__(
        self,
        url: str,
        fetcher: JwksFetcher,
        *,
        min_refresh_interval_s: float = 60.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetcher = fetcher
        self._min_refresh_interval_s = min_refresh_interval_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[JwkDict] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None

    def key_for(self, kid: str, alg: str) -> PyJWK | None:
        with self._lock:  # one fetch at a time per URL; waiting callers then see the fresh set
            now = self._clock()
            if self._keys is None or now - self._fetched_at >= self._max_age_s:
                self._refresh(now)
            key = select_key(self._keys or [], kid, alg)
            if key is None and self._refresh(now):
                key = select_key(self._keys or [], kid, alg)
            return key

    def _refresh(self, now: float) -> bool:
        """Fetch the set unless the last attempt is too recent; True when a new set was loaded."""
        if self._last_attempt is not None and now - self._last_attempt < self._min_refresh_interval_s:
            return False
        self._last_attempt = now
        try:
            keys = self._fetcher.fetch(self.url)
        except JwksError as error:
            log.warning("jwks fetch failed host=%s reason=%s", urlsplit(self.url).hostname, error)
            return False
        self._keys, self._fetched_at = keys, now
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
    ) -> None:
        self._fetcher = fetcher if fetcher is not None else JwksFetcher()
        self._min_refresh_interval_s = min_refresh_interval_s
        self._max_age_s = max_age_s
        self._clock = clock
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
                )
            return source
