"""SSRF guard for the caller-supplied `fhirServer`, and the transport that connects only to checked addresses.

`check_fhir_server` is the policy (no DNS, no network): in `required` the URL must equal, after
normalisation, an entry of the authenticated issuer's `fhir_servers` and use https unless listed verbatim;
in `dev`/`off` it must be a loopback URL or an entry of CDS_FHIR_ALLOWLIST. Userinfo, non-canonical IPv4
forms (`127.1`, `2130706433`, `0x7f.1`), IPv6 zone ids and non-ASCII hosts are refused outright.

`guarded_session` returns a `requests.Session` for one hook call whose adapter resolves the host once per
request (getaddrinfo), refuses link-local/reserved/multicast/unspecified addresses always and
loopback/private addresses unless allowed (dev/off: loopback; a verbatim-listed URL: loopback and private),
then connects to that IP while sending `Host` and TLS SNI / certificate checks for the hostname. Redirects
are never followed; only the fhirServer's origin can be requested.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager

from cds_service.core.audience import DEFAULT_PORTS, normalise_url
from cds_service.core.caller import VerifiedCaller
from cds_service.core.net_deadline import deadline_pool_classes
from cds_service.core.no_redirect import NoRedirectSession
from cds_service.core.security_errors import Forbidden
from cds_service.core.trust_settings import TrustSettings
from cds_service.gather.stale_retry import stale_connection_retry

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Origin = tuple[str, str, int]

MAX_URL_CHARS: Final = 2048
_HOSTNAME: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9.])?")
_LOOPBACK_NAMES: Final = frozenset({"localhost"})
_POOLS: Final = 16
_POOL_CONNECTIONS: Final = 32
_shared_lock = threading.Lock()
_shared_pools: PoolManager | None = None


@dataclass(frozen=True)
class ConnectPolicy:
    """Where one hook call may connect: the fhirServer origin and the address classes allowed."""

    origin: Origin
    allow_loopback: bool
    allow_private: bool


@dataclass(frozen=True)
class _Target:
    normal: str
    origin: Origin
    ip: IPAddress | None


def check_fhir_server(url: str, auth: VerifiedCaller | None, settings: TrustSettings) -> None:
    """Raise Forbidden (403) unless this caller may have the service call `url`. Makes no request."""
    connect_policy(url, auth, settings)


def connect_policy(url: str, auth: VerifiedCaller | None, settings: TrustSettings) -> ConnectPolicy:
    """The policy check of `check_fhir_server`, returning what the transport may connect to."""
    target = _parse(url)
    if settings.auth_mode == "required":
        if auth is None or auth.issuer is None:
            raise _refuse("no authenticated issuer", target)
        listed = auth.fhir_servers
    else:
        listed = settings.fhir_allowlist
    verbatim = url.rstrip("/") in {entry.rstrip("/") for entry in listed}
    normal_listed = target.normal in {normalise_url(entry) for entry in listed}
    if settings.auth_mode == "required":
        if not normal_listed:
            raise _refuse("not listed for the issuer", target)
        if target.origin[0] != "https" and not verbatim:
            raise _refuse("not https", target)
        policy = ConnectPolicy(target.origin, allow_loopback=verbatim, allow_private=verbatim)
    else:
        loopback_url = target.origin[1] in _LOOPBACK_NAMES or (
            target.ip is not None and target.ip.is_loopback
        )
        if not (loopback_url or normal_listed):
            raise _refuse("neither loopback nor on CDS_FHIR_ALLOWLIST", target)
        policy = ConnectPolicy(target.origin, allow_loopback=True, allow_private=verbatim)
    if target.ip is not None and not address_allowed(target.ip, policy):
        raise _refuse("address class not allowed", target)
    return policy


def address_allowed(address: IPAddress, policy: ConnectPolicy) -> bool:
    """Public addresses always; loopback/private only when the policy allows; never link-local & co."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None or address.teredo is not None:
            return False
        if address in ipaddress.IPv6Network("64:ff9b::/96"):
            return False
        effective: IPAddress = address.ipv4_mapped or address
    else:
        effective = address
    if effective.is_loopback:
        return policy.allow_loopback
    if effective.is_link_local or effective.is_multicast or effective.is_unspecified or effective.is_reserved:
        return False
    if effective.is_private or not effective.is_global:
        return policy.allow_private
    return True


