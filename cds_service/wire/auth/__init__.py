"""Client trust: CDS Hooks 2.0 JWT verification, issuers, JWKS, replay protection, dev keys."""

from cds_service.core.security_errors import Forbidden, SecurityConfigError, Unauthorized, error_headers
from cds_service.core.trust_settings import TrustSettings
from cds_service.record.replay import (
    InMemoryReplayStore,
    ReplayStore,
    replay_store_allowed,
    require_shared_replay_store,
)
from cds_service.wire.auth.dev_keys import mint_dev_token
from cds_service.wire.auth.jwt_verify import AuthContext, ClientAuthenticator, build_authenticator

__all__ = [
    "AuthContext",
    "ClientAuthenticator",
    "Forbidden",
    "InMemoryReplayStore",
    "ReplayStore",
    "SecurityConfigError",
    "TrustSettings",
    "Unauthorized",
    "build_authenticator",
    "error_headers",
    "mint_dev_token",
    "replay_store_allowed",
    "require_shared_replay_store",
]
