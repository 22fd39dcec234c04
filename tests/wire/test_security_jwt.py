"""ClientAuthenticator: every refusal is a 401 with one fixed body, valid ES384/RS384 tokens pass, replay,
audience rules, sandbox and dev issuers by mode, tenant/service 403. No test reaches the network."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from cds_service.core.security_errors import Forbidden, Unauthorized, error_headers
from cds_service.record.replay import InMemoryReplayStore
from cds_service.wire.auth.dev_keys import mint_dev_token
from cds_service.wire.auth.issuers import SANDBOX_ISSUER, SANDBOX_JKU, SANDBOX_KID
from cds_service.wire.auth.jwt_verify import ClientAuthenticator
from cds_service.wire.cdshooks import operation_outcome
from tests.wire.test_security_support import (
    BASE,
    ISS,
    JKU,
    NOW,
    SERVICE_ID,
    SERVICE_URL,
    Key,
    authenticator,
    bearer,
    claims,
    ec_key,
    hs256_with_secret,
    issuer_entry,
    jwks,
    no_secrets_in_logs,
    rsa_key,
    sign,
    sign_raw,
    trust_settings,
    unsigned,
    write_issuers,
)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])
__all__ = ["no_secrets_in_logs"]

ES = ec_key("es-key-1")


@pytest.fixture(autouse=True)
def no_http() -> Iterator[responses.RequestsMock]:
    """Any HTTP request made by a test here fails (nothing registered) and is recorded."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
    assert not mock.calls, "no test in this module may send an HTTP request"


@pytest.fixture
def auth(tmp_path: Path) -> ClientAuthenticator:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES, algorithms=["ES384", "RS384"]))
    return authenticator(trust_settings(tmp_path, trusted_issuers=path))


def refused(auth: ClientAuthenticator, header: str | None, endpoint: Any = "service") -> str:
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(header, endpoint, SERVICE_ID)
    error = caught.value
    assert error.status == 401
    assert operation_outcome(error) == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "login",
                "diagnostics": "Client authentication failed: a valid CDS Hooks client JWT is required",
            }
        ],
    }
    assert error_headers(error) == {"WWW-Authenticate": "Bearer"}
    assert error.reason not in json.dumps(operation_outcome(error))
    return error.reason


# -- accepted -----------------------------------------------------------------------------------------------


def test_valid_es384_token_is_accepted(auth: ClientAuthenticator) -> None:
    body = claims(tenant="t1", sub="client-1", nbf=NOW - 300)
    context = auth.authenticate(bearer(sign(ES, body)), "service", SERVICE_ID)
    assert (context.iss, context.tenant, context.sub, context.jti, context.kid) == (
        ISS,
        "t1",
        "client-1",
        body["jti"],
        ES.kid,
    )
    assert context.authenticated and context.fhir_servers == ("https://ehr.example.org/api/FHIR/R4",)


def test_valid_rs384_epic_style_token_with_jku_and_thumbprint_kid(tmp_path: Path) -> None:
    key = rsa_key("dGhpcyBpcyBh+/Epic=kid==")
    entry = {"iss": ISS, "jku": [JKU], "algorithms": ["RS384"], "fhir_servers": [ISS]}
    settings = trust_settings(tmp_path, trusted_issuers=write_issuers(tmp_path, entry))
    with responses.RequestsMock() as mock:
        mock.get(JKU, json=jwks(key))
        auth = authenticator(settings)
        token = sign(key, claims(sub="epic-client-id", nbf=NOW - 300), jku=JKU)
        assert auth.authenticate(f"bearer  {token} ", "service", SERVICE_ID).kid == key.kid
        assert len(mock.calls) == 1


@pytest.mark.parametrize(
    ("endpoint", "aud"),
    [
        ("discovery", f"{BASE}/cds-services"),
        ("service", f"{BASE}/cds-services/{SERVICE_ID}"),
        ("feedback", f"{BASE}/cds-services/{SERVICE_ID}/feedback"),
        ("service", f"HTTPS://CDS.Example.org:443/prefix/cds-services/{SERVICE_ID}"),
        ("service", ["https://other.example.org/", SERVICE_URL]),
    ],
)
def test_audience_per_endpoint_normalised_and_as_array(
    auth: ClientAuthenticator, endpoint: Any, aud: Any
) -> None:
    auth.authenticate(bearer(sign(ES, claims(aud=aud))), endpoint, SERVICE_ID)


