"""SMART App Launch 2.0 (EHR launch, public client, PKCE S256): the outbound half.

`iss` is checked against CDS_SMART_ISS_ALLOWLIST before any request (SSRF); endpoints come from
`{iss}/.well-known/smart-configuration` only (never `/metadata`); the code is exchanged with authlib's
OAuth2 client. Every request goes through the pinned transport of the fhirServer guard (the host is
resolved once, the address class checked, redirects never followed) with (connect, read) timeouts.
Nothing here logs a URL path, a query, a code, a verifier or a token.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Final

import orjson
import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from cds_service.core.audience import normalise_url
from cds_service.core.no_redirect import NoRedirectSession
from cds_service.core.security_errors import Forbidden
from cds_service.gather.fhir_server_guard import ConnectPolicy, PinnedAdapter
from cds_service.gather.fhir_urls import Origin, origin_of
from cds_service.gather.prefetch import PREFETCH_RESOURCE_TYPES

log = logging.getLogger(__name__)

WELL_KNOWN: Final = "/.well-known/smart-configuration"
MAX_DISCOVERY_BYTES: Final = 256 * 1024
# What the app reads: the hook's prefetch resource types plus referenced Medications (SMART v2 `rs`).
SCOPES: Final = " ".join(
    [
        "launch",
        *(f"patient/{t}.rs" for t in dict.fromkeys(PREFETCH_RESOURCE_TYPES.values())),
        "patient/Medication.rs",
    ]
)


class SmartLaunchError(Exception):
    """A launch that cannot go on; `title`/`detail` are safe to show (no token, no PHI)."""

    def __init__(self, title: str, detail: str, status: int = 400) -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class SmartEndpoints:
    authorize: str
    token: str


@dataclass(frozen=True)
class TokenGrant:
    """The token response fields the app uses (the token itself stays server-side)."""

    access_token: str
    patient: str
    expires_in: int | None
    app_context: str | None
    scope: str


def _local_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def _policy(origin: Origin) -> ConnectPolicy:
    """Loopback/private addresses only for an origin listed with such a host; public names stay public."""
    local = _local_host(origin[1])
    return ConnectPolicy(origin, allow_loopback=local, allow_private=local)


@dataclass(frozen=True)
class SmartTrust:
    """Which `iss` (FHIR bases) and token endpoint origins the app may contact."""

    iss_allowlist: tuple[str, ...]
    auth_origins: tuple[Origin, ...]

    @classmethod
    def from_settings(cls, iss_list: str, auth_origins: str) -> SmartTrust:
        bases = tuple(entry.strip() for entry in iss_list.split(",") if entry.strip())
        origins = []
        for entry in (part.strip() for part in auth_origins.split(",") if part.strip()):
            origin = origin_of(entry)
            if origin is None:
                raise ValueError(f"CDS_SMART_AUTH_ORIGINS entry {entry[:80]!r} is not an http(s) origin")
            origins.append(origin)
        for base in bases:
            if origin_of(base) is None:
                raise ValueError(f"CDS_SMART_ISS_ALLOWLIST entry {base[:80]!r} is not an http(s) URL")
        return cls(bases, tuple(origins))

    def iss_policy(self, iss: str) -> ConnectPolicy:
        """The connect policy for a listed `iss`; SmartLaunchError (403) for any other."""
        origin = origin_of(iss) if len(iss) <= 2048 else None
        try:
            listed = origin is not None and normalise_url(iss) in {
                normalise_url(b) for b in self.iss_allowlist
            }
        except ValueError:
            listed = False
        if origin is None or not listed:
            log.warning("smart launch refused why=iss not on CDS_SMART_ISS_ALLOWLIST")
            raise SmartLaunchError(
                "This FHIR server is not allowed",
                "The launch named a FHIR server (iss) that this service is not configured to read. "
                "An administrator must add its base URL to CDS_SMART_ISS_ALLOWLIST.",
                403,
            )
        return _policy(origin)

    def token_policy(self, token_url: str, iss: str) -> ConnectPolicy:
        """The token endpoint must be on the iss origin or on a listed CDS_SMART_AUTH_ORIGINS origin."""
        origin = origin_of(token_url)
        if origin is None or (origin != origin_of(iss) and origin not in self.auth_origins):
            log.warning("smart launch refused why=token endpoint origin not allowed")
            raise SmartLaunchError(
                "The authorization server is not allowed",
                "The FHIR server's SMART configuration names a token endpoint on another origin. "
                "An administrator must list that origin in CDS_SMART_AUTH_ORIGINS.",
                403,
            )
        return _policy(origin)


def pinned_session(policy: ConnectPolicy) -> requests.Session:
    """A session that connects only to `policy`'s origin at a checked address, never redirected."""
    session = NoRedirectSession()
    _pin(session, policy)
    return session


