"""fhirServer SSRF guard and the pinned transport.

Name resolution is always the fake resolver below (no DNS query leaves the machine); HTTP to other hosts
only runs under `responses`; real sockets only to local servers on 127.0.0.1 (pytest-socket allow_hosts).
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cds_service.core.errors import DataUnavailable
from cds_service.core.security_errors import Forbidden
from cds_service.core.trust_settings import AuthMode, TrustSettings
from cds_service.gather.client import FhirClient
from cds_service.gather.fhir_server_guard import check_fhir_server, guarded_session
from cds_service.gather.shared_http import clear_metadata_cache
from cds_service.wire.auth.issuers import IssuerConfig
from cds_service.wire.auth.jwt_verify import AuthContext
from tests.wire.test_security_support import ACCESS_TOKEN, FHIR, ISS, no_secrets_in_logs

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])
__all__ = ["no_secrets_in_logs"]

PUBLIC_IP = "93.184.216.34"
LISTED = (
    FHIR,
    "http://10.0.0.5:8080/fhir",
    "http://127.0.0.1:9000/fhir",
    "https://169.254.169.254/fhir",
)


# -- fixtures: fake resolver, settings, local servers ------------------------------------------------------


@dataclass
class Resolver:
    names: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, *args: Any, **kwargs: Any
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            addresses = [str(ipaddress.ip_address(name))]
        except ValueError:
            self.asked.append(name)
            if name not in self.names:
                raise socket.gaierror(socket.EAI_NONAME, "unknown name (fake resolver)") from None
            addresses = self.names[name]
        results: list[tuple[Any, ...]] = []
        for address in addresses:
            if ":" in address:
                results.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0)))
            else:
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0))))
        return results


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    clear_metadata_cache()
    return fake


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def settings(mode: AuthMode = "required", allowlist: tuple[str, ...] = ()) -> TrustSettings:
    return TrustSettings(auth_mode=mode, fhir_allowlist=allowlist, public_base_url="https://cds.example.org")


def auth_for(*fhir_servers: str, mode: AuthMode = "required") -> AuthContext:
    issuer = IssuerConfig(iss=ISS, jku=("https://ehr.example.org/jwks",), fhir_servers=fhir_servers)
    return AuthContext(mode=mode, iss=ISS, jti="j", kid="k", issuer=issuer)


REQUIRED = auth_for(*LISTED)
NORMALISED_ONLY = "HTTPS://EHR.example.org/api/FHIR/R4"  # listed after normalisation, not verbatim


@dataclass
class Seen:
    requests: list[dict[str, str | None]] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


def _handler(seen: Seen) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.requests.append(
                {
                    "path": self.path,
                    "host": self.headers.get("Host"),
                    "auth": self.headers.get("Authorization"),
                }
            )
            if self.path.endswith("/metadata"):
                self._json({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
            elif self.path.endswith("/Patient/p1"):
                self._json({"resourceType": "Patient", "id": "p1"})
            elif self.path.endswith("/moved"):
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(404)

        def _json(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class Server:
    port: int
    seen: Seen


def _serve(wrap: Callable[[socket.socket], socket.socket] | None = None) -> Iterator[Server]:
    seen = Seen()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    if wrap is not None:
        server.socket = wrap(server.socket)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(server.server_address[1], seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local_http() -> Iterator[Server]:
    yield from _serve()


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def local_https(tmp_path: Path) -> Iterator[tuple[Server, Path, Path]]:
    good, good_key = _certificate(tmp_path, "fhir.test")
    other, _ = _certificate(tmp_path, "other.test")
    sni: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(good, good_key)

    def remember_sni(sock: Any, name: str | None, ctx: Any) -> None:
        sni.append(name)

    context.sni_callback = remember_sni
    for server in _serve(lambda raw: context.wrap_socket(raw, server_side=True)):
        server.seen.sni = sni
        yield server, good, other


def client(base: str, session: requests.Session) -> FhirClient:
    return FhirClient(
        base,
        ACCESS_TOKEN,
        connect_timeout=2.0,
        read_timeout=2.0,
        deadline_s=5.0,
        max_pages=2,
        session=session,
    )


# -- policy: check_fhir_server (no DNS, no HTTP) -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        FHIR,
        FHIR + "/",
        "HTTPS://EHR.Example.org:443/api/FHIR/R4",
        "http://10.0.0.5:8080/fhir",
        "http://127.0.0.1:9000/fhir",
    ],
)
def test_required_allows_listed_servers(url: str, resolver: Resolver) -> None:
    check_fhir_server(url, REQUIRED, settings())
    assert not resolver.asked


@pytest.mark.parametrize(
    "url",
    [
        "https://other.example.org/api/FHIR/R4",  # another host
        "https://ehr.example.org/api/FHIR/R4/../../admin",  # path escape
        "https://ehr.example.org/api/FHIR",  # a prefix of a listed URL
        "http://ehr.example.org/api/FHIR/R4",  # http, not listed
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://169.254.169.254/fhir",  # listed verbatim, but link-local is never allowed
        "http://10.0.0.1/fhir",  # private, not listed
        "HTTP://10.0.0.5:8080/fhir",  # private + http, listed only after normalisation
        "http://localhost:9000/fhir",  # loopback, not listed verbatim
        "https://127.0.0.1/fhir",  # loopback in required
        "http://[::1]:9000/fhir",  # IPv6 loopback
        "http://[::ffff:127.0.0.1]:9000/fhir",  # IPv4-mapped
        "http://127.1:9000/fhir",  # short IPv4
        "http://2130706433:9000/fhir",  # decimal IPv4
        "http://0x7f000001:9000/fhir",  # hex IPv4
        "http://0177.0.0.1:9000/fhir",  # octal IPv4
        "https://ehr.example.org@evil.example.com/api/FHIR/R4",  # userinfo trick
        "https://ehr.example.org:443@evil.example.com/api/FHIR/R4",
        "https://evil.example.com#@ehr.example.org/api/FHIR/R4",
        "https://ehr.example.org.evil.example.com/api/FHIR/R4",
        "https://ehr.exаmple.org/api/FHIR/R4",  # Cyrillic a
        "https://[fe80::1%25eth0]/fhir",  # zone id
        "file:///etc/passwd",
        "gopher://ehr.example.org/",
        "",
    ],
)
def test_required_refuses_ssrf_attempts_without_any_request(
    url: str, resolver: Resolver, mocked: responses.RequestsMock
) -> None:
    with pytest.raises(Forbidden) as caught:
        check_fhir_server(url, REQUIRED, settings())
    assert caught.value.status == 403 and caught.value.issues[0].expression == ("fhirServer",)
    with pytest.raises(Forbidden):
        guarded_session(url, REQUIRED, settings())
    assert not resolver.asked and not mocked.calls


def test_required_needs_an_authenticated_issuer() -> None:
    with pytest.raises(Forbidden):
        check_fhir_server(FHIR, None, settings())
    with pytest.raises(Forbidden):
        check_fhir_server(FHIR, AuthContext(mode="required"), settings())


def test_the_issuer_list_not_the_allowlist_counts_in_required() -> None:
    with pytest.raises(Forbidden):
        check_fhir_server(
            "https://r4.example.net/fhir", REQUIRED, settings(allowlist=("https://r4.example.net/fhir",))
        )


@pytest.mark.parametrize("mode", ["dev", "off"])
@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/fhir",
        "http://127.0.0.1:8080/fhir",
        "http://[::1]:8080/fhir",
        "https://r4.example.net/fhir/",
    ],
)
def test_dev_and_off_allow_loopback_and_the_allowlist(mode: AuthMode, url: str) -> None:
    auth = auth_for(mode=mode) if mode == "dev" else None
    check_fhir_server(url, auth, settings(mode, ("https://r4.example.net/fhir",)))


@pytest.mark.parametrize("mode", ["dev", "off"])
@pytest.mark.parametrize(
    "url",
    [
        FHIR,  # listed for the issuer, but dev/off use the allowlist
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/fhir",
        "http://127.1/fhir",
        "http://2130706433/fhir",
        "http://[::ffff:127.0.0.1]/fhir",
        "http://foo.localhost/fhir",
        "http://localhost@evil.example.com/fhir",
        "http://0.0.0.0:8080/fhir",
    ],
)
def test_dev_and_off_refuse_everything_else(mode: AuthMode, url: str, resolver: Resolver) -> None:
    with pytest.raises(Forbidden):
        check_fhir_server(url, auth_for(FHIR, mode=mode), settings(mode, ("https://r4.example.net/fhir",)))
    assert not resolver.asked


# -- transport: resolve once, check, pin -------------------------------------------------------------------


def test_name_resolving_to_a_private_address_is_refused_before_connecting(
    resolver: Resolver, mocked: responses.RequestsMock
) -> None:
    resolver.names["ehr.example.org"] = ["10.0.0.7"]
    url = NORMALISED_ONLY
    session = guarded_session(url, REQUIRED, settings())
    with pytest.raises(Forbidden):
        client(url, session).read("Patient/p1")
    assert not mocked.calls
    assert set(resolver.asked) == {"ehr.example.org"}


@pytest.mark.parametrize(
    ("url", "addresses", "allowed"),
    [
        (FHIR, ["169.254.169.254"], False),
        (FHIR, ["fe80::1"], False),
        (FHIR, ["0.0.0.0"], False),
        (FHIR, ["224.0.0.1"], False),
        (FHIR, ["240.0.0.1"], False),
        (FHIR, ["10.0.0.7"], True),  # listing the exact URL allows a private address
        (FHIR, ["::ffff:10.0.0.7"], True),
        (NORMALISED_ONLY, [PUBLIC_IP, "10.0.0.7"], False),  # one bad answer is enough
        (NORMALISED_ONLY, ["127.0.0.1"], False),
        (NORMALISED_ONLY, ["::ffff:10.0.0.7"], False),
        (NORMALISED_ONLY, ["2002:a00:7::1"], False),  # 6to4 wrapping 10.0.0.7
        (NORMALISED_ONLY, [PUBLIC_IP], True),
    ],
)
def test_address_classes_checked_on_every_answer(
    url: str, addresses: list[str], allowed: bool, resolver: Resolver, mocked: responses.RequestsMock
) -> None:
    resolver.names["ehr.example.org"] = addresses
    session = guarded_session(url, REQUIRED, settings())
    if allowed:
        with pytest.raises(requests.ConnectionError):  # reached responses: nothing registered
            session.get(FHIR + "/metadata", timeout=1)
        shown = f"[{ipaddress.ip_address(addresses[0])}]" if ":" in addresses[0] else addresses[0]
        assert [call.request.url for call in mocked.calls] == [f"https://{shown}/api/FHIR/R4/metadata"]
        return
    with pytest.raises(Forbidden):
        session.get(FHIR + "/metadata", timeout=1)
    assert not mocked.calls


def test_requests_go_to_the_checked_ip_with_the_original_host_header(
    resolver: Resolver, mocked: responses.RequestsMock
) -> None:
    resolver.names["ehr.example.org"] = [PUBLIC_IP]
    mocked.get(
        f"https://{PUBLIC_IP}/api/FHIR/R4/metadata",
        json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"},
    )
    mocked.get(f"https://{PUBLIC_IP}/api/FHIR/R4/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    patient = client(FHIR, guarded_session(FHIR, REQUIRED, settings())).read("Patient/p1")
    assert patient == {"resourceType": "Patient", "id": "p1"}
    assert {call.request.headers["Host"] for call in mocked.calls} == {"ehr.example.org"}
    assert resolver.asked == ["ehr.example.org", "ehr.example.org"]  # once per request


def test_redirect_to_another_origin_is_not_followed(
    resolver: Resolver, mocked: responses.RequestsMock
) -> None:
    resolver.names["ehr.example.org"] = [PUBLIC_IP]
    resolver.names["evil.example.com"] = [PUBLIC_IP]
    for path in ("metadata", "Patient/p1"):
        mocked.get(
            f"https://{PUBLIC_IP}/api/FHIR/R4/{path}",
            status=302,
            headers={"Location": "https://evil.example.com/x"},
        )
    session = guarded_session(FHIR, REQUIRED, settings())
    with pytest.raises(DataUnavailable, match="redirects are not followed"):
        client(FHIR, session).read("Patient/p1")
    response = session.get(FHIR + "/metadata", allow_redirects=True, timeout=1)
    assert response.status_code == 302 and response.url == FHIR + "/metadata"
    assert all(
        (call.request.url or "").startswith(f"https://{PUBLIC_IP}/api/FHIR/R4/") for call in mocked.calls
    )
    assert "evil.example.com" not in resolver.asked


def test_the_session_only_reaches_the_fhir_server_origin(
    resolver: Resolver, mocked: responses.RequestsMock
) -> None:
    session = guarded_session(FHIR, REQUIRED, settings())
    for url in (
        "https://evil.example.com/api/FHIR/R4/metadata",
        "http://ehr.example.org/api/FHIR/R4",
        "https://ehr.example.org:8443/",
    ):
        with pytest.raises(Forbidden):
            session.get(url, timeout=1)
    assert not mocked.calls and not resolver.asked


def test_unresolvable_host_is_data_unavailable_not_forbidden(resolver: Resolver) -> None:
    with pytest.raises(DataUnavailable):
        client(FHIR, guarded_session(FHIR, REQUIRED, settings())).read("Patient/p1")
    assert resolver.asked


# -- real local servers ------------------------------------------------------------------------------------


def test_pinned_http_connects_to_the_checked_address_with_the_hostname(
    resolver: Resolver, local_http: Server
) -> None:
    base = f"http://fhir.test:{local_http.port}/fhir"
    resolver.names["fhir.test"] = ["127.0.0.1"]
    session = guarded_session(base, auth_for(mode="dev"), settings("dev", (base,)))
    assert client(base, session).read("Patient/p1") == {"resourceType": "Patient", "id": "p1"}
    assert {r["host"] for r in local_http.seen.requests} == {f"fhir.test:{local_http.port}"}
    assert {r["auth"] for r in local_http.seen.requests} == {f"Bearer {ACCESS_TOKEN}"}
    assert resolver.asked.count("fhir.test") == len(local_http.seen.requests) == 2


def test_a_name_resolving_to_loopback_is_refused_unless_allowed(
    resolver: Resolver, local_http: Server
) -> None:
    resolver.names["evil.test"] = ["127.0.0.1"]
    base = f"http://evil.test:{local_http.port}/fhir"
    with pytest.raises(Forbidden):
        guarded_session(base, auth_for(mode="dev"), settings("dev"))
    required = auth_for(f"HTTP://EVIL.test:{local_http.port}/fhir")  # listed, but not verbatim
    with pytest.raises(Forbidden):
        guarded_session(base, required, settings())
    required = auth_for(f"https://evil.test:{local_http.port}/fhir")
    session = guarded_session(f"https://EVIL.test:{local_http.port}/fhir", required, settings())
    with pytest.raises(Forbidden):
        session.get(f"https://evil.test:{local_http.port}/fhir/metadata", timeout=1)
    assert not local_http.seen.requests


def test_loopback_listed_verbatim_in_required_is_reachable(local_http: Server) -> None:
    base = f"http://127.0.0.1:{local_http.port}/fhir"
    session = guarded_session(base, auth_for(base), settings())
    assert client(base, session).read("Patient/p1") is not None
    with pytest.raises(Forbidden):
        guarded_session(f"http://localhost:{local_http.port}/fhir", auth_for(base), settings())


def test_redirect_from_a_real_server_is_not_followed(local_http: Server) -> None:
    base = f"http://127.0.0.1:{local_http.port}/fhir"
    session = guarded_session(base, auth_for(mode="dev"), settings("dev"))
    response = session.get(base + "/moved", allow_redirects=True, timeout=2)
    assert response.status_code == 302
    assert [r["path"] for r in local_http.seen.requests] == ["/fhir/moved"]


def test_pinned_https_keeps_sni_and_certificate_check_on_the_hostname(
    resolver: Resolver, local_https: tuple[Server, Path, Path]
) -> None:
    server, good_ca, other_ca = local_https
    base = f"https://fhir.test:{server.port}/fhir"
    resolver.names["fhir.test"] = ["127.0.0.1"]
    session = guarded_session(base, auth_for(mode="dev"), settings("dev", (base,)))
    session.verify = str(good_ca)
    assert client(base, session).read("Patient/p1") == {"resourceType": "Patient", "id": "p1"}
    assert set(server.seen.sni) == {"fhir.test"}
    assert {r["host"] for r in server.seen.requests} == {f"fhir.test:{server.port}"}
    served = len(server.seen.requests)
    untrusted = guarded_session(base, auth_for(mode="dev"), settings("dev", (base,)))
    untrusted.verify = str(other_ca)  # a CA for another name: the certificate must not verify
    with pytest.raises(requests.exceptions.SSLError):
        untrusted.get(base + "/metadata", timeout=2)
    assert len(server.seen.requests) == served
