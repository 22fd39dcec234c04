"""FHIR R4 REST client for one hook call: bearer token to its own server only, deadline, paging, parallelism.

All HTTP goes through `FhirClient._get`, so a later SSRF guard (resolve the host once, connect to the
checked address) has exactly one place to plug in. Nothing here logs or raises with a URL path, a query
string, a header or the access token: log lines carry host, resource type, status and duration only.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import urljoin

import requests

from cds_service.core.errors import DataUnavailable, NotR4Server
from cds_service.core.net_deadline import Deadline, enforce
from cds_service.gather.bundles import JsonObject, bundle_entries, is_read, json_object, next_link
from cds_service.gather.capability import capability_cache, parse_capability_statement, r4_version
from cds_service.gather.fhir_urls import (
    SERVER_EXPRESSION,
    bearer,
    is_on_server,
    normalise_base,
    resource_type_of,
)
from cds_service.gather.peer_guard import PeerGuard, PeerRefused
from cds_service.gather.refusal import refusal, relabel
from cds_service.gather.shared_http import fhir_peer_guard, r4_cache, shared_executor, shared_session

log = logging.getLogger(__name__)

T = TypeVar("T")

FHIR_JSON: Final = "application/fhir+json"
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024

_CHUNK_BYTES: Final = 64 * 1024


class FhirClient:
    """Reads from one FHIR R4 server on behalf of one hook call (create one client per call)."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        deadline_s: float,
        max_pages: int,
        session: requests.Session | None = None,
        executor: cf.Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        peer_guard: PeerGuard | None = None,
    ) -> None:
        self._base, self._server_origin, self._base_path = normalise_base(base_url)
        self._authorization = bearer(access_token)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._clock = clock
        self._deadline = clock() + deadline_s
        self._max_pages = max(1, max_pages)
        self._max_response_bytes = max_response_bytes
        self._session = session if session is not None else shared_session()
        self._executor = executor if executor is not None else shared_executor()
        self._pages_lock = threading.Lock()
        self._pages_fetched = 0
        self._peer_guard = peer_guard if peer_guard is not None else fhir_peer_guard()
        self._peer_failed = False

    def __repr__(self) -> str:
        return f"FhirClient(host={self._server_origin[1]!r})"

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def pages_fetched(self) -> int:
        """Resource reads and search pages fetched so far (the `/metadata` check not counted)."""
        with self._pages_lock:
            return self._pages_fetched

    # -- public API: each call verifies (once per base URL and process) that the server is R4 -------------

    def search(self, url: str) -> list[JsonObject]:
        """All entry resources of a search (relative to the base, or absolute on it), across pages."""
        task = self._labelled(SERVER_EXPRESSION, self._search_entries, url)
        entries = self._run_parallel({SERVER_EXPRESSION: task}, "")[SERVER_EXPRESSION]
        return [entry["resource"] for entry in entries]

    def read(self, url: str) -> JsonObject | None:
        """One resource by `Type/id`; None when the server answers 404."""
        task = self._labelled(SERVER_EXPRESSION, self._read_entries, url)
        entries = self._run_parallel({SERVER_EXPRESSION: task}, "")[SERVER_EXPRESSION]
        return entries[0]["resource"] if entries else None

    def follow_next(self, bundle: Mapping[str, Any]) -> list[JsonObject]:
        """The entry resources of the pages after `bundle` (itself counted as page 1 of the cap)."""
        entries = self.gather_entries({}, {SERVER_EXPRESSION: bundle})[SERVER_EXPRESSION]
        return [entry["resource"] for entry in entries]

    def search_many(
        self, urls: Mapping[str, str], *, expression_prefix: str = ""
    ) -> dict[str, list[JsonObject]]:
        """Run several searches (or `Type/id` reads) in parallel; errors name `expression_prefix + key`."""
        found = self.gather_entries(urls, expression_prefix=expression_prefix)
        return {key: [entry["resource"] for entry in entries] for key, entries in found.items()}

    def gather_entries(
        self,
        urls: Mapping[str, str],
        continuations: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        expression_prefix: str = "",
        wrap: Callable[[str, Callable[[], list[JsonObject]]], Callable[[], list[JsonObject]]] | None = None,
    ) -> dict[str, list[JsonObject]]:
        """Fetch searches/reads and complete paged Bundles in parallel, alongside the R4 metadata check.

        Returns Bundle entries (`{"fullUrl"?, "resource"}`) per key; for continuations only the entries of
        the following pages. The first failure raises DataUnavailable naming `expression_prefix + key`
        (NotR4Server, naming `fhirServer`, wins when the server is not R4). Never returns partial data,
        unless `wrap(key, task)` returns a task that turns a failure into [] (prefetch policy `omit`).
        """
        tasks: dict[str, Callable[[], list[JsonObject]]] = {}
        for key, url in urls.items():
            tasks[key] = self._labelled(expression_prefix + key, self._fetch_entries, url)
        for key, bundle in (continuations or {}).items():
            tasks[key] = self._labelled(expression_prefix + key, self._next_pages, bundle, 1)
        if wrap is not None:
            tasks = {key: wrap(key, task) for key, task in tasks.items()}
        return self._run_parallel(tasks, expression_prefix)

    def check_server(self) -> None:
        """Read the server's CapabilityStatement now (confirms R4; capability.py caches what it declares)."""
        self._run_parallel({}, "")

    # -- parallel execution -------------------------------------------------------------------------------

    def _labelled(self, expression: str, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        def run() -> T:
            try:
                return fn(*args)
            except DataUnavailable as error:
                raise relabel(error, expression) from None

        return run

    def _run_parallel(
        self, tasks: Mapping[str, Callable[[], list[JsonObject]]], expression_prefix: str
    ) -> dict[str, list[JsonObject]]:
        self._check_deadline()
        try:
            with self._peer_guard.call(self._base) as outcome:
                try:
                    return self._run_admitted(tasks, expression_prefix)
                finally:
                    if self._peer_failed:
                        outcome.fail()
        except PeerRefused as refused:
            log.warning("fhir call refused host=%s reason=%s", self._server_origin[1], refused.reason)
            why = (
                "has failed repeatedly (circuit open); it is not contacted for a while"
                if refused.reason == "circuit_open"
                else "already has the maximum number of calls in flight from this service"
            )
            raise DataUnavailable(f"The FHIR server {why}", SERVER_EXPRESSION) from None

    def _run_admitted(
        self, tasks: Mapping[str, Callable[[], list[JsonObject]]], expression_prefix: str
    ) -> dict[str, list[JsonObject]]:
        known = r4_cache.get(self._base) and capability_cache().get(self._base) is not None
        metadata = None if known else self._executor.submit(self._ensure_r4)
        futures = {key: self._executor.submit(task) for key, task in tasks.items()}
        every: list[cf.Future[Any]] = [*futures.values(), *([metadata] if metadata else [])]
        done, pending = cf.wait(every, timeout=max(self._remaining(), 0.0), return_when=cf.FIRST_EXCEPTION)
        failed = [future for future in every if future in done and future.exception() is not None]
        if pending:
            self._peer_failed = True  # still waiting at the deadline: the server was too slow
        if failed or pending:
            try:
                self._raise_failure(futures, metadata, failed, expression_prefix)
            finally:
                for future in pending:
                    future.cancel()
        return {key: future.result() for key, future in futures.items()}

    def _raise_failure(
        self,
        futures: Mapping[str, cf.Future[list[JsonObject]]],
        metadata: cf.Future[None] | None,
        failed: list[cf.Future[Any]],
        expression_prefix: str,
    ) -> NoReturn:
        """Raise the most useful error: a non-R4 server explains failing searches, so it goes first."""
        if metadata is not None and (failed or metadata.done()):
            try:
                metadata.result(timeout=max(self._remaining(), 0.0))
            except NotR4Server:
                raise
            except (DataUnavailable, cf.TimeoutError, cf.CancelledError):
                pass
        if failed:
            error = failed[0].exception()
            assert error is not None
            raise error
        waiting = next((key for key, future in futures.items() if not future.done()), None)
        expression = expression_prefix + waiting if waiting is not None else SERVER_EXPRESSION
        raise DataUnavailable("The FHIR server did not answer before the hook call's deadline", expression)

    # -- fetching -----------------------------------------------------------------------------------------

    def _fetch_entries(self, url: str) -> list[JsonObject]:
        if is_read(url):
            return self._read_entries(url)
        return self._search_entries(url)

    def _read_entries(self, url: str) -> list[JsonObject]:
        absolute = self._absolute(url)
        resource = self._get_json(absolute, allow_404=True)
        if resource is None or resource.get("resourceType") == "OperationOutcome":
            return []
        return [{"fullUrl": absolute, "resource": resource}]

    def _search_entries(self, url: str) -> list[JsonObject]:
        bundle = self._get_bundle(self._absolute(url))
        return bundle_entries(bundle) + self._next_pages(bundle, 1)

    def _next_pages(self, bundle: Mapping[str, Any], pages: int) -> list[JsonObject]:
        """Entries of the pages after `bundle`, following only `next` links on the FHIR server."""
        entries: list[JsonObject] = []
        link = next_link(bundle)
        while link is not None:
            if pages >= self._max_pages:
                raise DataUnavailable(
                    f"The search has more than {self._max_pages} pages (the page cap); not evaluated on "
                    "partial data",
                    SERVER_EXPRESSION,
                )
            page = self._get_bundle(self._absolute(link))
            pages += 1
            entries.extend(bundle_entries(page))
            link = next_link(page)
        return entries

    def _get_bundle(self, url: str) -> JsonObject:
        body = self._get_json(url, allow_404=False)
        if body is None or body.get("resourceType") != "Bundle":
            kind = resource_type_of(url, self._base_path)
            raise DataUnavailable(
                f"The FHIR server did not answer a {kind} search with a Bundle", SERVER_EXPRESSION
            )
        return body

    def _ensure_r4(self) -> None:
        url = f"{self._base}/metadata"
        body = self._get_json(url, allow_404=False, count_page=False)
        r4_cache.put(self._base, r4_version(body))
        capability_cache().put(self._base, parse_capability_statement(body or {}))

    def _absolute(self, url: str) -> str:
        """Resolve `url` against the base; refuse anything outside the FHIR server (never fetched)."""
        absolute = urljoin(self._base + "/", url)
        if not self._on_fhir_server(absolute):
            raise DataUnavailable(
                "A FHIR query or next link points outside fhirServer; it was not followed", SERVER_EXPRESSION
            )
        return absolute

    def _on_fhir_server(self, url: str) -> bool:
        return is_on_server(url, self._server_origin, self._base_path)

    def _headers(self, url: str) -> dict[str, str]:
        """The one place request headers are built: the bearer token only for the FHIR server itself."""
        headers = {"Accept": FHIR_JSON}
        if self._authorization is not None and self._on_fhir_server(url):
            headers["Authorization"] = self._authorization
        return headers

    # -- transport ----------------------------------------------------------------------------------------

    def _get_json(self, url: str, *, allow_404: bool, count_page: bool = True) -> JsonObject | None:
        """GET a FHIR JSON object; None for a 404 when allowed. Every failure is DataUnavailable."""
        kind = resource_type_of(url, self._base_path)
        with enforce(Deadline.after(self._remaining())) as deadline:
            body = self._exchange(url, kind, allow_404, deadline)
        if body is None:
            return None
        if count_page:
            with self._pages_lock:
                self._pages_fetched += 1
        return json_object(body, kind)

    def _exchange(self, url: str, kind: str, allow_404: bool, deadline: Deadline) -> bytes | None:
        """GET and read the body under one wall-clock deadline (shut at expiry whatever the peer sends)."""
        response = self._get(url, deadline)
        try:
            if response.status_code == 404 and allow_404:
                return None
            if response.status_code >= 500:
                self._peer_failed = True
            if not 200 <= response.status_code < 300:
                raise refusal(response, kind)
            return self._read_body(response, deadline)
        except DataUnavailable:
            if deadline.expired:
                self._peer_failed = True
            raise
        finally:
            response.close()

    def _get(self, url: str, deadline: Deadline | None = None) -> requests.Response:
        """Send one GET (no redirects, bounded timeouts, no cookies). The single HTTP entry point."""
        connect, read = self._timeouts()
        host, kind = self._server_origin[1], resource_type_of(url, self._base_path)
        started = time.perf_counter()
        try:
            response = self._session.get(
                url, headers=self._headers(url), timeout=(connect, read), allow_redirects=False, stream=True
            )
        except requests.RequestException as error:
            self._peer_failed = True
            if deadline is not None and deadline.expired:
                self._log_failure(host, kind, "deadline", started)
                raise self._deadline_passed() from None
            if not isinstance(error, requests.Timeout):
                self._log_failure(host, kind, type(error).__name__, started)
                raise DataUnavailable(
                    f"The FHIR server could not be reached for a {kind} request", SERVER_EXPRESSION
                ) from None
            self._log_failure(host, kind, "timeout", started)
            raise DataUnavailable(
                f"The FHIR server timed out on a {kind} request", SERVER_EXPRESSION
            ) from None
        log.info(
            "fhir GET host=%s type=%s status=%s duration_ms=%.1f",
            host,
            kind,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    def _read_body(self, response: requests.Response, deadline: Deadline | None = None) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(_CHUNK_BYTES):
                size += len(chunk)
                if size > self._max_response_bytes:
                    raise DataUnavailable("The FHIR server's response is too large", SERVER_EXPRESSION)
                chunks.append(chunk)
                self._check_deadline()
        except requests.RequestException:
            self._peer_failed = True
            if deadline is not None and deadline.expired:
                raise self._deadline_passed() from None
            raise DataUnavailable("The FHIR server's response could not be read", SERVER_EXPRESSION) from None
        self._check_deadline()
        return b"".join(chunks)

    @staticmethod
    def _log_failure(host: str, kind: str, reason: str, started: float) -> None:
        log.warning(
            "fhir GET host=%s type=%s failed=%s duration_ms=%.1f",
            host,
            kind,
            reason,
            (time.perf_counter() - started) * 1000,
        )

    # -- deadline -----------------------------------------------------------------------------------------

    def _remaining(self) -> float:
        return self._deadline - self._clock()

    def deadline_reached(self) -> bool:
        return self._remaining() <= 0

    def _check_deadline(self) -> None:
        if self._remaining() <= 0:
            raise self._deadline_passed()

    @staticmethod
    def _deadline_passed() -> DataUnavailable:
        return DataUnavailable("The hook call's deadline for FHIR queries has passed", SERVER_EXPRESSION)

    def _timeouts(self) -> tuple[float, float]:
        self._check_deadline()
        remaining = self._remaining()
        return min(self._connect_timeout, remaining), min(self._read_timeout, remaining)
