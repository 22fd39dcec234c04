"""Security settings as explicit values (config.py reads the CDS_* variables and builds this model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cds_service.core.audience import normalise_base_url, normalise_url

AuthMode = Literal["required", "dev", "off"]
DEV_DEFAULT_BASE_URL: Final = "http://127.0.0.1:8000"


class TrustSettings(BaseModel):
    """Everything the authenticator and the fhirServer guard need; invalid values raise ValidationError."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auth_mode: AuthMode = "required"
    public_base_url: str | None = None
    trusted_issuers: Path | None = None
    jwt_leeway_s: int = Field(30, ge=0, le=300)
    jwt_max_lifetime_s: int = Field(3600, ge=60, le=86_400)
    fhir_allowlist: tuple[str, ...] = ()
    data_dir: Path = Path("./.data")
    # The URL the service itself listens on (config.py builds it from CDS_HOST and CDS_PORT): the dev/off
    # default audience, so a local run on another port accepts its own dev tokens.
    listen_base_url: str = DEV_DEFAULT_BASE_URL

    @field_validator("public_base_url", mode="before")
    @classmethod
    def _base_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise ValueError("expected a URL like https://cds.example.org[/prefix]")
        return normalise_base_url(value.strip())

    @field_validator("trusted_issuers", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("fhir_allowlist", mode="before")
    @classmethod
    def _allowlist(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        for entry in value:
            if not isinstance(entry, str):
                raise ValueError("entries must be URL strings")
            try:
                normalise_url(entry)
            except ValueError as error:
                raise ValueError(f"{entry[:80]!r} is not an http(s) FHIR base URL: {error}") from None
        return tuple(value)

    @model_validator(mode="after")
    def _https_in_production(self) -> TrustSettings:
        """CDS Hooks: production traffic is HTTPS. In `required` the public URL must be https, except on
        a loopback host (a reverse proxy on the same machine, or tests)."""
        url = self.public_base_url
        if self.auth_mode == "required" and url is not None and url.startswith("http://"):
            host = urlsplit(url).hostname or ""
            if host not in ("localhost", "127.0.0.1", "::1"):
                raise ValueError("CDS_PUBLIC_BASE_URL must be https in CDS_AUTH_MODE=required")
        return self

    @property
    def effective_base_url(self) -> str | None:
        """CDS_PUBLIC_BASE_URL, else the listening URL in dev/off; None in required when unset."""
        if self.public_base_url is not None:
            return self.public_base_url
        return self.listen_base_url if self.auth_mode != "required" else None