def test_issuer_audience_replaces_endpoint_check(tmp_path: Path) -> None:
    configured = "https://cds.example.org/epic-configured"
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES, audience=configured))
    auth = authenticator(trust_settings(tmp_path, trusted_issuers=path, public_base_url=None))
    auth.authenticate(bearer(sign(ES, claims(aud=configured))), "feedback", SERVICE_ID)
    assert refused(auth, bearer(sign(ES, claims(aud=SERVICE_URL)))) == "bad_audience"


# -- refused: one test per category ---------------------------------------------------------------------


def test_missing_or_non_bearer_header(auth: ClientAuthenticator) -> None:
    assert refused(auth, None) == "missing_token"
    assert refused(auth, "  ") == "missing_token"
    assert refused(auth, "Basic dXNlcjpwYXNz") == "missing_token"
    assert refused(auth, "Bearer not-a-jwt") == "malformed"
    assert refused(auth, "Bearer " + "a" * 20_000 + ".b.c") == "malformed"


def test_expired(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ES, claims(now=NOW - 400)))) == "expired"


def test_expiry_within_leeway_is_accepted(auth: ClientAuthenticator) -> None:
    auth.authenticate(bearer(sign(ES, claims(now=NOW - 320))), "service", SERVICE_ID)


def test_iat_in_the_future(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ES, claims(now=NOW + 120)))) == "issued_in_future"


def test_nbf_in_the_future(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ES, claims(nbf=NOW + 120)))) == "not_yet_valid"


def test_lifetime_too_long(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ES, claims(exp=NOW + 3601)))) == "lifetime_too_long"


def test_wrong_audience(auth: ClientAuthenticator) -> None:
    assert (
        refused(auth, bearer(sign(ES, claims(aud="https://evil.example.org/cds-services")))) == "bad_audience"
    )
    wrong_endpoint = bearer(sign(ES, claims(aud=SERVICE_URL)))
    assert refused(auth, wrong_endpoint, "feedback") == "bad_audience"
    assert refused(auth, bearer(sign(ES, claims(aud=[1, 2])))) == "bad_audience"
    assert refused(auth, bearer(sign(ES, claims(aud=SERVICE_URL + "/")))) == "bad_audience"


def test_unknown_issuer(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ES, claims(iss="https://evil.example.org")))) == "unknown_issuer"


def test_unknown_kid(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ec_key("not-configured"), claims()))) == "unknown_kid"


def test_key_type_must_match_algorithm(auth: ClientAuthenticator) -> None:
    rs_same_kid = Key(rsa_key("other").private, {**rsa_key("other").public_jwk, "kid": ES.kid}, "RS384")
    assert refused(auth, bearer(sign(rs_same_kid, claims()))) == "unknown_kid"


def test_alg_none(auth: ClientAuthenticator) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": ES.kid}, claims())
    assert refused(auth, bearer(token)) == "bad_algorithm"


def test_hs256_signed_with_the_public_key_as_secret(auth: ClientAuthenticator) -> None:
    token = hs256_with_secret(ES.pem_public(), {"alg": "HS256", "typ": "JWT", "kid": ES.kid}, claims())
    assert refused(auth, bearer(token)) == "bad_algorithm"


@pytest.mark.parametrize("alg", ["HS384", "HS512", "PS384", "EdDSA", "ES512"])
def test_other_algorithms(auth: ClientAuthenticator, alg: str) -> None:
    token = unsigned({"alg": alg, "typ": "JWT", "kid": ES.kid}, claims(), b"x" * 64)
    assert refused(auth, bearer(token)) == "bad_algorithm"


def test_es256_only_when_configured(tmp_path: Path) -> None:
    key = ec_key("p256", "ES256")
    path = write_issuers(tmp_path, issuer_entry(tmp_path, key, algorithms=["ES384"]))
    assert refused(
        authenticator(trust_settings(tmp_path, trusted_issuers=path)), bearer(sign(key, claims()))
    ) == ("bad_algorithm")
    path = write_issuers(tmp_path, issuer_entry(tmp_path, key, algorithms=["ES256"]))
    authenticator(trust_settings(tmp_path, trusted_issuers=path)).authenticate(
        bearer(sign(key, claims())), "service", SERVICE_ID
    )


def test_jku_not_allow_listed_is_never_fetched(
    auth: ClientAuthenticator, no_http: responses.RequestsMock
) -> None:
    token = sign(ES, claims(), jku="https://evil.example.org/jwks.json")
    assert refused(auth, bearer(token)) == "jku_not_allowed"
    assert not no_http.calls


