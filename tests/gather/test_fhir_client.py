"""FhirClient: bearer token scope, redirects, cookies, paging, R4 check, parallelism and the deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import responses
from responses import matchers

from cds_service.core.errors import BadRequest, DataUnavailable, NotR4Server
from cds_service.gather import shared_http
from cds_service.gather.bundles import is_read
from cds_service.gather.client import FhirClient
from cds_service.gather.shared_http import shared_executor, shared_session
from tests.support.http_mocks import fresh_metadata_cache_fixture, rsps_fixture  # noqa: F401 - fixtures

BASE = "https://fhir.example.org/r4"
OTHER = "https://elsewhere.example.com/r4"
TOKEN = "secret-token-abc123"
PATIENT = "pat-42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Callback = Callable[[requests.PreparedRequest], tuple[int, dict[str, str], str]]


def make_client(base: str = BASE, token: str | None = TOKEN, **overrides: Any) -> FhirClient:
    options: dict[str, Any] = {
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "deadline_s": 5.0,
        "max_pages": 3,
    }
    options.update(overrides)
    return FhirClient(base, token, **options)


def add_metadata(rsps: responses.RequestsMock, version: str = "4.0.1", base: str = BASE) -> None:
    body = {"resourceType": "CapabilityStatement", "fhirVersion": version}
    rsps.add(responses.GET, f"{base}/metadata", json=body)


def observation(obs_id: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": obs_id, "status": "final"}


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": "ignored"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    entries = [{"fullUrl": f"{BASE}/Observation/{r.get('id')}", "resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def search_url(query: str = f"patient={PATIENT}") -> str:
    return f"{BASE}/Observation?{query}"


def sent_kwargs(call: responses.Call) -> dict[str, Any]:
    """The keyword arguments requests passed to the transport (timeout, proxies...), recorded by responses."""
    kwargs: dict[str, Any] = call.request.req_kwargs  # type: ignore[attr-defined]
    return kwargs


def urls_called(rsps: responses.RequestsMock) -> list[str]:
    return [str(call.request.url) for call in rsps.calls]


# --- plain search, headers ------------------------------------------------------------------------------


def test_search_returns_entry_resources_and_sends_bearer_and_accept(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(
        responses.GET,
        search_url(),
        json=bundle(observation("o1"), observation("o2")),
        match=[matchers.header_matcher({**AUTH, "Accept": "application/fhir+json"})],
    )
    found = make_client().search(f"Observation?patient={PATIENT}")
    assert [r["id"] for r in found] == ["o1", "o2"]
    assert all(call.request.headers["Authorization"] == f"Bearer {TOKEN}" for call in rsps.calls)


def test_no_token_means_no_authorization_header(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(observation("o1")))
    make_client(token=None).search(f"Observation?patient={PATIENT}")
    assert all("Authorization" not in call.request.headers for call in rsps.calls)


def test_operation_outcome_entries_are_dropped(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    body = bundle(observation("o1"))
    body["entry"] += [
        {"resource": {"resourceType": "OperationOutcome", "issue": []}},
        {"resource": observation("o-outcome"), "search": {"mode": "outcome"}},
        {"fullUrl": "no-resource"},
    ]
    rsps.add(responses.GET, search_url(), json=body)
    assert [r["id"] for r in make_client().search(f"Observation?patient={PATIENT}")] == ["o1"]


# --- paging -----------------------------------------------------------------------------------------------


def test_follows_relative_and_absolute_next_links_on_the_server(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(observation("o1"), next_url="Observation?page=2"))
    rsps.add(
        responses.GET,
        search_url("page=2"),
        json=bundle(observation("o2"), next_url=f"{BASE}/Observation?page=3"),
        match=[matchers.header_matcher(AUTH)],
    )
    rsps.add(responses.GET, search_url("page=3"), json=bundle(observation("o3")))
    client = make_client()
    assert [r["id"] for r in client.search(f"Observation?patient={PATIENT}")] == ["o1", "o2", "o3"]
    assert client.pages_fetched == 3


def test_next_link_on_another_origin_is_refused_and_not_requested(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(observation("o1"), next_url=f"{OTHER}/Observation?p=2"))
    other = rsps.add(responses.GET, f"{OTHER}/Observation", json=bundle(observation("o2")))
    with pytest.raises(DataUnavailable) as caught:
        make_client().search(f"Observation?patient={PATIENT}")
    assert caught.value.status == 412
    assert other.call_count == 0
    assert {urlsplit(url).hostname for url in urls_called(rsps)} == {"fhir.example.org"}


@pytest.mark.parametrize(
    "next_url",
    [
        "https://fhir.example.org/other/Observation?p=2",  # same origin, outside the base path
        "https://fhir.example.org/r4/../admin?p=2",  # dot segments
        "http://fhir.example.org/r4/Observation?p=2",  # scheme downgrade
        "https://fhir.example.org:8443/r4/Observation?p=2",  # other port
        "https://user@fhir.example.org/r4/Observation?p=2",  # userinfo
    ],
)
def test_next_links_outside_the_fhir_server_are_refused(rsps: responses.RequestsMock, next_url: str) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(observation("o1"), next_url=next_url))
    with pytest.raises(DataUnavailable):
        make_client().search(f"Observation?patient={PATIENT}")
    assert len([url for url in urls_called(rsps) if "p=2" in url]) == 0


def test_page_cap_raises(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(observation("o1"), next_url="Observation?page=2"))
    rsps.add(
        responses.GET, search_url("page=2"), json=bundle(observation("o2"), next_url="Observation?page=3")
    )
    third = rsps.add(responses.GET, search_url("page=3"), json=bundle(observation("o3")))
    with pytest.raises(DataUnavailable, match="page cap"):
        make_client(max_pages=2).search(f"Observation?patient={PATIENT}")
    assert third.call_count == 0


def test_follow_next_completes_a_prefetched_bundle(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(
        responses.GET,
        search_url("page=2"),
        json=bundle(observation("o2")),
        match=[matchers.header_matcher(AUTH)],
    )
    client = make_client()
    rest = client.follow_next(bundle(observation("o1"), next_url=search_url("page=2")))
    assert [r["id"] for r in rest] == ["o2"]
    assert client.pages_fetched == 1


# --- failures -> 412 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        requests.exceptions.ReadTimeout(),
        requests.exceptions.ConnectTimeout(),
        requests.exceptions.ConnectionError(),
    ],
)
def test_transport_errors_raise_data_unavailable(rsps: responses.RequestsMock, body: Exception) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), body=body)
    with pytest.raises(DataUnavailable) as caught:
        make_client().search(f"Observation?patient={PATIENT}")
    assert caught.value.status == 412
    assert caught.value.issues[0].expression == ("fhirServer",)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
def test_search_http_errors_raise_data_unavailable(rsps: responses.RequestsMock, status: int) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), status=status, json={"resourceType": "OperationOutcome"})
    with pytest.raises(DataUnavailable, match=str(status)):
        make_client().search(f"Observation?patient={PATIENT}")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("not json", "text/plain"),
        ('{"resourceType": "Patient"}', "application/fhir+json"),
        ("[]", "application/json"),
    ],
)
def test_search_answer_must_be_a_bundle(rsps: responses.RequestsMock, body: str, content_type: str) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), body=body, content_type=content_type)
    with pytest.raises(DataUnavailable):
        make_client().search(f"Observation?patient={PATIENT}")


def test_oversized_response_raises(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(*(observation(f"o{i}") for i in range(200))))
    with pytest.raises(DataUnavailable, match="too large"):
        make_client(max_response_bytes=2_000).search(f"Observation?patient={PATIENT}")


def test_redirect_is_not_followed(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), status=302, headers={"Location": f"{OTHER}/Observation?x=1"})
    target = rsps.add(responses.GET, f"{OTHER}/Observation", json=bundle(observation("o1")))
    with pytest.raises(DataUnavailable, match="redirects are not followed"):
        make_client().search(f"Observation?patient={PATIENT}")
    assert target.call_count == 0


def test_read_returns_resource_or_none_on_404(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, f"{BASE}/Patient/{PATIENT}", json={"resourceType": "Patient", "id": PATIENT})
    rsps.add(responses.GET, f"{BASE}/Patient/gone", status=404)
    client = make_client()
    assert client.read(f"Patient/{PATIENT}") == {"resourceType": "Patient", "id": PATIENT}
    assert client.read("Patient/gone") is None


def test_read_other_errors_raise(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, f"{BASE}/Patient/{PATIENT}", status=403)
    with pytest.raises(DataUnavailable):
        make_client().read(f"Patient/{PATIENT}")


def test_absolute_url_on_another_origin_is_never_fetched(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    other = rsps.add(responses.GET, f"{OTHER}/Observation", json=bundle())
    with pytest.raises(DataUnavailable):
        make_client().search(f"{OTHER}/Observation?patient={PATIENT}")
    assert other.call_count == 0


# --- R4 check ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        {"resourceType": "Conformance", "fhirVersion": "1.0.2"},
        {"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2"},
        {"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"},
        {"resourceType": "CapabilityStatement"},
    ],
)
def test_non_r4_server_raises_with_sandbox_hint(
    rsps: responses.RequestsMock, metadata: dict[str, Any]
) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=metadata)
    rsps.add(responses.GET, search_url(), json=bundle())
    with pytest.raises(NotR4Server) as caught:
        make_client().search(f"Observation?patient={PATIENT}")
    assert caught.value.status == 412
    assert "FHIR R4 is required" in str(caught.value)
    assert "?fhirServiceUrl=https://<your R4 server>" in str(caught.value)
    assert caught.value.issues[0].expression == ("fhirServer",)


@pytest.mark.parametrize("version", ["4.0.0", "4.0.1", "4.3.0"])
def test_r4_and_r4b_are_accepted(rsps: responses.RequestsMock, version: str) -> None:
    add_metadata(rsps, version)
    rsps.add(responses.GET, search_url(), json=bundle())
    assert make_client().search(f"Observation?patient={PATIENT}") == []


def test_not_r4_wins_over_a_failing_search(rsps: responses.RequestsMock) -> None:
    release = threading.Event()

    def slow_metadata(_: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        release.wait(2)
        return 200, {}, '{"resourceType": "Conformance", "fhirVersion": "1.0.2"}'

    def failing_search(_: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        release.set()
        return 400, {}, "{}"

    rsps.add_callback(responses.GET, f"{BASE}/metadata", callback=slow_metadata)
    rsps.add_callback(responses.GET, search_url(), callback=failing_search)
    with pytest.raises(NotR4Server):
        make_client().search(f"Observation?patient={PATIENT}")


def test_metadata_unreachable_raises_data_unavailable(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", status=500)
    rsps.add(responses.GET, search_url(), json=bundle())
    with pytest.raises(DataUnavailable) as caught:
        make_client().search(f"Observation?patient={PATIENT}")
    assert not isinstance(caught.value, NotR4Server)


def test_metadata_result_is_cached_per_base_url(rsps: responses.RequestsMock) -> None:
    metadata = rsps.add(
        responses.GET,
        f"{BASE}/metadata",
        json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"},
    )
    rsps.add(responses.GET, search_url(), json=bundle())
    make_client().search(f"Observation?patient={PATIENT}")
    make_client(base=BASE + "/").search(f"Observation?patient={PATIENT}")
    assert metadata.call_count == 1


# --- token scope, cookies, environment --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{BASE}/Observation?patient=1", True),
        ("HTTPS://FHIR.EXAMPLE.ORG:443/r4/metadata", True),
        (BASE, True),
        (f"{OTHER}/Observation", False),
        ("http://fhir.example.org/r4/Observation", False),
        ("https://fhir.example.org:8443/r4/Observation", False),
        ("https://fhir.example.org/r4x/Observation", False),
        ("https://fhir.example.org/Observation", False),
        ("https://fhir.example.org.evil.example/r4/Observation", False),
        ("https://fhir.example.org@evil.example/r4/Observation", False),
        ("https://evil.example/r4/Observation?h=fhir.example.org", False),
        ("https://fhir.example.org/r4/%2e%2e/admin", False),
    ],
)
def test_bearer_token_only_for_the_fhir_server(url: str, expected: bool) -> None:
    headers = make_client()._headers(url)
    assert ("Authorization" in headers) is expected
    assert headers["Accept"] == "application/fhir+json"


def test_token_goes_to_its_own_server_not_to_another_clients_server(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    add_metadata(rsps, base=OTHER)
    rsps.add(responses.GET, search_url(), json=bundle(), match=[matchers.header_matcher(AUTH)])
    rsps.add(responses.GET, f"{OTHER}/Observation", json=bundle())
    make_client().search(f"Observation?patient={PATIENT}")
    make_client(base=OTHER, token=None).search(f"Observation?patient={PATIENT}")
    for call in rsps.calls:
        sent = call.request.headers.get("Authorization")
        assert sent == (
            f"Bearer {TOKEN}" if urlsplit(str(call.request.url)).hostname == "fhir.example.org" else None
        )


def test_no_cookies_are_carried_between_calls(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url("page=1"), json=bundle(), headers={"Set-Cookie": "sid=abc; Path=/"})
    rsps.add(responses.GET, search_url("page=2"), json=bundle())
    make_client().search("Observation?page=1")
    make_client().search("Observation?page=2")
    make_client(session=shared_session()).search("Observation?page=2")
    first_page = rsps.calls[1].response
    assert isinstance(first_page, requests.Response)
    assert "Set-Cookie" in first_page.headers
    assert all("Cookie" not in call.request.headers for call in rsps.calls)
    assert len(shared_session().cookies) == 0


def test_shared_session_ignores_environment(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NETRC", "/nonexistent")
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle())
    make_client(token=None).search(f"Observation?patient={PATIENT}")
    assert shared_session() is shared_session()
    assert shared_session().trust_env is False
    assert all(not sent_kwargs(call)["proxies"] for call in rsps.calls)


def test_bad_token_or_base_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(BadRequest) as caught:
        make_client(token="abc\r\nX-Injected: 1")
    assert "abc" not in str(caught.value)
    for base in (
        "ftp://fhir.example.org/r4",
        "https://user:pw@fhir.example.org/r4",
        "https://h/r4?x=1",
        "nonsense",
    ):
        with pytest.raises(BadRequest):
            make_client(base=base)


def test_logs_and_errors_never_contain_token_or_query(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle(observation("o1")))
    rsps.add(responses.GET, f"{BASE}/Condition?patient={PATIENT}", status=500)
    client = make_client()
    client.search(f"Observation?patient={PATIENT}")
    with pytest.raises(DataUnavailable) as caught:
        client.search(f"Condition?patient={PATIENT}")
    text = caplog.text + str(caught.value) + repr(client)
    assert TOKEN not in text
    assert PATIENT not in text
    assert "fhir.example.org" in caplog.text
    assert "type=Observation" in caplog.text
    assert "status=500" in caplog.text


# --- parallelism and deadline -----------------------------------------------------------------------------


def barrier_callback(barrier: threading.Barrier, body: str) -> Callback:
    def callback(_: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        barrier.wait()  # raises BrokenBarrierError unless all parties are in flight at the same time
        return 200, {"Content-Type": "application/fhir+json"}, body

    return callback


def test_search_many_runs_queries_and_metadata_concurrently(rsps: responses.RequestsMock) -> None:
    barrier = threading.Barrier(4, timeout=2)
    capability = '{"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}'
    rsps.add_callback(responses.GET, f"{BASE}/metadata", callback=barrier_callback(barrier, capability))
    empty = '{"resourceType": "Bundle", "type": "searchset"}'
    for resource_type in ("Condition", "Procedure", "AllergyIntolerance"):
        url = f"{BASE}/{resource_type}?patient={PATIENT}"
        rsps.add_callback(responses.GET, url, callback=barrier_callback(barrier, empty))
    urls = {key: f"{key}?patient={PATIENT}" for key in ("Condition", "Procedure", "AllergyIntolerance")}
    assert make_client().search_many(urls) == {key: [] for key in urls}


def test_search_many_names_the_failing_key(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, f"{BASE}/Condition?patient={PATIENT}", json=bundle())
    rsps.add(responses.GET, f"{BASE}/Procedure?patient={PATIENT}", status=500)
    urls = {"conditions": f"Condition?patient={PATIENT}", "procedures": f"Procedure?patient={PATIENT}"}
    with pytest.raises(DataUnavailable) as caught:
        make_client().search_many(urls, expression_prefix="prefetch.")
    assert caught.value.issues[0].expression == ("prefetch.procedures",)


def test_slow_server_past_the_deadline_raises(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)

    def slow(_: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        time.sleep(0.6)
        return 200, {}, '{"resourceType": "Bundle"}'

    rsps.add_callback(responses.GET, search_url(), callback=slow)
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match="deadline"):
        make_client(deadline_s=0.2).search(f"Observation?patient={PATIENT}")
    assert time.monotonic() - started < 0.55


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_timeouts_are_capped_by_the_remaining_deadline(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle())
    clock = FakeClock()
    client = make_client(clock=clock, deadline_s=10.0, connect_timeout=1.0, read_timeout=2.0)
    clock.now += 9.5
    client.search(f"Observation?patient={PATIENT}")
    assert {sent_kwargs(call)["timeout"] for call in rsps.calls} == {(0.5, 0.5)}


def test_nothing_is_sent_after_the_deadline(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, search_url(), json=bundle())
    clock = FakeClock()
    client = make_client(clock=clock, deadline_s=1.0)
    clock.now += 1.0
    with pytest.raises(DataUnavailable, match="deadline"):
        client.search(f"Observation?patient={PATIENT}")
    assert len(rsps.calls) == 0


def test_shared_executor_is_one_bounded_pool() -> None:
    assert shared_executor() is shared_executor()
    assert shared_http._EXECUTOR_WORKERS <= 64


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient/p1", True),
        ("Patient?_id=p1", False),
        ("Observation", False),
        ("Observation?patient=p1", False),
    ],
)
def test_is_read_tells_instance_reads_from_searches(url: str, expected: bool) -> None:
    assert is_read(url) is expected


def test_search_without_parameters_is_a_search(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, f"{BASE}/Observation", json=bundle(observation("o1")))
    assert [r["id"] for r in make_client().search("Observation")] == ["o1"]
