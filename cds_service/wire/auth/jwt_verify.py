"""CDS Hooks 2.0 "Trusting CDS Clients": verify the client JWT sent as `Authorization: Bearer <JWT>`.

Every failure raises `Unauthorized(reason)` (401, one fixed body) and logs one WARNING line with the
reason category and the token's `iss`, `tenant`, `kid` and `jti` when decodable, never the token itself.
A valid token whose issuer or tenant may not use the service raises `Forbidden` (403).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import jwt
from jwt.exceptions import InvalidSignatureError, PyJWTError

from cds_service.core.audience import Endpoint, audience_matches, expected_audience
from cds_service.core.security_errors import (
    Forbidden,
    ForbiddenCheck,
    Reason,
    SecurityConfigError,
    Unauthorized,
)
from cds_service.core.trust_settings import AuthMode, TrustSettings
from cds_service.record.replay import ReplayStore, require_shared_replay_store
from cds_service.wire.auth.dev_keys import dev_issuer
from cds_service.wire.auth.issuers import (
    IssuerConfig,
    TrustedIssuer,
    read_issuers_file,
    sandbox_issuer,
    trusted_issuer,
)
from cds_service.wire.auth.jwks import SIGNING_ALGORITHMS, JwksRegistry, KeySource

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_KID_CHARS: Final = 512
MAX_JTI_CHARS: Final = 512
REQUIRED_CLAIMS: Final = ("iss", "aud", "exp", "iat", "jti")
_JWS_COMPACT: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_VERIFY_SIGNATURE_ONLY: Final[Any] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
_LOG_VALUE_CHARS: Final = 128


@dataclass(frozen=True)
class AuthContext:
    """Who called: the verified issuer (None in `off` mode, where no JWT is checked)."""

    mode: AuthMode
    iss: str | None = None
    tenant: str | None = None
    sub: str | None = None
    jti: str | None = None
    kid: str | None = None
    issuer: IssuerConfig | None = None

    @property
    def authenticated(self) -> bool:
        return self.issuer is not None

    @property
    def fhir_servers(self) -> tuple[str, ...]:
        return self.issuer.fhir_servers if self.issuer is not None else ()


@dataclass
class _Seen:
    """Token fields for the refusal log line (unverified, sanitised when logged)."""

    endpoint: str
    iss: object = None
    tenant: object = None
    kid: object = None
    jti: object = None


class ClientAuthenticator:
    """Verifies client JWTs against the trusted issuers; one instance per worker process."""

    def __init__(
        self,
        settings: TrustSettings,
        issuers: Iterable[TrustedIssuer],
        replay_store: ReplayStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._issuers: Mapping[str, TrustedIssuer] = {issuer.config.iss: issuer for issuer in issuers}
        self._replay = replay_store
        self._clock = clock

    @property
    def mode(self) -> AuthMode:
        return self._settings.auth_mode

    def authenticate(
        self, authorization_header: str | None, endpoint: Endpoint, service_id: str
    ) -> AuthContext:
        """Verify the request's client JWT; raises Unauthorized (401) or Forbidden (403)."""
        if self._settings.auth_mode == "off":
            return AuthContext(mode="off")
        seen = _Seen(endpoint)
        try:
            context = self._verify(authorization_header, endpoint, service_id, seen)
        except _Refused as refusal:
            _log_refusal(refusal.reason, seen)
            raise Unauthorized(refusal.reason) from None
        issuer = context.issuer
        assert issuer is not None
        if endpoint != "discovery" and issuer.services is not None and service_id not in issuer.services:
            raise _forbidden("issuer", seen)
        if issuer.tenants is not None and context.tenant not in issuer.tenants:
            raise _forbidden("tenant", seen)
        return context

    # -- verification steps (each failure raises _Refused with its category) ------------------------------

    def _verify(self, header: str | None, endpoint: Endpoint, service_id: str, seen: _Seen) -> AuthContext:
        token = _bearer_token(header)
        unverified_header = _header(token, seen)
        alg = unverified_header["alg"]
        unverified = _unverified_claims(token, seen)
        issuer = self._issuers.get(unverified["iss"])
        if issuer is None:
            raise _Refused("unknown_issuer")
        if alg not in issuer.config.algorithms:
            raise _Refused("bad_algorithm")
        source = _key_source(issuer, unverified_header.get("jku"))
        key = source.key_for(unverified_header["kid"], alg)
        if key is None:
            raise _Refused("unknown_kid")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=[alg], options=_VERIFY_SIGNATURE_ONLY
            )
        except InvalidSignatureError:
            raise _Refused("bad_signature") from None
        except PyJWTError:
            raise _Refused("malformed") from None
        _remember(seen, claims)
        expires = self._check_claims(claims)
        self._check_audience(claims["aud"], issuer.config, endpoint, service_id)
        expires_at = datetime.fromtimestamp(expires + self._settings.jwt_leeway_s, tz=UTC)
        if not self._replay.check_and_record(claims["iss"], claims["jti"], expires_at):
            raise _Refused("replay")
        return AuthContext(
            mode=self._settings.auth_mode,
            iss=claims["iss"],
            tenant=claims.get("tenant") if isinstance(claims.get("tenant"), str) else None,
            sub=claims.get("sub") if isinstance(claims.get("sub"), str) else None,
            jti=claims["jti"],
            kid=unverified_header["kid"],
            issuer=issuer.config,
        )

    def _check_claims(self, claims: Mapping[str, Any]) -> float:
        """Presence, types and times of the registered claims; returns `exp`."""
        if any(name not in claims for name in REQUIRED_CLAIMS):
            raise _Refused("missing_claim")
        jti, tenant = claims["jti"], claims.get("tenant")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise _Refused("malformed")
        if tenant is not None and not isinstance(tenant, str):
            raise _Refused("malformed")
        exp, iat, nbf = _number(claims["exp"]), _number(claims["iat"]), _number(claims.get("nbf", 0))
        now, leeway = self._clock(), self._settings.jwt_leeway_s
        if exp <= now - leeway:
            raise _Refused("expired")
        if iat > now + leeway:
            raise _Refused("issued_in_future")
        if nbf > now + leeway:
            raise _Refused("not_yet_valid")
        if exp <= iat:
            raise _Refused("malformed")
        if exp - iat > self._settings.jwt_max_lifetime_s:
            raise _Refused("lifetime_too_long")
        return exp

    def _check_audience(self, aud: object, issuer: IssuerConfig, endpoint: Endpoint, service_id: str) -> None:
        feedback_audience = issuer.profile.feedback_audience
        if endpoint == "feedback" and feedback_audience is not None:
            expected: tuple[str, ...] = feedback_audience  # Epic: `aud` typed in by the health system
        elif issuer.audience is not None:
            expected = issuer.audience
        else:
            base = self._settings.effective_base_url
            if base is None:  # refused at start-up; kept as a guard
                raise _Refused("bad_audience")
            expected = (expected_audience(base, endpoint, service_id),)
        loopback_equivalent = self._settings.auth_mode != "required"
        if not audience_matches(aud, expected, loopback_equivalent=loopback_equivalent):
            raise _Refused("bad_audience")