def test_jku_match_is_exact(tmp_path: Path, no_http: responses.RequestsMock) -> None:
    entry = {"iss": ISS, "jku": [JKU], "algorithms": ["ES384"]}
    auth = authenticator(trust_settings(tmp_path, trusted_issuers=write_issuers(tmp_path, entry)))
    for variant in (JKU.upper(), JKU + "/", JKU + "?x=1", JKU.replace("https", "http")):
        assert refused(auth, bearer(sign(ES, claims(), jku=variant))) == "jku_not_allowed"
    assert refused(auth, bearer(sign(ES, claims()))) == "jku_not_allowed"  # no jku, no out-of-band set
    assert not no_http.calls


def test_replayed_jti_across_two_workers_sharing_one_store(tmp_path: Path) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES))
    store = InMemoryReplayStore(clock=lambda: float(NOW))
    worker_a = authenticator(trust_settings(tmp_path, trusted_issuers=path), store)
    worker_b = authenticator(trust_settings(tmp_path, trusted_issuers=path), store)
    token = bearer(sign(ES, claims()))
    worker_a.authenticate(token, "service", SERVICE_ID)
    assert refused(worker_b, token) == "replay"
    assert refused(worker_a, token) == "replay"


def test_tampered_payload(auth: ClientAuthenticator) -> None:
    head, _payload, signature = sign(ES, claims()).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(tenant="admin")).encode()).rstrip(b"=").decode()
    assert refused(auth, bearer(f"{head}.{forged}.{signature}")) == "bad_signature"


def test_signature_by_another_key_with_the_same_kid(auth: ClientAuthenticator) -> None:
    impostor = Key(ec_key("impostor").private, ES.public_jwk, "ES384")
    assert refused(auth, bearer(sign(impostor, claims()))) == "bad_signature"


@pytest.mark.parametrize("typ", ["at+jwt", "JWE", 7])
def test_wrong_typ(auth: ClientAuthenticator, typ: Any) -> None:
    assert refused(auth, bearer(sign(ES, claims(), typ=typ))) == "bad_type"


def test_lower_case_typ_and_absent_typ_are_accepted(auth: ClientAuthenticator) -> None:
    auth.authenticate(bearer(sign(ES, claims(), typ="jwt")), "service", SERVICE_ID)
    token = unsigned({"alg": "ES384", "kid": ES.kid}, {})  # shape only: typ absent must not be bad_type
    assert refused(auth, bearer(token)) == "missing_claim"


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "jti"])
def test_missing_claims(auth: ClientAuthenticator, claim: str) -> None:
    body = claims()
    del body[claim]
    assert refused(auth, bearer(sign(ES, body))) == "missing_claim"


def test_missing_kid_and_malformed_claims(auth: ClientAuthenticator) -> None:
    assert refused(auth, bearer(sign(ES, claims(), kid=None))) == "malformed"
    assert refused(auth, bearer(sign(ES, claims(exp="tomorrow")))) == "malformed"
    assert refused(auth, bearer(sign(ES, claims(jti=42)))) == "malformed"
    assert refused(auth, bearer(sign_raw(ES, claims(iss=["a"])))) == "malformed"
    assert refused(auth, bearer(sign(ES, claims(tenant=["a"])))) == "malformed"


# -- 403: issuer/tenant not allowed for this service ------------------------------------------------------


def test_tenant_not_allowed_is_403_after_authentication(tmp_path: Path) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES, tenants=["tenant-a"]))
    auth = authenticator(trust_settings(tmp_path, trusted_issuers=path))
    assert (
        auth.authenticate(bearer(sign(ES, claims(tenant="tenant-a"))), "service", SERVICE_ID).tenant
        == "tenant-a"
    )
    for body in (claims(tenant="tenant-b"), claims()):
        with pytest.raises(Forbidden) as caught:
            auth.authenticate(bearer(sign(ES, body)), "service", SERVICE_ID)
        assert caught.value.status == 403 and caught.value.issues[0].code == "forbidden"
        assert "tenant" in caught.value.issues[0].diagnostics


def test_issuer_not_allowed_this_service_is_403(tmp_path: Path) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES, services=["another-service"]))
    auth = authenticator(trust_settings(tmp_path, trusted_issuers=path))
    with pytest.raises(Forbidden) as caught:
        auth.authenticate(bearer(sign(ES, claims())), "service", SERVICE_ID)
    assert caught.value.check == "issuer"
    auth.authenticate(bearer(sign(ES, claims(aud=f"{BASE}/cds-services"))), "discovery", "")


