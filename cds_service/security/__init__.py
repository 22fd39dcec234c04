"""Client trust (CDS Hooks 2.0 JWT verification, replay protection) and the fhirServer SSRF guard."""

from cds_service.security.dev_keys import mint_dev_token
from cds_service.security.errors import Forbidden, SecurityConfigError, Unauthorized, error_headers
from cds_service.security.fhir_server_guard import check_fhir_server, guarded_session
from cds_service.security.jwt_verify import AuthContext, ClientAuthenticator, build_authenticator
from cds_service.security.replay import (
    InMemoryReplayStore,
    ReplayStore,
    replay_store_allowed,
    require_shared_replay_store,
)
from cds_service.security.settings import TrustSettings

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
    "check_fhir_server",
    "error_headers",
    "guarded_session",
    "mint_dev_token",
    "replay_store_allowed",
    "require_shared_replay_store",
]
