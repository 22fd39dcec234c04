"""JWKS: key selection rules, the fetcher's limits (no redirects, size cap), the cache with a rate-limited
refresh on unknown kid (key rotation), and the shipped sandbox key. HTTP only through `responses`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses

from cds_service.core.security_errors import Unauthorized
from cds_service.wire.auth.issuers import SANDBOX_ISSUER, SANDBOX_KID, shipped_sandbox_jwks
from cds_service.wire.auth.jwks import (
    JwksError,
    JwksFetcher,
    JwksRegistry,
    RemoteKeySource,
    StaticKeySource,
    is_signature_key,
    run_inline,
    select_key,
)
from tests.wire.test_security_support import (
    ISS,
    JKU,
    SERVICE_ID,
    authenticator,
    bearer,
    claims,
    ec_key,
    jwks,
    no_secrets_in_logs,
    rsa_key,
    sign,
    trust_settings,
    write_issuers,
)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])
__all__ = ["no_secrets_in_logs"]

URL = "https://keys.example.org/jwks.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# -- key selection ------------------------------------------------------------------------------------------


def test_select_key_requires_kid_type_curve_and_signature_use() -> None:
    es, es256, rs = ec_key("k-es"), ec_key("k-256", "ES256"), rsa_key("k-rs")
    keys = [es.public_jwk, es256.public_jwk, rs.public_jwk]
    assert select_key(keys, "k-es", "ES384") is not None
    assert select_key(keys, "k-rs", "RS384") is not None and select_key(keys, "k-rs", "RS256") is not None
    assert select_key(keys, "k-es", "RS384") is None
    assert select_key(keys, "k-256", "ES384") is None  # P-256 key cannot verify ES384
    assert select_key(keys, "k-es", "HS256") is None
    assert select_key(keys, "missing", "ES384") is None


@pytest.mark.parametrize(
    ("extra", "usable"),
    [
        ({}, True),
        ({"use": "enc"}, False),
        ({"key_ops": ["encrypt"]}, False),
        ({"key_ops": ["verify"]}, True),
        ({"key_ops": "verify"}, False),
        ({"d": "private-part"}, False),
    ],
)
def test_signature_use_filter(extra: dict[str, object], usable: bool) -> None:
    jwk = {**ec_key("k-es").public_jwk, **extra}
    jwk.pop("use") if "use" not in extra else None
    assert is_signature_key(jwk) is usable


def test_jwk_alg_must_match_and_small_rsa_keys_are_ignored() -> None:
    es = ec_key("k-es")
    assert select_key([{**es.public_jwk, "alg": "ES256"}], "k-es", "ES384") is None
    weak = rsa_key("weak", bits=1024)
    assert select_key([weak.public_jwk], "weak", "RS384") is None


def test_a_key_set_builds_each_found_key_once_and_remembers_no_miss() -> None:
    es, rs = ec_key("k-es"), rsa_key("k-rs")
    source = StaticKeySource({"keys": [es.public_jwk, rs.public_jwk]})
    first = source.key_for("k-es", "ES384")
    assert first is not None and source.key_for("k-es", "ES384") is first
    rs384, rs256 = source.key_for("k-rs", "RS384"), source.key_for("k-rs", "RS256")
    assert rs384 is not None and rs256 is not None and rs384 is not rs256  # bound to each algorithm
    for kid in ("unknown-1", "unknown-2"):
        assert source.key_for(kid, "ES384") is None
    assert source.key_for("k-es", "RS384") is None
    assert len(source._keys._found) == 3  # only the keys found: random kids cannot grow it


def test_shipped_sandbox_jwk_has_the_expected_kid_and_curve() -> None:
    document = shipped_sandbox_jwks()
    (key,) = document["keys"]
    assert (key["kid"], key["kty"], key["crv"], key["alg"], key["use"]) == (
        SANDBOX_KID,
        "EC",
        "P-384",
        "ES384",
        "sig",
    )
    assert "d" not in key
    assert select_key(document["keys"], SANDBOX_KID, "ES384") is not None
    shared = Path(__file__).parents[3] / "shared/specs/cds-hooks-sandbox/sandbox-public-jwks.json"
    if shared.exists():
        assert json.loads(shared.read_text()) == document
    provenance = (Path(__file__).parents[2] / "cds_service/keys/PROVENANCE.md").read_text()
    for fact in (
        "cds-hooks/sandbox",
        "build/.well-known/jwks.json",
        "3b7e25546771c6e7fc5e360aa7db6eb64af0b8b6",
    ):
        assert fact in provenance
    assert SANDBOX_ISSUER in provenance and "Apache-2.0" in provenance


# -- fetcher ----------------------------------------------------------------------------------------------


def test_fetch_does_not_follow_redirects(http: responses.RequestsMock) -> None:
    http.get(URL, status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(JwksError, match="HTTP 302"):
        JwksFetcher().fetch(URL)
    assert [call.request.url for call in http.calls] == [URL]


def test_fetch_caps_the_body_size(http: responses.RequestsMock) -> None:
    http.get(URL, body=b"{" + b" " * 300_000 + b"}")
    with pytest.raises(JwksError, match="exceeds"):
        JwksFetcher().fetch(URL)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"keys": 3}'])
def test_fetch_rejects_non_jwks(http: responses.RequestsMock, body: bytes) -> None:
    http.get(URL, body=body)
    with pytest.raises(JwksError):
        JwksFetcher().fetch(URL)


def test_fetch_uses_timeouts(http: responses.RequestsMock) -> None:
    http.get(URL, json=jwks(ec_key("k-es")))
    JwksFetcher(connect_timeout_s=1.5, read_timeout_s=2.5).fetch(URL)
    assert getattr(http.calls[0].request, "req_kwargs", {})["timeout"] == (1.5, 2.5)


# -- cache, rotation and rate limit -------------------------------------------------------------------------


def test_key_rotation_refetches_once_and_rate_limits_unknown_kids(http: responses.RequestsMock) -> None:
    old, new = ec_key("rot-old"), ec_key("rot-new")
    clock = Clock()
    source = RemoteKeySource(URL, JwksFetcher(), clock=clock, min_refresh_interval_s=60)
    http.get(URL, json=jwks(old))
    assert source.key_for("rot-old", "ES384") is not None
    assert len(http.calls) == 1
    clock.now += 100
    http.replace(responses.GET, URL, json=jwks(old, new))
    assert source.key_for("rot-new", "ES384") is not None  # unknown kid -> one refresh
    assert len(http.calls) == 2
    for attempt in range(50):  # a storm of random kids
        clock.now += 0.5
        assert source.key_for(f"random-{attempt}", "ES384") is None
    assert len(http.calls) == 2
    assert source.key_for("rot-old", "ES384") is not None  # cached keys still served
    clock.now += 61
    assert source.key_for("still-unknown", "ES384") is None
    assert len(http.calls) == 3


def test_cache_refreshes_after_max_age_and_keeps_keys_when_fetch_fails(http: responses.RequestsMock) -> None:
    key = ec_key("k-es")
    clock = Clock()
    source = RemoteKeySource(URL, JwksFetcher(), clock=clock, max_age_s=3600, run_refresh=run_inline)
    http.get(URL, json=jwks(key))
    assert source.key_for("k-es", "ES384") is not None
    clock.now += 3601
    http.replace(responses.GET, URL, status=503)
    assert source.key_for("k-es", "ES384") is not None
    assert len(http.calls) == 2


def test_removed_key_is_no_longer_trusted_after_refresh(http: responses.RequestsMock) -> None:
    old, new = ec_key("rot-old"), ec_key("rot-new")
    clock = Clock()
    source = RemoteKeySource(URL, JwksFetcher(), clock=clock, run_refresh=run_inline)
    http.get(URL, json=jwks(old))
    assert source.key_for("rot-old", "ES384") is not None
    clock.now += 3601
    http.replace(responses.GET, URL, json=jwks(new))
    assert source.key_for("rot-old", "ES384") is None


def test_authenticator_with_rotating_jku(tmp_path: Path, http: responses.RequestsMock) -> None:
    old, new = ec_key("rot-old"), ec_key("rot-new")
    clock = Clock()
    entry = {"iss": ISS, "jku": [JKU], "algorithms": ["ES384"]}
    settings = trust_settings(tmp_path, trusted_issuers=write_issuers(tmp_path, entry))
    registry = JwksRegistry(JwksFetcher(), clock=clock)
    auth = authenticator(settings, registry=registry)
    http.get(JKU, json=jwks(old))
    auth.authenticate(bearer(sign(old, claims(), jku=JKU)), "service", SERVICE_ID)
    clock.now += 120
    http.replace(responses.GET, JKU, json=jwks(old, new))
    auth.authenticate(bearer(sign(new, claims(), jku=JKU)), "service", SERVICE_ID)
    stranger = ec_key("stranger")
    for _ in range(5):
        with pytest.raises(Unauthorized) as caught:
            auth.authenticate(bearer(sign(stranger, claims(), jku=JKU)), "service", SERVICE_ID)
        assert caught.value.reason == "unknown_kid"
    assert len(http.calls) == 2
