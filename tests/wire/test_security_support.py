"""Helpers for the security tests: real keys (cryptography), signed tokens, settings and a log guard.

Imported by the other `test_security_*` modules; the one test here checks the helpers themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.core.trust_settings import TrustSettings
from cds_service.record.replay import InMemoryReplayStore, ReplayStore
from cds_service.wire.auth.jwks import JwksFetcher, JwksRegistry
from cds_service.wire.auth.jwt_verify import ClientAuthenticator, build_authenticator

NOW = 1_800_000_000
BASE = "https://cds.example.org/prefix"
SERVICE_ID = "osteoporosis-escalation"
SERVICE_URL = f"{BASE}/cds-services/{SERVICE_ID}"
ISS = "https://ehr.example.org/api/FHIR/R4"
FHIR = "https://ehr.example.org/api/FHIR/R4"
JKU = "https://ehr.example.org/api/epic/2019/Security/Open/PublicKeys/530013/530013"
ACCESS_TOKEN = "access-token-Zq9-never-logged"


@dataclass(frozen=True)
class Key:
    """A signing key pair: the private key and its public JWK (with kid/use/alg)."""

    private: Any
    public_jwk: dict[str, Any]
    alg: str

    @property
    def kid(self) -> str:
        kid: str = self.public_jwk["kid"]
        return kid

    def pem_public(self) -> bytes:
        public = self.private.public_key()
        return bytes(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )


@cache
def ec_key(kid: str, alg: str = "ES384") -> Key:
    curve = ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()
    private = ec.generate_private_key(curve)
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return Key(private, {**jwk, "kid": kid, "use": "sig", "alg": alg}, alg)


@cache
def rsa_key(kid: str, alg: str = "RS384", bits: int = 2048) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return Key(private, {**jwk, "kid": kid, "use": "sig"}, alg)


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


def claims(aud: Any = SERVICE_URL, iss: Any = ISS, now: int = NOW, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not None}


def sign(key: Key, body: dict[str, Any], **header: Any) -> str:
    headers = {"kid": key.kid, "typ": "JWT", **header}
    headers = {name: value for name, value in headers.items() if value is not None}
    return jwt.encode(body, key.private, algorithm=key.alg, headers=headers)


def sign_raw(key: Key, body: dict[str, Any]) -> str:
    """Signed without PyJWT's claim checks (e.g. a non-string `iss`)."""
    payload = json.dumps(body).encode()
    return jwt.api_jws.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}.{_b64(signature)}"


def hs256_with_secret(secret: bytes, header: dict[str, Any], body: dict[str, Any]) -> str:
    """An HS256 token built by hand (PyJWT refuses a PEM as HMAC secret): the key-confusion attack."""
    head = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    mac = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(mac)}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


def write_issuers(tmp_path: Path, *issuers: dict[str, Any]) -> Path:
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": list(issuers)}), encoding="utf-8")
    return path


def issuer_entry(tmp_path: Path, key: Key, **overrides: Any) -> dict[str, Any]:
    """An issuer whose keys are in a JWKS file (no network)."""
    jwks_path = tmp_path / f"jwks-{key.kid.replace('/', '_')}.json"
    jwks_path.write_text(json.dumps(jwks(key)), encoding="utf-8")
    entry: dict[str, Any] = {
        "iss": ISS,
        "jwks_file": str(jwks_path),
        "algorithms": [key.alg],
        "fhir_servers": [FHIR],
    }
    entry.update(overrides)
    return {name: value for name, value in entry.items() if value is not None}


def trust_settings(tmp_path: Path, **values: Any) -> TrustSettings:
    values.setdefault("auth_mode", "required")
    values.setdefault("public_base_url", BASE)
    values.setdefault("data_dir", tmp_path / "data")
    return TrustSettings(**values)


def authenticator(
    settings: TrustSettings,
    store: ReplayStore | None = None,
    *,
    clock: Callable[[], float] = lambda: float(NOW),
    registry: JwksRegistry | None = None,
    sandbox_jwks: dict[str, Any] | None = None,
) -> ClientAuthenticator:
    return build_authenticator(
        settings,
        store if store is not None else InMemoryReplayStore(clock=clock),
        registry=registry if registry is not None else JwksRegistry(JwksFetcher()),
        sandbox_jwks=sandbox_jwks,
        clock=clock,
    )


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After every test of an importing module: no JWT (`eyJ`) and no access token in any log record."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + " " + repr(record.__dict__.get("args"))
        assert "eyJ" not in text, f"a JWT reached the log: {record.name}"
        assert ACCESS_TOKEN not in text, f"the access token reached the log: {record.name}"


def test_helpers_sign_tokens_the_verifier_accepts(tmp_path: Path) -> None:
    key = ec_key("helper-kid")
    path = write_issuers(tmp_path, issuer_entry(tmp_path, key))
    auth = authenticator(trust_settings(tmp_path, trusted_issuers=path))
    context = auth.authenticate(bearer(sign(key, claims())), "service", SERVICE_ID)
    assert context.iss == ISS
