"""Start-up checks: TrustSettings, the trusted-issuers file, mode rules, replay store, dev issuer."""

from __future__ import annotations

import json
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from cds_service.core.audience import audience_matches, expected_audience, normalise_base_url
from cds_service.core.security_errors import SecurityConfigError
from cds_service.core.trust_settings import TrustSettings
from cds_service.record.replay import (
    InMemoryReplayStore,
    ReplayStore,
    replay_store_allowed,
    require_shared_replay_store,
)
from cds_service.wire.auth.dev_keys import (
    DEV_KEY_DIR,
    JWKS_FILE,
    PRIVATE_KEY_FILE,
    dev_issuer,
    ensure_dev_keys,
    mint_dev_token,
)
from cds_service.wire.auth.issuers import read_issuers_file
from cds_service.wire.auth.jwt_verify import build_authenticator
from tests.wire.test_security_support import (
    FHIR,
    ISS,
    NOW,
    ec_key,
    issuer_entry,
    jwks,
    no_secrets_in_logs,
    trust_settings,
    write_issuers,
)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])
__all__ = ["no_secrets_in_logs"]

ES = ec_key("cfg-key")


# -- settings and audience -----------------------------------------------------------------------------------


def test_public_base_url_is_normalised_and_defaults_outside_required(tmp_path: Path) -> None:
    settings = TrustSettings(public_base_url="HTTPS://CDS.Example.org:443/Prefix/", data_dir=tmp_path)
    assert settings.public_base_url == "https://cds.example.org/Prefix"
    assert TrustSettings(auth_mode="dev").effective_base_url == "http://127.0.0.1:8000"
    assert TrustSettings(auth_mode="off").effective_base_url == "http://127.0.0.1:8000"
    assert TrustSettings(auth_mode="required").effective_base_url is None
    assert TrustSettings().auth_mode == "required"


@pytest.mark.parametrize(
    "bad",
    ["cds.example.org", "ftp://cds.example.org", "https://u:p@cds.example.org", "https://cds.example.org/?x"],
)
def test_public_base_url_rejects_non_base_urls(bad: str) -> None:
    with pytest.raises(ValidationError):
        TrustSettings(public_base_url=bad)


def test_allowlist_is_a_comma_list_of_urls() -> None:
    settings = TrustSettings(fhir_allowlist=" https://a.example.org/fhir , http://10.0.0.5:8080/r4 ")
    assert settings.fhir_allowlist == ("https://a.example.org/fhir", "http://10.0.0.5:8080/r4")
    with pytest.raises(ValidationError):
        TrustSettings(fhir_allowlist="https://a.example.org/fhir,not a url")
    with pytest.raises(ValidationError):
        TrustSettings(jwt_leeway_s=-1)


def test_expected_audience_and_matching() -> None:
    base = normalise_base_url("https://cds.example.org:8443/p/")
    assert expected_audience(base, "discovery", "x") == "https://cds.example.org:8443/p/cds-services"
    assert expected_audience(base, "service", "x") == "https://cds.example.org:8443/p/cds-services/x"
    assert (
        expected_audience(base, "feedback", "x") == "https://cds.example.org:8443/p/cds-services/x/feedback"
    )
    assert audience_matches("HTTP://LOCALHOST:80/a", ["http://localhost/a"])
    assert not audience_matches("http://localhost/A", ["http://localhost/a"])
    assert not audience_matches("http://localhost/a", ["http://127.0.0.1/a"])
    assert audience_matches("http://localhost/a", ["http://127.0.0.1/a"], loopback_equivalent=True)
    assert not audience_matches([], ["http://localhost/a"])
    assert not audience_matches({"a": 1}, ["http://localhost/a"])


# -- trusted-issuers file ------------------------------------------------------------------------------------


def test_valid_file_loads_with_relative_jwks_file(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps(jwks(ES)))
    path = tmp_path / "issuers.yaml"
    path.write_text(f"issuers:\n  - iss: {ISS}\n    jwks_file: keys.json\n    algorithms: [ES384]\n")
    (issuer,) = read_issuers_file(path)
    assert issuer.jwks_file == tmp_path / "keys.json"
    assert issuer.algorithms == ("ES384",)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"iss": ISS, "jku": ["http://ehr.example.org/jwks"]}, "https"),
        (
            {"iss": ISS, "jku": ["https://a/jwks"], "jwks_url": "https://a/jwks2", "jwks": jwks(ES)},
            "at most one",
        ),
        ({"iss": ISS}, "set jku"),
        ({"iss": ISS, "jku": ["https://a/jwks"], "algorithms": ["HS256"]}, "algorithms"),
        ({"iss": ISS, "jku": ["https://a/jwks"], "algorithms": ["none"]}, "algorithms"),
        ({"iss": ISS, "jku": ["https://a/jwks"], "surprise": 1}, "surprise"),
        ({"iss": ISS, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}}, "usable"),
        ({"iss": ISS, "jku": ["https://a/jwks"], "fhir_servers": ["https://u@evil/"]}, "fhir_servers"),
        ({"iss": "https://sandbox.cds-hooks.org", "jku": ["https://a/jwks"]}, "built in"),
        ({"iss": "urn:cds-service:dev", "jku": ["https://a/jwks"]}, "built in"),
        ({"iss": ISS, "jwks_file": "/nonexistent/jwks.json"}, "cannot read"),
    ],
)
def test_invalid_issuer_files_stop_start_up_with_one_line(
    tmp_path: Path, entry: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SecurityConfigError) as caught:
        read_issuers_file(write_issuers(tmp_path, entry))
    message = str(caught.value)
    assert fragment in message and "\n" not in message and message.startswith("CDS_TRUSTED_ISSUERS=")


