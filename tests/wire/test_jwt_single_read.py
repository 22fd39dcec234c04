"""The client JWT is read once (jwt_verify._load) and shared by the header check, the unverified claims and
the signature check: every token gets the same refusal category, or the same header and claims, as the
three separate PyJWT calls it replaced (get_unverified_header, decode without and with the signature)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from jwt import PyJWK
from jwt.exceptions import InvalidSignatureError, PyJWTError

from cds_service.wire.auth import jwt_verify
from tests.wire.test_security_support import claims, ec_key, sign, sign_raw, unsigned

ES = ec_key("single-read")
OTHER = ec_key("single-read-other")
_ONLY_SIGNATURE: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: bytes, payload: bytes, signature: bytes = b"sig") -> str:
    return f"{_b64(header)}.{_b64(payload)}.{_b64(signature)}"


def _previous(token: str) -> tuple[str, Any]:
    """The three PyJWT calls of the previous version, up to the key lookup."""
    seen = jwt_verify._Seen("service")
    try:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise jwt_verify._Refused("malformed") from None
        jwt_verify._header(jwt_verify._Loaded(header), seen)  # the same header checks on the same dict
        try:
            body = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise jwt_verify._Refused("malformed") from None
        if "iss" not in body:
            raise jwt_verify._Refused("missing_claim")
        if not isinstance(body["iss"], str):
            raise jwt_verify._Refused("malformed")
    except jwt_verify._Refused as refusal:
        return "refused", refusal.reason
    return "read", (header, body)


def _now(token: str) -> tuple[str, Any]:
    seen = jwt_verify._Seen("service")
    try:
        loaded = jwt_verify._load(token)
        header = jwt_verify._header(loaded, seen)
        body = jwt_verify._unverified_claims(loaded, seen)
    except jwt_verify._Refused as refusal:
        return "refused", refusal.reason
    return "read", (header, body)


def _tokens() -> list[str]:
    body = json.dumps(claims()).encode()
    good = {"alg": "ES384", "kid": "k", "typ": "JWT"}
    return [
        sign(ES, claims()),
        sign_raw(ES, {"iss": 5, "aud": "x"}),
        unsigned(good, claims()),
        unsigned({**good, "b64": False}, claims()),
        unsigned({**good, "b64": False, "crit": ["b64"]}, claims()),
        f"{_b64(json.dumps({**good, 'b64': False, 'crit': ['b64']}).encode())}..{_b64(b'sig')}",
        unsigned({**good, "crit": ["exp"]}, claims()),
        unsigned({**good, "crit": []}, claims()),
        unsigned({**good, "kid": 7}, claims()),
        unsigned({**good, "alg": "none"}, claims()),
        unsigned({**good, "alg": "HS256"}, claims()),
        unsigned({**good, "typ": "JOSE"}, claims()),
        unsigned({**good, "typ": 3}, claims()),
        unsigned({**good, "jku": ["x"]}, claims()),
        unsigned({"alg": "ES384"}, claims()),
        _raw(b"not json", body),
        _raw(b"[1, 2]", body),
        _raw(json.dumps(good).encode(), b"not json"),
        _raw(json.dumps(good).encode(), b"[1, 2]"),
        _raw(json.dumps(good).encode(), b'{"iss": "x"}', b""),
        _raw(json.dumps(good).encode(), b'{"aud": "x"}'),
        _raw(json.dumps(good).encode(), b"[" * 5000 + b"]" * 5000),
        _raw(json.dumps(good).encode(), body) + "=",
        _raw(json.dumps(good).encode(), body).replace(".", "=.", 1),
        _raw(json.dumps(good).encode(), body) + "A",
        "a.b",
        "a.b.c.d",
        "!!!!.e30.c2ln",
    ]


@pytest.mark.parametrize("index", range(len(_tokens())))
def test_one_read_refuses_or_reads_as_the_three_pyjwt_calls_did(index: int) -> None:
    token = _tokens()[index]
    assert _now(token) == _previous(token)


@pytest.mark.parametrize(("signer", "verifier"), [(ES, ES), (ES, OTHER), (OTHER, ES)])
def test_the_signature_check_agrees_with_jwt_decode(signer: Any, verifier: Any) -> None:
    token = sign(signer, claims())
    key = PyJWK(dict(verifier.public_jwk), algorithm="ES384")
    try:
        expected: Any = jwt.decode(token, key=key, algorithms=["ES384"], options=_ONLY_SIGNATURE)
    except InvalidSignatureError:
        expected = "bad_signature"
    loaded = jwt_verify._load(token)
    assert loaded.header is not None
    try:
        jwt_verify._JWS._verify_signature(
            loaded.signing_input, loaded.header, loaded.signature, key, ["ES384"], options=jwt_verify._SIGNED
        )
        got: Any = jwt_verify._unverified_claims(loaded, jwt_verify._Seen("service"))
    except InvalidSignatureError:
        got = "bad_signature"
    assert got == expected
    assert (signer is verifier) == (got != "bad_signature")
