"""The local development issuer `urn:cds-service:dev` (trusted in CDS_AUTH_MODE=dev only).

Its ES384 key pair is generated into `{data_dir}/dev-issuer/` on first use: the private key file has mode
0600 (an existing file readable by group or others is refused), the public JWKS is written next to it.
`mint_dev_token` signs a fresh 5-minute JWT for one endpoint URL (`cds-service dev-token --url URL`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service.core.audience import normalise_url
from cds_service.core.security_errors import SecurityConfigError
from cds_service.wire.auth.issuers import DEV_ISSUER, IssuerConfig, TrustedIssuer, trusted_issuer
from cds_service.wire.auth.jwks import JwksRegistry

DEV_KEY_DIR: Final = "dev-issuer"
PRIVATE_KEY_FILE: Final = "dev-issuer-private-key.pem"
JWKS_FILE: Final = "dev-issuer-jwks.json"
DEV_TOKEN_LIFETIME_S: Final = 300
DEV_ALGORITHM: Final = "ES384"


@dataclass(frozen=True)
class DevKeys:
    private_key: ec.EllipticCurvePrivateKey
    kid: str
    jwks: dict[str, Any]


def ensure_dev_keys(data_dir: Path) -> DevKeys:
    """Load the dev issuer's key pair, generating it first if absent (safe when workers race)."""
    directory = data_dir / DEV_KEY_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = directory / PRIVATE_KEY_FILE
    if not key_path.exists():
        _create_private_key(key_path)
    private_key = _load_private_key(key_path)
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    kid = _thumbprint(jwk)
    jwks = {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": DEV_ALGORITHM}]}
    _write_public_jwks(directory / JWKS_FILE, jwks)
    return DevKeys(private_key, kid, jwks)


def dev_issuer(data_dir: Path) -> TrustedIssuer:
    """The dev issuer as a trusted issuer (no jku: its key set is the local public JWKS)."""
    keys = ensure_dev_keys(data_dir)
    config = IssuerConfig(iss=DEV_ISSUER, jwks=keys.jwks, algorithms=(DEV_ALGORITHM,))
    return trusted_issuer(config, JwksRegistry(), builtin=True)


def mint_dev_token(data_dir: Path, url: str, *, now: float | None = None) -> str:
    """A fresh dev-issuer JWT for the endpoint `url` (aud = url, new jti, 5-minute life)."""
    try:
        normalise_url(url, strip_trailing_slash=False)
    except ValueError as error:
        raise ValueError(f"--url must be the http(s) URL of a CDS Hooks endpoint: {error}") from None
    keys = ensure_dev_keys(data_dir)
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": DEV_ISSUER,
        "aud": url,
        "iat": issued,
        "exp": issued + DEV_TOKEN_LIFETIME_S,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": keys.kid, "typ": "JWT"}
    return jwt.encode(claims, keys.private_key, algorithm=DEV_ALGORITHM, headers=headers)


def _create_private_key(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place (fails if another won)."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecurityConfigError(
            f"{path} is readable by other users (mode {mode:o}); run `chmod 600` on it or delete it"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise SecurityConfigError(f"{path} is not a P-384 EC private key; delete it to generate a new one")
    return key


def _write_public_jwks(path: Path, jwks: dict[str, Any]) -> None:
    text = json.dumps(jwks, indent=2) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(0o644)
    temporary.replace(path)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an EC public key."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
