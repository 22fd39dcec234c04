"""CDS_* settings: defaults, parsing, one-line errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from cds_service.config import (
    DEFAULT_CORS_ORIGINS,
    SettingsError,
    known_variables,
    load_settings,
    operational_warnings,
)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.workers == 2
    assert settings.knowledge_file is None
    assert settings.as_of is None
    assert settings.selection_behavior == "at-most-one"
    assert settings.cors_allowed_origins == (
        "https://sandbox.cds-hooks.org",
        "http://localhost:3000",
        "http://127.0.0.1:3000",
    )
    assert settings.cors_allowed_origins == DEFAULT_CORS_ORIGINS
    assert settings.fhir_connect_timeout_s == 1.0
    assert settings.fhir_read_timeout_s == 2.0
    assert settings.fhir_deadline_s == 2.0
    assert settings.fhir_max_pages == 20
    assert settings.max_body_bytes == 10_000_000
    assert settings.log_level == "INFO"
    assert settings.auth_mode == "required"
    assert settings.data_dir == Path(".data")


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            "CDS_HOST": "0.0.0.0",
            "CDS_PORT": "9000",
            "CDS_WORKERS": "4",
            "CDS_KNOWLEDGE_FILE": "/etc/cds/knowledge.yaml",
            "CDS_AS_OF": "2024-02-29",
            "CDS_SELECTION_BEHAVIOR": "any",
            "CDS_CORS_ORIGINS": " https://ehr.example.org , http://localhost:8080/ ",
            "CDS_FHIR_CONNECT_TIMEOUT_S": "0.5",
            "CDS_FHIR_READ_TIMEOUT_S": "3",
            "CDS_FHIR_DEADLINE_S": "4.5",
            "CDS_FHIR_MAX_PAGES": "5",
            "CDS_MAX_BODY_BYTES": "1000",
            "CDS_LOG_LEVEL": "debug",
            "CDS_AUTH_MODE": "required",
            "CDS_DATA_DIR": "/var/lib/cds-service",
        }
    )
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9000, 4)
    assert settings.knowledge_file == Path("/etc/cds/knowledge.yaml")
    assert settings.as_of == date(2024, 2, 29)
    assert settings.selection_behavior == "any"
    assert settings.cors_origins == ("https://ehr.example.org", "http://localhost:8080")
    assert (settings.fhir_connect_timeout_s, settings.fhir_read_timeout_s) == (0.5, 3.0)
    assert (settings.fhir_deadline_s, settings.fhir_max_pages) == (4.5, 5)
    assert settings.max_body_bytes == 1000
    assert settings.log_level == "DEBUG"
    assert settings.auth_mode == "required"
    assert settings.data_dir == Path("/var/lib/cds-service")


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_PORT", "8123")
    assert load_settings().port == 8123


def test_an_explicit_mapping_ignores_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_PORT", "not-a-port")
    assert load_settings({"CDS_WORKERS": "3"}).port == 8000


def test_unrelated_and_lower_case_variables_are_ignored() -> None:
    settings = load_settings({"PORT": "1", "cds_port": "2", "CDS_TEST_DATABASE_URL": "sqlite://"})
    assert settings.port == 8000


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("CDS_PROT", "unknown variable CDS_PROT (did you mean CDS_PORT?)"),
        ("CDS_CORS_ORIGIN", "unknown variable CDS_CORS_ORIGIN (did you mean CDS_CORS_ORIGINS?)"),
        ("CDS_AUTHMODE", "unknown variable CDS_AUTHMODE (did you mean CDS_AUTH_MODE?)"),
        ("CDS_TRUSTED_ISSUER", "unknown variable CDS_TRUSTED_ISSUER (did you mean CDS_TRUSTED_ISSUERS?)"),
        ("CDS_SOMETHING_ELSE", "unknown variable CDS_SOMETHING_ELSE (see the README's settings table)"),
    ],
)
def test_unknown_cds_variable_stops_start_up_naming_the_nearest(variable: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({variable: "x"})
    assert str(error.value) == message


def test_every_known_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    missing = [name for name in known_variables() if f"`{name}`" not in readme]
    assert missing == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CDS_PORT", "abc"),
        ("CDS_PORT", "0"),
        ("CDS_PORT", "70000"),
        ("CDS_PORT", ""),
        ("CDS_HOST", ""),
        ("CDS_WORKERS", "0"),
        ("CDS_WORKERS", "1.5"),
        ("CDS_AS_OF", "2024-02-30"),
        ("CDS_AS_OF", "01/06/2024"),
        ("CDS_AS_OF", "2024-6-1"),
        ("CDS_AS_OF", "2024-06-01T00:00:00"),
        ("CDS_SELECTION_BEHAVIOR", "all"),
        ("CDS_CORS_ORIGINS", "ftp://example.org"),
        ("CDS_CORS_ORIGINS", "https://example.org/path"),
        ("CDS_CORS_ORIGINS", "example.org"),
        ("CDS_FHIR_CONNECT_TIMEOUT_S", "0"),
        ("CDS_FHIR_READ_TIMEOUT_S", "-1"),
        ("CDS_FHIR_DEADLINE_S", "0"),
        ("CDS_FHIR_DEADLINE_S", "nan"),
        ("CDS_FHIR_DEADLINE_S", "soon"),
        ("CDS_FHIR_MAX_PAGES", "0"),
        ("CDS_MAX_BODY_BYTES", "0"),
        ("CDS_LOG_LEVEL", "VERBOSE"),
        ("CDS_AUTH_MODE", "on"),
    ],
)
def test_invalid_value_raises_one_line_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    reason = str(caught.value)
    assert reason.startswith(f"invalid {variable}: ")
    assert "\n" not in reason


def test_several_invalid_values_are_reported_on_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"CDS_PORT": "x", "CDS_AUTH_MODE": "y"})
    reason = str(caught.value)
    assert "CDS_PORT" in reason and "CDS_AUTH_MODE" in reason and "\n" not in reason


def test_empty_optional_values_mean_unset() -> None:
    settings = load_settings({"CDS_AS_OF": "", "CDS_KNOWLEDGE_FILE": ""})
    assert settings.as_of is None
    assert settings.knowledge_file is None


def test_cors_origins_add_to_the_defaults_and_a_separate_setting_replaces_them() -> None:
    added = load_settings({"CDS_CORS_ORIGINS": "https://ehr.example.org"})
    assert added.cors_allowed_origins == (*DEFAULT_CORS_ORIGINS, "https://ehr.example.org")
    replaced = load_settings(
        {"CDS_CORS_DEFAULT_ORIGINS": "http://localhost:8080", "CDS_CORS_ORIGINS": "https://ehr.example.org"}
    )
    assert replaced.cors_allowed_origins == ("http://localhost:8080", "https://ehr.example.org")
    twice = load_settings({"CDS_CORS_ORIGINS": "https://sandbox.cds-hooks.org/"})
    assert twice.cors_allowed_origins == DEFAULT_CORS_ORIGINS


def test_cors_origins_empty_disables_and_star_allows_any() -> None:
    assert load_settings({"CDS_CORS_ORIGINS": ""}).cors_allowed_origins == DEFAULT_CORS_ORIGINS
    off = load_settings({"CDS_CORS_DEFAULT_ORIGINS": "", "CDS_CORS_ORIGINS": ""})
    assert off.cors_allowed_origins == ()
    settings = load_settings({"CDS_CORS_ORIGINS": "*"})
    assert settings.cors_any_origin
    assert not load_settings({}).cors_any_origin


def test_origins_are_normalised_to_lower_case() -> None:
    assert load_settings({"CDS_CORS_ORIGINS": "HTTPS://EHR.Example.org:8443"}).cors_origins == (
        "https://ehr.example.org:8443",
    )


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_operational_warnings() -> None:
    assert operational_warnings(load_settings({"CDS_AUTH_MODE": "required"})) == []
    (auth_off,) = operational_warnings(load_settings({"CDS_AUTH_MODE": "off"}))
    assert "CDS_AUTH_MODE=off" in auth_off
    pinned = operational_warnings(load_settings({"CDS_AS_OF": "2024-06-30", "CDS_AUTH_MODE": "dev"}))
    assert len(pinned) == 1 and "2024-06-30" in pinned[0]


def test_public_base_url_must_be_https_in_required_mode() -> None:
    with pytest.raises(SettingsError, match="must be https"):
        load_settings({"CDS_AUTH_MODE": "required", "CDS_PUBLIC_BASE_URL": "http://cds.example.org"})
    assert load_settings({"CDS_AUTH_MODE": "required", "CDS_PUBLIC_BASE_URL": "https://cds.example.org"})
    assert load_settings({"CDS_AUTH_MODE": "required", "CDS_PUBLIC_BASE_URL": "http://127.0.0.1:8000"})
    assert load_settings({"CDS_AUTH_MODE": "dev", "CDS_PUBLIC_BASE_URL": "http://cds.example.org"})