def _pin(session: requests.Session, policy: ConnectPolicy) -> None:
    session.trust_env = False
    session.proxies = {}
    session.headers["User-Agent"] = "osteoporosis-escalation-cds-service"
    adapter = PinnedAdapter(policy)
    session.mount("https://", adapter)
    session.mount("http://", adapter)


def _unreachable(what: str) -> SmartLaunchError:
    return SmartLaunchError(
        "The EHR's servers could not be reached",
        f"The {what} did not answer in time or answered with an error. Try launching the app again.",
        502,
    )


def discover(iss: str, policy: ConnectPolicy, timeouts: tuple[float, float]) -> SmartEndpoints:
    """Endpoints from `{iss}/.well-known/smart-configuration` (SMART 2.0; `/metadata` is not read)."""
    url = iss.rstrip("/") + WELL_KNOWN
    try:
        with pinned_session(policy) as session:
            response = session.get(url, timeout=timeouts, headers={"Accept": "application/json"}, stream=True)
            body = response.raw.read(MAX_DISCOVERY_BYTES + 1, decode_content=True)
    except (requests.RequestException, Forbidden):
        raise _unreachable("FHIR server's SMART configuration") from None
    if response.status_code != 200 or len(body) > MAX_DISCOVERY_BYTES:
        raise _unreachable("FHIR server's SMART configuration")
    try:
        config: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        config = None
    if not isinstance(config, dict):
        raise _unreachable("FHIR server's SMART configuration")
    authorize, token = config.get("authorization_endpoint"), config.get("token_endpoint")
    methods = config.get("code_challenge_methods_supported")
    if not (
        isinstance(authorize, str) and origin_of(authorize) and isinstance(token, str) and origin_of(token)
    ):
        raise SmartLaunchError(
            "The EHR's SMART configuration is incomplete",
            "The FHIR server's .well-known/smart-configuration has no usable authorization_endpoint "
            "and token_endpoint.",
            502,
        )
    if not (isinstance(methods, list) and "S256" in methods):
        raise SmartLaunchError(
            "The EHR does not support PKCE S256",
            "SMART App Launch 2.0 requires code_challenge_methods_supported to include S256; "
            "this app refuses to launch without it.",
            502,
        )
    return SmartEndpoints(authorize=authorize, token=token)


def _oauth_client(client_id: str, redirect_uri: str) -> OAuth2Session:
    return OAuth2Session(
        client_id,
        scope=SCOPES,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",  # noqa: S106 - public client: no secret
    )


def authorization_url(
    endpoints: SmartEndpoints,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_verifier: str,
    launch: str,
    aud: str,
) -> str:
    """The authorize redirect: code flow, PKCE S256 challenge of `code_verifier`, `launch` and `aud`."""
    with _oauth_client(client_id, redirect_uri) as client:
        url, _state = client.create_authorization_url(
            endpoints.authorize, state=state, code_verifier=code_verifier, launch=launch, aud=aud
        )
    return str(url)


def exchange_code(
    endpoints: SmartEndpoints,
    policy: ConnectPolicy,
    *,
    client_id: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    timeouts: tuple[float, float],
) -> TokenGrant:
    """POST the code and verifier to the token endpoint; the response must name a `patient`."""
    with _oauth_client(client_id, redirect_uri) as client:
        _pin(client, policy)
        try:
            token = client.fetch_token(
                endpoints.token,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                timeout=timeouts,
                allow_redirects=False,
            )
        except AuthlibBaseError as error:
            log.warning("smart token refused error=%s", str(getattr(error, "error", "-"))[:64])
            raise SmartLaunchError(
                "The EHR refused to authorize this app",
                "The authorization server did not accept the authorization code "
                f"({str(getattr(error, 'error', 'error'))[:64]}). If you did not start this launch "
                "yourself, close this window; otherwise launch the app again from the EHR.",
                401,
            ) from None
        except (requests.RequestException, Forbidden, ValueError):
            raise _unreachable("authorization server") from None
    return _grant(dict(token))


def _grant(token: dict[str, Any]) -> TokenGrant:
    access, patient = token.get("access_token"), token.get("patient")
    if not isinstance(access, str) or not access:
        raise SmartLaunchError("The EHR gave no access token", "The token response had no access_token.", 401)
    if not isinstance(patient, str) or not patient:
        raise SmartLaunchError(
            "The EHR gave no patient",
            "The token response has no patient context: launch the app from a patient's chart.",
            400,
        )
    expires = token.get("expires_in")
    app_context = token.get("appContext")
    return TokenGrant(
        access_token=access,
        patient=patient,
        expires_in=int(expires)
        if isinstance(expires, int | float | str) and str(expires).isdigit()
        else None,
        app_context=app_context if isinstance(app_context, str) else None,
        scope=str(token.get("scope", "")),
    )