# -- sandbox and dev issuers by mode ------------------------------------------------------------------------


SANDBOX_STANDIN = ec_key(SANDBOX_KID)  # a generated key in place of the shipped one (same kid, P-384)


def sandbox_token(aud: str) -> str:
    body = claims(aud=aud, iss=SANDBOX_ISSUER)
    return sign(SANDBOX_STANDIN, body, jku=SANDBOX_JKU)


def test_sandbox_token_accepted_in_dev_without_fetching_its_jku(
    tmp_path: Path, no_http: responses.RequestsMock
) -> None:
    settings = trust_settings(tmp_path, auth_mode="dev", public_base_url=None)
    auth = authenticator(settings, sandbox_jwks=jwks(SANDBOX_STANDIN))
    aud = f"http://localhost:8000/cds-services/{SERVICE_ID}"  # localhost == 127.0.0.1 in dev
    assert auth.authenticate(bearer(sandbox_token(aud)), "service", SERVICE_ID).iss == SANDBOX_ISSUER
    discovery = "http://127.0.0.1:8000/cds-services"
    auth.authenticate(bearer(sandbox_token(discovery)), "discovery", "")
    assert not no_http.calls


def test_shipped_sandbox_key_does_not_verify_a_generated_key(tmp_path: Path) -> None:
    auth = authenticator(trust_settings(tmp_path, auth_mode="dev", public_base_url=None))
    aud = f"http://127.0.0.1:8000/cds-services/{SERVICE_ID}"
    assert refused(auth, bearer(sandbox_token(aud))) == "bad_signature"


def test_sandbox_token_refused_in_required(tmp_path: Path) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES))
    auth = authenticator(trust_settings(tmp_path, trusted_issuers=path), sandbox_jwks=jwks(SANDBOX_STANDIN))
    assert refused(auth, bearer(sandbox_token(SERVICE_URL))) == "unknown_issuer"


def test_localhost_equivalence_only_outside_required(tmp_path: Path) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES))
    local = "http://127.0.0.1:8000"
    aud = f"http://localhost:8000/cds-services/{SERVICE_ID}"
    dev = authenticator(
        trust_settings(tmp_path, trusted_issuers=path, auth_mode="dev", public_base_url=local)
    )
    dev.authenticate(bearer(sign(ES, claims(aud=aud))), "service", SERVICE_ID)
    required = authenticator(trust_settings(tmp_path, trusted_issuers=path, public_base_url=local))
    assert refused(required, bearer(sign(ES, claims(aud=aud)))) == "bad_audience"


def test_dev_token_accepted_in_dev_and_refused_in_required(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"http://localhost:8000/cds-services/{SERVICE_ID}"
    dev = authenticator(trust_settings(tmp_path, auth_mode="dev", public_base_url=None))
    token = mint_dev_token(data_dir, url, now=NOW)
    assert dev.authenticate(bearer(token), "service", SERVICE_ID).iss == "urn:cds-service:dev"
    assert refused(dev, bearer(token)) == "replay"
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES))
    required = authenticator(
        trust_settings(tmp_path, trusted_issuers=path, public_base_url="http://localhost:8000")
    )
    assert refused(required, bearer(mint_dev_token(data_dir, url, now=NOW))) == "unknown_issuer"


def test_off_mode_accepts_without_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    auth = authenticator(trust_settings(tmp_path, auth_mode="off", public_base_url=None))
    assert "NOT verified" in caplog.text
    context = auth.authenticate(None, "service", SERVICE_ID)
    assert context.mode == "off" and not context.authenticated and context.issuer is None


# -- logging ----------------------------------------------------------------------------------------------


def test_one_warning_per_refusal_with_category_and_ids_but_no_token(
    auth: ClientAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    body = claims(now=NOW - 400, tenant="t-9")
    token = sign(ES, body)
    caplog.clear()
    refused(auth, bearer(token))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "reason=expired" in message and f"jti={body['jti']}" in message
    assert f"kid={ES.kid}" in message and "tenant=t-9" in message and f"iss={ISS}" in message
    assert token not in message and token.split(".")[2] not in message


def test_jwt_looking_claim_values_are_redacted_in_the_log(
    auth: ClientAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    nested = sign(ES, claims())
    refused(auth, bearer(sign(ES, claims(iss="https://evil.example.org", jti=nested))))
    assert "iss=https://evil.example.org" in caplog.text and "jti=[redacted]" in caplog.text