def test_duplicate_issuer_and_bad_yaml(tmp_path: Path) -> None:
    entry = {"iss": ISS, "jku": ["https://a/jwks"]}
    with pytest.raises(SecurityConfigError, match="twice"):
        read_issuers_file(write_issuers(tmp_path, entry, entry))
    path = tmp_path / "broken.yaml"
    path.write_text("issuers: [\n")
    with pytest.raises(SecurityConfigError, match="not valid YAML"):
        read_issuers_file(path)
    path.write_text("issuers: []\n")
    with pytest.raises(SecurityConfigError, match="issuers"):
        read_issuers_file(path)


# -- mode rules at start-up ----------------------------------------------------------------------------------


def test_required_needs_an_issuers_file(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="CDS_TRUSTED_ISSUERS"):
        build_authenticator(trust_settings(tmp_path), InMemoryReplayStore())


def test_required_needs_public_base_url_unless_every_issuer_sets_audience(tmp_path: Path) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES))
    settings = trust_settings(tmp_path, trusted_issuers=path, public_base_url=None)
    with pytest.raises(SecurityConfigError, match="CDS_PUBLIC_BASE_URL"):
        build_authenticator(settings, InMemoryReplayStore())
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES, audience="https://cds.example.org/x"))
    build_authenticator(
        trust_settings(tmp_path, trusted_issuers=path, public_base_url=None), InMemoryReplayStore()
    )


@pytest.mark.parametrize("mode", ["required", "dev"])
def test_in_memory_replay_store_only_with_one_worker(tmp_path: Path, mode: str) -> None:
    path = write_issuers(tmp_path, issuer_entry(tmp_path, ES))
    settings = trust_settings(tmp_path, trusted_issuers=path, auth_mode=mode)
    with pytest.raises(SecurityConfigError, match="one worker"):
        build_authenticator(settings, InMemoryReplayStore(), workers=2)
    build_authenticator(settings, InMemoryReplayStore(), workers=1)


def test_replay_store_protocol_accepts_any_shared_store() -> None:
    class SharedStore:
        def check_and_record(self, iss: str, jti: str, expires_at: datetime) -> bool:
            return True

    store: ReplayStore = SharedStore()
    assert isinstance(store, ReplayStore)
    assert replay_store_allowed(8, store)
    require_shared_replay_store(8, store)
    assert not replay_store_allowed(2, InMemoryReplayStore())
    assert replay_store_allowed(1, InMemoryReplayStore())


# -- in-memory replay store ----------------------------------------------------------------------------------


def test_replay_store_first_time_then_replay_until_expiry_then_pruned() -> None:
    now = [float(NOW)]
    store = InMemoryReplayStore(clock=lambda: now[0], prune_interval_s=10)
    expires = datetime.fromtimestamp(NOW + 60, tz=UTC)
    assert store.check_and_record("iss", "a", expires)
    assert not store.check_and_record("iss", "a", expires)
    assert store.check_and_record("other-iss", "a", expires)
    now[0] += 61
    assert store.check_and_record("iss", "b", datetime.fromtimestamp(NOW + 600, tz=UTC))
    assert len(store) == 1  # the two expired pairs were pruned
    assert store.check_and_record("iss", "a", datetime.fromtimestamp(NOW + 600, tz=UTC))


def test_replay_store_is_thread_safe() -> None:
    store = InMemoryReplayStore()
    expires = datetime.fromtimestamp(4_000_000_000, tz=UTC)
    results: list[bool] = []
    lock = threading.Lock()

    def attempt() -> None:
        first = store.check_and_record("iss", "same-jti", expires)
        with lock:
            results.append(first)

    threads = [threading.Thread(target=attempt) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1 and len(results) == 32


# -- dev issuer -------------------------------------------------------------------------------------------


def test_dev_keys_are_generated_once_with_a_private_key_file_mode_0600(tmp_path: Path) -> None:
    first = ensure_dev_keys(tmp_path)
    second = ensure_dev_keys(tmp_path)
    assert first.kid == second.kid
    directory = tmp_path / DEV_KEY_DIR
    assert stat.S_IMODE((directory / PRIVATE_KEY_FILE).stat().st_mode) == 0o600
    public = json.loads((directory / JWKS_FILE).read_text())
    assert public == first.jwks and "d" not in public["keys"][0]
    assert dev_issuer(tmp_path).config.iss == "urn:cds-service:dev"


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    ensure_dev_keys(tmp_path)
    (tmp_path / DEV_KEY_DIR / PRIVATE_KEY_FILE).chmod(0o644)
    with pytest.raises(SecurityConfigError, match="chmod 600"):
        ensure_dev_keys(tmp_path)


def test_mint_dev_token_claims(tmp_path: Path) -> None:
    url = "http://localhost:8000/cds-services/osteoporosis-escalation"
    token = mint_dev_token(tmp_path, url, now=NOW)
    header = jwt.get_unverified_header(token)
    body = jwt.decode(token, options={"verify_signature": False})
    assert (
        header["alg"] == "ES384" and header["typ"] == "JWT" and header["kid"] == ensure_dev_keys(tmp_path).kid
    )
    assert body["iss"] == "urn:cds-service:dev" and body["aud"] == url
    assert body["exp"] - body["iat"] == 300 and body["iat"] == NOW
    assert (
        body["jti"] != jwt.decode(mint_dev_token(tmp_path, url), options={"verify_signature": False})["jti"]
    )
    with pytest.raises(ValueError, match="--url"):
        mint_dev_token(tmp_path, "not-a-url")


def test_fhir_constant_is_listed_for_the_default_issuer(tmp_path: Path) -> None:
    (issuer,) = read_issuers_file(write_issuers(tmp_path, issuer_entry(tmp_path, ES)))
    assert issuer.fhir_servers == (FHIR,)