def _parse(url: object) -> _Target:
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise _refuse("not a URL", None)
    try:
        normal = normalise_url(url)
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("not a plain http(s) URL", None) from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    origin = (scheme, host, port if port is not None else DEFAULT_PORTS[scheme])
    if parts.netloc.startswith("[") or ":" in host:
        if "%" in host:
            raise _refuse("IPv6 zone id", None)
        try:
            return _Target(normal, origin, ipaddress.IPv6Address(host))
        except ValueError:
            raise _refuse("bad IPv6 literal", None) from None
    if not _HOSTNAME.fullmatch(host):
        raise _refuse("host name not plain ASCII", None)
    try:
        return _Target(normal, origin, ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return _Target(normal, origin, None)
    raise _refuse("non-canonical IPv4 literal", None)


def _refuse(why: str, target: _Target | None) -> Forbidden:
    host = target.origin[1][:64] if target is not None else "-"
    log.warning("fhirServer refused check=fhirServer why=%s host=%s", why, host)
    return Forbidden("fhirServer")


# ---------------------------------------------------------------------------------------------------------
# The pinned transport
# ---------------------------------------------------------------------------------------------------------


def resolve_checked(host: str, port: int, policy: ConnectPolicy) -> IPAddress:
    """Resolve `host` once; every address must pass the policy (Forbidden), else ConnectionError (412)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise requests.ConnectionError("the FHIR server's host name could not be resolved") from None
        addresses = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    if not addresses:
        raise requests.ConnectionError("the FHIR server's host name has no address")
    if not all(address_allowed(address, policy) for address in addresses):
        log.warning(
            "fhirServer refused check=fhirServer why=resolves to a forbidden address host=%s", host[:64]
        )
        raise Forbidden("fhirServer")
    return addresses[0]


class PinnedAdapter(HTTPAdapter):
    """Sends each request to the address checked for it; pools are keyed by IP and SNI hostname."""

    def __init__(self, policy: ConnectPolicy) -> None:
        self._policy = policy
        self._sni = threading.local()
        super().__init__(max_retries=stale_connection_retry())

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _shared_pool_manager()

    def close(self) -> None:
        """The pool manager is shared by every hook call's session: nothing to release per session."""

    def send(  # noqa: PLR0917 - the signature of HTTPAdapter.send
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Any = None,
    ) -> requests.Response:
        url = request.url or ""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise Forbidden("fhirServer") from None
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        origin = (scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme, -1))
        if origin != self._policy.origin or "@" in parts.netloc:
            log.warning("fhirServer refused check=fhirServer why=request outside the fhirServer origin")
            raise Forbidden("fhirServer")
        address = resolve_checked(host, origin[2], self._policy)
        suffix = "" if origin[2] == DEFAULT_PORTS[scheme] else f":{origin[2]}"
        shown = f"[{address}]" if address.version == 6 else str(address)
        pinned = request.copy()
        pinned.url = urlunsplit((scheme, f"{shown}{suffix}", parts.path, parts.query, ""))
        pinned.headers["Host"] = (f"[{host}]" if ":" in host else host) + suffix
        self._sni.hostname = host if scheme == "https" and ":" not in host else None
        try:
            response = super().send(
                pinned, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies={}
            )
        finally:
            self._sni.hostname = None
        response.url = url
        response.request = request
        return response

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        hostname = getattr(self._sni, "hostname", None)
        if hostname and host_params["scheme"] == "https":
            extra: Any = pool_kwargs
            extra["server_hostname"] = hostname  # SNI and certificate check on the name, not the IP
        return host_params, pool_kwargs


def guarded_session(
    fhir_server: str, auth: VerifiedCaller | None, settings: TrustSettings
) -> requests.Session:
    """A Session for one hook call's FhirClient; raises Forbidden when `fhir_server` is not allowed."""
    policy = connect_policy(fhir_server, auth, settings)
    session = NoRedirectSession()
    session.trust_env = False
    session.proxies = {}
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = "osteoporosis-escalation-cds-service"
    adapter = PinnedAdapter(policy)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _shared_pool_manager() -> PoolManager:
    global _shared_pools  # noqa: PLW0603 - one connection pool per process, shared by hook calls
    with _shared_lock:
        if _shared_pools is None:
            _shared_pools = PoolManager(num_pools=_POOLS, maxsize=_POOL_CONNECTIONS, block=False)
            _shared_pools.pool_classes_by_scheme = deadline_pool_classes()  # wall-clock deadlines
        return _shared_pools