class _Refused(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def _bearer_token(header: str | None) -> str:
    if header is None or not header.strip():
        raise _Refused("missing_token")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise _Refused("missing_token")
    if len(token) > MAX_TOKEN_CHARS or not _JWS_COMPACT.fullmatch(token):
        raise _Refused("malformed")
    return token


def _header(token: str, seen: _Seen) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        raise _Refused("malformed") from None
    seen.kid = header.get("kid")
    if header.get("alg") not in SIGNING_ALGORITHMS:
        raise _Refused("bad_algorithm")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise _Refused("bad_type")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise _Refused("malformed")
    if "jku" in header and not isinstance(header["jku"], str):
        raise _Refused("malformed")
    return header


def _unverified_claims(token: str, seen: _Seen) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except PyJWTError:
        raise _Refused("malformed") from None
    _remember(seen, claims)
    if "iss" not in claims:
        raise _Refused("missing_claim")
    if not isinstance(claims["iss"], str):
        raise _Refused("malformed")
    return claims


def _remember(seen: _Seen, claims: Mapping[str, Any]) -> None:
    seen.iss, seen.tenant, seen.jti = claims.get("iss"), claims.get("tenant"), claims.get("jti")


def _key_source(issuer: TrustedIssuer, jku: str | None) -> KeySource:
    """The issuer's key set for this token: an allow-listed jku (exact match), else its out-of-band set."""
    if jku is not None:
        source = issuer.jku_keys.get(jku)
        if source is None:
            raise _Refused("jku_not_allowed")
        return source
    if issuer.default_keys is None:
        raise _Refused("jku_not_allowed")
    return issuer.default_keys


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Refused("malformed")
    return float(value)


def _safe(value: object) -> str:
    """A log-safe rendering of an unverified value: printable ASCII, clipped, JWT-looking text redacted."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else type(value).__name__
    if "eyJ" in text:
        return "[redacted]"
    text = "".join(ch if 0x21 <= ord(ch) < 0x7F else "?" for ch in text)
    return text[:_LOG_VALUE_CHARS] or "-"


def _log_refusal(reason: Reason, seen: _Seen) -> None:
    log.warning(
        "client jwt refused reason=%s endpoint=%s iss=%s tenant=%s kid=%s jti=%s",
        reason,
        seen.endpoint,
        _safe(seen.iss),
        _safe(seen.tenant),
        _safe(seen.kid),
        _safe(seen.jti),
    )


def _forbidden(check: ForbiddenCheck, seen: _Seen) -> Forbidden:
    log.warning(
        "client forbidden check=%s endpoint=%s iss=%s tenant=%s jti=%s",
        check,
        seen.endpoint,
        _safe(seen.iss),
        _safe(seen.tenant),
        _safe(seen.jti),
    )
    return Forbidden(check)


def build_authenticator(
    settings: TrustSettings,
    replay_store: ReplayStore,
    *,
    workers: int = 1,
    registry: JwksRegistry | None = None,
    sandbox_jwks: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> ClientAuthenticator:
    """Load and check the trust configuration for `settings.auth_mode`; SecurityConfigError stops start-up.

    `dev` adds the public sandbox issuer (shipped key; `sandbox_jwks` replaces it in tests) and the local
    dev issuer (key pair generated under `data_dir`).
    """
    mode = settings.auth_mode
    if mode == "off":
        log.warning(
            "CDS_AUTH_MODE=off: client JWTs are NOT verified and any caller is accepted. "
            "Never use this outside a local machine."
        )
        return ClientAuthenticator(settings, (), replay_store, clock=clock)
    require_shared_replay_store(workers, replay_store)
    registry = registry if registry is not None else JwksRegistry()
    issuers: list[TrustedIssuer] = []
    if settings.trusted_issuers is not None:
        configs = read_issuers_file(settings.trusted_issuers)
        issuers.extend(trusted_issuer(config, registry) for config in configs)
    if mode == "required":
        if not issuers:
            raise SecurityConfigError(
                "CDS_AUTH_MODE=required needs CDS_TRUSTED_ISSUERS (a trusted-issuers file)"
            )
        if settings.public_base_url is None and any(i.config.audience is None for i in issuers):
            raise SecurityConfigError(
                "CDS_AUTH_MODE=required needs CDS_PUBLIC_BASE_URL (the external URL under which "
                "/cds-services is served) unless every trusted issuer sets `audience`"
            )
    else:
        issuers.append(sandbox_issuer(sandbox_jwks))
        issuers.append(dev_issuer(settings.data_dir))
        log.warning(
            "CDS_AUTH_MODE=dev: JWTs from the public CDS Hooks sandbox (whose private key is public) and "
            "from the local dev issuer are accepted. Never use this in production."
        )
    return ClientAuthenticator(settings, issuers, replay_store, clock=clock)
