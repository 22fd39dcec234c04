"""A benchmark CDS Client: its own ES384 key pair, JWKS file, trusted-issuers YAML and pre-minted JWTs.

The environment it returns configures the service for production (`CDS_AUTH_MODE=required`, a
trusted issuer, the public base URL, a SQLite ledger in the work directory) whether or not the
running code honours every variable yet; `auth_active` tells afterwards whether it did.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

SERVICE_ID = "osteoporosis-escalation"
ISSUER = "https://bench-ehr.example.org"
KID = "bench-es384-1"
TOKEN_LIFETIME_S = 300


@dataclass(frozen=True)
class BenchClient:
    """One trusted issuer and the files that declare it."""

    private_key: ec.EllipticCurvePrivateKey
    base_url: str
    work_dir: Path
    issuers_file: Path
    jwks_file: Path
    fhir_servers: tuple[str, ...]

    @property
    def audience(self) -> str:
        return f"{self.base_url}/cds-services/{SERVICE_ID}"

    def token(self, now: float | None = None) -> str:
        """A fresh JWT with a unique jti (5-minute lifetime)."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": ISSUER,
            "sub": ISSUER,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + TOKEN_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.private_key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})

    def tokens(self, count: int) -> Iterator[str]:
        now = time.time()
        for _ in range(count):
            yield self.token(now)

    def write_token_file(self, path: Path, count: int) -> Path:
        path.write_text("\n".join(self.tokens(count)) + "\n", encoding="ascii")
        return path

    def environ(self, *, port: int | None = None, database_file: str = "ledger.sqlite3") -> dict[str, str]:
        """CDS_* production settings for this client (auth required, ledger on)."""
        env = {
            "CDS_AUTH_MODE": "required",
            "CDS_TRUSTED_ISSUERS": str(self.issuers_file),
            "CDS_PUBLIC_BASE_URL": self.base_url,
            "CDS_DATABASE_URL": f"sqlite:///{self.work_dir / database_file}",
            "CDS_DATA_DIR": str(self.work_dir / "data"),
            "CDS_LOG_LEVEL": "WARNING",
            # capacity is measured with one client sending as fast as it is answered: no per-client limits
            "CDS_CLIENT_RATE_LIMIT": "",
            "CDS_CLIENT_MAX_IN_FLIGHT": "0",
        }
        if port is not None:
            env["CDS_PORT"] = str(port)
            env["CDS_HOST"] = "127.0.0.1"
        return env


def make_client(work_dir: Path, base_url: str, fhir_servers: tuple[str, ...] = ()) -> BenchClient:
    """Generate the key pair and write the JWKS and issuers files into `work_dir`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "data").mkdir(exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwks_file = work_dir / "bench-jwks.json"
    jwks_file.write_text(
        json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "ES384"}]}), encoding="utf-8"
    )
    lines = [
        "issuers:",
        f"  - iss: {ISSUER}",
        f"    jwks_file: {jwks_file.name}",
        "    algorithms: [ES384]",
    ]
    if fhir_servers:
        lines.append("    fhir_servers:")
        lines.extend(f"      - {url}" for url in fhir_servers)
    issuers_file = work_dir / "trusted-issuers.yaml"
    issuers_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return BenchClient(private_key, base_url.rstrip("/"), work_dir, issuers_file, jwks_file, fhir_servers)
