"""Typed settings read from `CDS_*` environment variables; an invalid value stops start-up."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Any, Literal

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cds_service.core.trust_settings import TrustSettings

ENV_PREFIX = "CDS_"
DEFAULT_CORS_ORIGINS = ("https://sandbox.cds-hooks.org", "http://localhost:3000", "http://127.0.0.1:3000")

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# CDS_* variables that are not service settings: read by the test suite only.
_NOT_SERVICE_SETTINGS = frozenset({"CDS_TEST_DATABASE_URL"})

# The mapping load_settings() reads; None means os.environ.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("cds_settings_environ", default=None)


class SettingsError(ValueError):
    """A setting is invalid; the message is one line naming the variable."""


class _EnvironSource(PydanticBaseSettingsSource):
    """`CDS_<FIELD>` variables (upper case) from the mapping given to load_settings or os.environ."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        key = ENV_PREFIX + field_name.upper()
        return self._environ().get(key), key, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _key, _complex = self.get_field_value(info, name)
            if value is not None:
                values[name] = value
        return values

    @staticmethod
    def _environ() -> Mapping[str, str]:
        environ = _ENVIRON.get()
        return os.environ if environ is None else environ


class Settings(BaseSettings):
    """Service settings; load_settings() reads them from the environment and reports errors in one line."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1)
    # gunicorn worker class (docs/operations.md "Connection handling": chosen by measurement)
    worker_class: Literal["gevent", "gthread"] = "gevent"
    worker_connections: int = Field(1000, ge=1)
    knowledge_file: Path | None = None
    as_of: date | None = None
    selection_behavior: Literal["at-most-one", "any"] = "at-most-one"
    # Allowed browser origins = CDS_CORS_DEFAULT_ORIGINS (replaces the built-in defaults; empty = none)
    # + CDS_CORS_ORIGINS (added to them). Both empty: CORS off.
    cors_default_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    cors_origins: tuple[str, ...] = ()
    fhir_connect_timeout_s: float = Field(1.0, gt=0, allow_inf_nan=False)
    fhir_read_timeout_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    fhir_deadline_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    fhir_max_pages: int = Field(20, ge=1)
    # Bulkhead and circuit breaker per fhirServer base URL (cds_service.gather.peer_guard).
    fhir_max_calls_per_server: int = Field(4, ge=1)
    fhir_failure_threshold: int = Field(5, ge=1)
    fhir_circuit_open_s: float = Field(30.0, ge=0, allow_inf_nan=False)
    # How long a FHIR server's CapabilityStatement is trusted before it is read again.
    fhir_capability_ttl_s: float = Field(3600.0, gt=0, allow_inf_nan=False)
    max_body_bytes: int = Field(10_000_000, ge=1)
    # Per-client limits per worker process (cds_service/wire/client_limit.py, docs/operations.md)
    client_rate_limit: str = "10/second"
    client_max_in_flight: int = Field(4, ge=0)
    # Failed authentications per source address before its calls are refused unverified (auth_flood.py).
    auth_failure_limit: str = "20/10 seconds"
    # Fair turns between clients per worker (wire/fair_queue.py): calls waiting at most (0 = off), and
    # how long one waits before 503 + Retry-After.
    fair_queue_max: int = Field(64, ge=0)
    fair_queue_timeout_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    auth_mode: Literal["required", "dev", "off"] = "required"
    data_dir: Path = Path("./.data")
    # Trust (client JWTs and the fhirServer guard): validated again as TrustSettings by load_settings.
    public_base_url: str | None = None
    trusted_issuers: Path | None = None
    jwt_leeway_s: int = 30
    jwt_max_lifetime_s: int = 3600
    fhir_allowlist: str = ""
    # Storage: card ledger, feedback, JWT replay store.
    database_url: str | None = Field(None, repr=False)
    db_auto_migrate: bool = True
    # Database outage (docs/operations.md): hook calls degrade (or are refused); feedback is refused (503).
    # Retention in days (0 = keep forever): card ledger (with suggestions) and feedback entries.
    ledger_retention_days: int = Field(400, ge=0)
    feedback_retention_days: int = Field(400, ge=0)
    db_outage_policy: Literal["degrade", "refuse"] = "degrade"
    db_retry_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    replay_window_max: int = Field(100_000, ge=1)
    admin_token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    patient_key_secret: SecretStr | None = Field(None, min_length=32)
    # SMART app (docs/smart-app.md): off while CDS_SMART_CLIENT_ID is empty. The app reads only FHIR
    # servers (`iss`) listed in CDS_SMART_ISS_ALLOWLIST; its token endpoint must be on the iss origin or
    # listed in CDS_SMART_AUTH_ORIGINS. The session cookie is encrypted with CDS_SMART_SESSION_SECRET
    # (else a key generated in CDS_DATA_DIR) and expires after CDS_SMART_SESSION_TTL_S at most.
    smart_client_id: str = Field("", max_length=200)
    smart_iss_allowlist: str = ""
    smart_auth_origins: str = ""
    smart_session_ttl_s: int = Field(900, ge=30, le=3600)
    smart_session_secret: SecretStr | None = Field(None, min_length=32)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvironSource(settings_cls)

    @field_validator(
        "knowledge_file",
        "trusted_issuers",
        "public_base_url",
        "database_url",
        "admin_token_sha256",
        "patient_key_secret",
        "smart_session_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    def trust(self) -> TrustSettings:
        """The security settings (validated by load_settings, so this cannot fail afterwards)."""
        return TrustSettings(
            auth_mode=self.auth_mode,
            public_base_url=self.public_base_url,
            trusted_issuers=self.trusted_issuers,
            jwt_leeway_s=self.jwt_leeway_s,
            jwt_max_lifetime_s=self.jwt_max_lifetime_s,
            fhir_allowlist=self.fhir_allowlist,  # a comma list, split and checked by TrustSettings
            data_dir=self.data_dir,
            listen_base_url=self.listen_base_url,
        )

    @property
    def listen_base_url(self) -> str:
        """http://HOST:PORT as a local client reaches it (a wildcard bind is reached on 127.0.0.1)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104 - a comparison
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @field_validator("client_rate_limit", "auth_failure_limit")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        try:
            if value.strip():
                parse_many(value)
        except ValueError:
            raise ValueError(
                "expected a rate like '20/second' or '20/second;600/minute' (empty: off)"
            ) from None
        return value.strip()

    @field_validator("as_of", mode="before")
    @classmethod
    def _iso_date_only(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, date):
            return value
        if not isinstance(value, str) or not _ISO_DATE.match(value):
            raise ValueError("expected a date as YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("expected a valid calendar date as YYYY-MM-DD") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() in _LOG_LEVELS:
            return value.strip().upper()
        if isinstance(value, str):
            raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
        return value

    @field_validator("cors_origins", "cors_default_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        origins = []
        for raw in value:
            if not isinstance(raw, str):
                raise ValueError("origins must be strings")
            origin = raw if raw == "*" else raw.rstrip("/").lower()
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not '*' or an origin like https://host[:port]")
            origins.append(origin)
        return tuple(origins)

    @property
    def cors_allowed_origins(self) -> tuple[str, ...]:
        """The defaults (or their replacement) followed by the added origins, each once."""
        return tuple(dict.fromkeys((*self.cors_default_origins, *self.cors_origins)))

    @property
    def cors_any_origin(self) -> bool:
        return "*" in self.cors_allowed_origins


@contextmanager
def _reading(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _one_line_reason(error: ValidationError) -> str:
    reasons = []
    for detail in error.errors(include_url=False, include_input=False):
        loc = detail.get("loc") or ("?",)
        name = ENV_PREFIX + str(loc[0]).upper()
        message = str(detail.get("msg", "invalid value")).removeprefix("Value error, ")
        reasons.append(f"invalid {name}: {message}")
    return "; ".join(reasons).replace("\n", " ")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default os.environ); raise SettingsError with a one-line reason.

    An unknown `CDS_*` variable is an error naming the nearest valid one: a misspelt setting would
    otherwise be ignored silently and the service would run on its default."""
    _refuse_unknown_variables(os.environ if env is None else env)
    with _reading(env):
        try:
            settings = Settings()
        except ValidationError as error:
            raise SettingsError(_one_line_reason(error)) from None
    try:
        settings.trust()
    except ValidationError as error:
        raise SettingsError(_one_line_reason(error)) from None
    return settings


def known_variables() -> list[str]:
    """Every CDS_* variable that configures the service."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def _refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    known = known_variables()
    reasons = []
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key in known or key in _NOT_SERVICE_SETTINGS:
            continue
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean {nearest[0]}?)" if nearest else " (see the README's settings table)"
        reasons.append(f"unknown variable {key[:64]}{hint}")
    if reasons:
        raise SettingsError("; ".join(reasons))


def operational_warnings(settings: Settings) -> list[str]:
    """Warnings shown on /healthz and logged at start-up (no PHI, no secrets)."""
    warnings = []
    if settings.as_of is not None:
        warnings.append(
            f"CDS_AS_OF pins the evaluation date to {settings.as_of.isoformat()}; "
            "recommendations ignore today's date"
        )
    if settings.auth_mode == "off":
        warnings.append("CDS_AUTH_MODE=off: CDS client requests are not authenticated (development only)")
    return warnings
