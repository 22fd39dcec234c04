"""Trusted JWT issuers: the YAML file named by CDS_TRUSTED_ISSUERS, validated at start-up, and the
built-in public CDS Hooks sandbox issuer (dev mode only; its public key ships in `cds_service/keys`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cds_service.core.audience import normalise_url
from cds_service.core.ehr_profile import EhrProfile
from cds_service.core.security_errors import SecurityConfigError
from cds_service.wire.auth.jwks import (
    JwksError,
    JwksRegistry,
    KeySource,
    StaticKeySource,
    parse_jwks,
    usable_key_count,
)

SANDBOX_ISSUER: Final = "https://sandbox.cds-hooks.org"
SANDBOX_JKU: Final = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID: Final = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
DEV_ISSUER: Final = "urn:cds-service:dev"
RESERVED_ISSUERS: Final = frozenset({SANDBOX_ISSUER, DEV_ISSUER})
MAX_FILE_BYTES: Final = 1024 * 1024
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})

Algorithm = Literal["ES256", "ES384", "RS256", "RS384"]


def _url_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _check_key_url(url: str) -> str:
    """A JWKS URL must be https (http only on a loopback host, for local testing)."""
    parts = urlsplit(normalise_url(url, strip_trailing_slash=False))
    if parts.scheme != "https" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError("a JWKS URL must use https")
    return url


class IssuerConfig(BaseModel):
    """One trusted CDS Client (JWT issuer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str = Field(min_length=1, max_length=2048)
    jku: tuple[str, ...] = ()
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    algorithms: tuple[Algorithm, ...] = ("ES384", "RS384")
    audience: tuple[str, ...] | None = None
    tenants: tuple[str, ...] | None = None
    fhir_servers: tuple[str, ...] = ()
    services: tuple[str, ...] | None = None
    profile: EhrProfile = EhrProfile()

    @field_validator("jku", "audience", "fhir_servers", "tenants", "services", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _url_list(value)

    @field_validator("jku")
    @classmethod
    def _jku_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_key_url(url) for url in value)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_key_url(value)

    @field_validator("audience", "fhir_servers")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for url in value or ():
            normalise_url(url)
        return value

    @field_validator("jwks")
    @classmethod
    def _inline_jwks(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and usable_key_count(parse_jwks(value)) == 0:
            raise ValueError("the inline JWKS has no usable signature key with a kid")
        return value

    @model_validator(mode="after")
    def _key_source(self) -> IssuerConfig:
        sources = [s for s in (self.jwks_file, self.jwks_url, self.jwks) if s is not None]
        if len(sources) > 1:
            raise ValueError("set at most one of jwks_file, jwks_url and jwks")
        if not sources and not self.jku:
            raise ValueError("set jku and/or one of jwks_file, jwks_url, jwks")
        if not self.algorithms:
            raise ValueError("algorithms must list at least one of ES256, ES384, RS256, RS384")
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ValueError("algorithms are listed twice")
        return self


class IssuersFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    issuers: tuple[IssuerConfig, ...]

    @model_validator(mode="after")
    def _unique(self) -> IssuersFile:
        if not self.issuers:
            raise ValueError("the file lists no issuers")
        names = [issuer.iss for issuer in self.issuers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"iss {duplicates[0]!r} is listed twice")
        reserved = sorted(RESERVED_ISSUERS & set(names))
        if reserved:
            raise ValueError(f"iss {reserved[0]!r} is built in (dev mode only) and cannot be configured")
        return self


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer ready for verification: its default key source and one key source per allowed jku."""

    config: IssuerConfig
    default_keys: KeySource | None
    jku_keys: Mapping[str, KeySource] = field(default_factory=dict)
    builtin: bool = False


def read_issuers_file(path: Path) -> tuple[IssuerConfig, ...]:
    """Parse and validate the YAML file; `jwks_file` paths are resolved against its directory."""
    where = f"CDS_TRUSTED_ISSUERS={path}"
    try:
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as error:
        raise SecurityConfigError(f"{where}: cannot read the file ({error.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SecurityConfigError(f"{where}: the file is larger than {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise SecurityConfigError(f"{where}: not valid YAML{line}") from None
    try:
        issuers = IssuersFile.model_validate(data).issuers
    except ValidationError as error:
        raise SecurityConfigError(f"{where}: {_one_line(error)}") from None
    resolved = []
    for index, issuer in enumerate(issuers):
        if issuer.jwks_file is not None:
            file = issuer.jwks_file if issuer.jwks_file.is_absolute() else path.parent / issuer.jwks_file
            try:
                read_jwks_file(file)
            except SecurityConfigError as error:
                raise SecurityConfigError(f"{where}: issuers.{index}.jwks_file: {error}") from None
            resolved.append(issuer.model_copy(update={"jwks_file": file}))
        else:
            resolved.append(issuer)
    return tuple(resolved)


def read_jwks_file(path: Path) -> dict[str, Any]:
    """A JWKS document from a file with at least one usable signature key."""
    try:
        document = json.loads(path.read_bytes()[: MAX_FILE_BYTES + 1])
        if usable_key_count(parse_jwks(document)) == 0:
            raise SecurityConfigError("the JWKS has no usable signature key with a kid")
    except OSError as error:
        raise SecurityConfigError(f"cannot read {path} ({error.strerror})") from None
    except (ValueError, JwksError):
        raise SecurityConfigError(f"{path} is not a JWKS document") from None
    if not isinstance(document, dict):
        raise SecurityConfigError(f"{path} is not a JWKS document")
    return document


def trusted_issuer(
    config: IssuerConfig,
    registry: JwksRegistry,
    *,
    static_jku: Mapping[str, KeySource] | None = None,
    builtin: bool = False,
) -> TrustedIssuer:
    """Key sources for an issuer: `jku` URLs are fetched (unless mapped in `static_jku`), never others."""
    static_jku = static_jku or {}
    default: KeySource | None = None
    if config.jwks is not None:
        default = StaticKeySource(config.jwks)
    elif config.jwks_file is not None:
        default = StaticKeySource(read_jwks_file(config.jwks_file))
    elif config.jwks_url is not None:
        default = registry.remote(config.jwks_url)
    jku_keys = {url: static_jku.get(url) or registry.remote(url) for url in config.jku}
    return TrustedIssuer(config, default, jku_keys, builtin)


def shipped_sandbox_jwks() -> dict[str, Any]:
    """The public CDS Hooks sandbox JWKS shipped in the package (see cds_service/keys/PROVENANCE.md)."""
    text = resources.files("cds_service").joinpath("keys/sandbox-jwks.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def sandbox_issuer(jwks: Mapping[str, Any] | None = None) -> TrustedIssuer:
    """The public sandbox issuer (ES384); its jku maps to the shipped key set and is never fetched."""
    document = dict(jwks) if jwks is not None else shipped_sandbox_jwks()
    config = IssuerConfig(
        iss=SANDBOX_ISSUER,
        jku=(SANDBOX_JKU,),
        jwks=document,
        algorithms=("ES384",),
        profile=EhrProfile(vendor="sandbox"),
    )
    keys = StaticKeySource(document)
    return TrustedIssuer(config, keys, {SANDBOX_JKU: keys}, builtin=True)


def _one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "file"
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    count = error.error_count()
    more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{location}: {message}{more}"
