"""Operator metrics (Prometheus text format) with bounded labels, correct under several gunicorn workers.

Two modes, chosen by the `PROMETHEUS_MULTIPROC_DIR` environment variable:

* unset (tests, in-process use): each `Metrics` owns a `CollectorRegistry` and `render()` exposes it;
* set (`cds-service serve`; the gunicorn `on_starting` hook in gunicorn_conf creates and empties the
  directory and sets the variable before the workers fork): every worker writes its values to
  memory-mapped files there and `render()`, in whichever worker answers the scrape, sums all of them
  with `MultiProcessCollector`. Counters of dead workers are kept, so totals survive worker restarts.

Label values are always taken from fixed sets (anything else becomes `other`): never a raw path, a
patient id, a service id, a token or an exception message.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Literal, get_args

from flask import Flask
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from cds_service.core.errors import DataUnavailable, NotR4Server
from cds_service.core.security_errors import Reason
from cds_service.present.card_model import Card
from cds_service.rules.decision import Outcome, WarningCode

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from _typeshed import OptExcInfo

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
OTHER: Final = "other"

Endpoint = Literal["discovery", "service", "feedback", "healthz", "admin", "other"]
FhirFetchResult = Literal["ok", "unavailable", "not_r4"]
FeedbackOutcome = Literal["accepted", "overridden"]

ENDPOINTS: Final[tuple[str, ...]] = get_args(Endpoint)
OUTCOMES: Final[frozenset[str]] = frozenset(get_args(Outcome))
CARD_KINDS: Final[tuple[str, ...]] = (*get_args(Outcome), *get_args(WarningCode), OTHER)
AUTH_REASONS: Final[tuple[str, ...]] = (*get_args(Reason), OTHER)
FHIR_FETCH_RESULTS: Final[tuple[str, ...]] = get_args(FhirFetchResult)
FEEDBACK_OUTCOMES: Final[tuple[str, ...]] = get_args(FeedbackOutcome)
# The service answers in 25 ms - 2 s (FHIR deadline 2 s by default); 5 s catches the slow tail.
DURATION_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

_RULE = re.compile(r"R\d{1,2}[a-z]?")
_SERVICES_PATH = "/cds-services"
_CARD_KIND_SET: Final = frozenset(CARD_KINDS)
_AUTH_REASON_SET: Final = frozenset(AUTH_REASONS)


# --- bounded label values ---------------------------------------------------------------------------


DEGRADED_COMPONENTS: Final = ("replay_store", "ledger")
THROTTLE_REASONS: Final = ("rate", "in_flight", "auth_failures")
FAIR_QUEUES: Final = ("evaluation",)
FAIR_REFUSALS: Final = ("full", "timeout")
# A turn is waited for a few ms normally; the tail up to the queue timeout (CDS_FAIR_QUEUE_TIMEOUT_S).
FAIR_WAIT_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


def endpoint_label(path: str) -> Endpoint:
    """The endpoint family of a request path (WSGI PATH_INFO); unknown paths are `other`."""
    if path in (_SERVICES_PATH, _SERVICES_PATH + "/"):
        return "discovery"
    if path.startswith(_SERVICES_PATH + "/"):
        parts = path[len(_SERVICES_PATH) + 1 :].split("/")
        if len(parts) == 1 and parts[0]:
            return "service"
        if len(parts) == 2 and parts[0] and parts[1] == "feedback":
            return "feedback"
        return "other"
    if path == "/healthz":
        return "healthz"
    if path.startswith("/admin/") or path == "/metrics":
        return "admin"
    return "other"


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


def outcome_label(outcome: str) -> str:
    return outcome if outcome in OUTCOMES else OTHER


def rule_label(rule: str) -> str:
    """A protocol rule id such as R12 or R9a; anything else is `other`."""
    return rule if _RULE.fullmatch(rule) else OTHER


def auth_reason_label(reason: str) -> str:
    return reason if reason in _AUTH_REASON_SET else OTHER


def card_kind(card: Card) -> str:
    """The metric label of a typed card: its outcome or warning code, else `other`."""
    return card.kind if card.kind in _CARD_KIND_SET else OTHER


def fhir_fetch_result(error: BaseException | None) -> FhirFetchResult | None:
    """`ok` for None, the failure category of a FHIR/prefetch error, None for errors of another kind."""
    if error is None:
        return "ok"
    if isinstance(error, NotR4Server):
        return "not_r4"
    if isinstance(error, DataUnavailable):
        return "unavailable"
    return None


# --- the metrics ------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is on (the variable is set and not empty)."""
    return os.environ.get(MULTIPROC_ENV) or None


def _use_multiprocess_values_if_configured() -> None:
    """Switch prometheus_client to file-backed values when the directory was set after its import.

    prometheus_client picks its value class when it is first imported. `cds-service serve` imports it in
    the gunicorn master (the fail-fast `create_app`) before the `on_starting` hook sets the variable, so
    each forked worker switches here, before creating its metrics. An existing file-backed class is never
    replaced (two of them in one process would map the same files twice).
    """
    if multiprocess_dir() is not None and prometheus_values.ValueClass is prometheus_values.MutexValue:
        prometheus_values.ValueClass = prometheus_values.get_value_class()  # type: ignore[no-untyped-call]


class Metrics:
    """The service's counters and histograms, registered in their own registry (one per instance)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        _use_multiprocess_values_if_configured()
        self.registry = registry if registry is not None else CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            "cds_http_requests",
            "HTTP requests by endpoint family and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "cds_http_request_duration_seconds",
            "HTTP request duration by endpoint family",
            ["endpoint"],
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self._decisions = Counter(
            "cds_decisions",
            "Protocol decisions by outcome and deciding rule",
            ["outcome", "rule"],
            registry=registry,
        )
        self._cards = Counter(
            "cds_cards", "Cards returned, by outcome or warning code", ["kind"], registry=registry
        )
        self._fhir_fetches = Counter(
            "cds_fhir_fetches",
            "Hook calls that fetched from fhirServer, by result",
            ["result"],
            registry=registry,
        )
        self._prefetch_keys = Counter(
            "cds_prefetch_keys_fetched",
            "Prefetch keys fetched from fhirServer (not supplied)",
            registry=registry,
        )
        self._auth_refusals = Counter(
            "cds_auth_refusals",
            "Client JWTs refused (401), by reason category",
            ["reason"],
            registry=registry,
        )
        self._ledger_failures = Counter(
            "cds_ledger_write_failures",
            "Card ledger writes that failed (cards still returned)",
            registry=registry,
        )
        self._feedback = Counter(
            "cds_feedback_entries", "Feedback entries stored, by outcome", ["outcome"], registry=registry
        )
        self._degraded = Counter(
            "cds_degraded_calls",
            "Calls served in degraded mode (database down), by component",
            ["component"],
            registry=registry,
        )
        self._throttled = Counter(
            "cds_client_throttled",
            "Calls refused with 429 by the per-client limits, by limit",
            ["reason"],
            registry=registry,
        )
        self._fair_wait = Histogram(
            "cds_fair_queue_wait_seconds",
            "Time a call waited for its turn in a worker's fair queue, by queue",
            ["queue"],
            buckets=FAIR_WAIT_BUCKETS_S,
            registry=registry,
        )
        self._fair_refused = Counter(
            "cds_fair_queue_refused",
            "Calls refused with 503 by a worker's fair queue (queue full, wait timed out)",
            ["queue", "reason"],
            registry=registry,
        )
        # Series of the small fixed label sets exist from the start at 0 (rate() and alerts need them).
        for kind in CARD_KINDS:
            self._cards.labels(kind=kind)
        for result in FHIR_FETCH_RESULTS:
            self._fhir_fetches.labels(result=result)
        for reason in AUTH_REASONS:
            self._auth_refusals.labels(reason=reason)
        for outcome in FEEDBACK_OUTCOMES:
            self._feedback.labels(outcome=outcome)
        for component in DEGRADED_COMPONENTS:
            self._degraded.labels(component=component)
        for reason in THROTTLE_REASONS:
            self._throttled.labels(reason=reason)
        for queue in FAIR_QUEUES:
            for refusal in FAIR_REFUSALS:
                self._fair_refused.labels(queue=queue, reason=refusal)

    def observe_request(self, path: str, status: int, duration_s: float) -> None:
        """One HTTP request; `path` is reduced to its endpoint family here."""
        endpoint = endpoint_label(path)
        self._requests.labels(endpoint=endpoint, status=status_label(status)).inc()
        self._duration.labels(endpoint=endpoint).observe(max(duration_s, 0.0))

    def record_decision(self, outcome: str, rule: str) -> None:
        self._decisions.labels(outcome=outcome_label(outcome), rule=rule_label(rule)).inc()

    def record_cards(self, cards: Iterable[Card]) -> None:
        for card in cards:
            self._cards.labels(kind=card_kind(card)).inc()

    def record_fhir_fetch(self, result: FhirFetchResult, keys_fetched: int = 0) -> None:
        """One hook call's fetch from fhirServer and, when it succeeded, how many prefetch keys it filled."""
        self._fhir_fetches.labels(result=result if result in FHIR_FETCH_RESULTS else "unavailable").inc()
        if keys_fetched > 0:
            self._prefetch_keys.inc(keys_fetched)

    def record_auth_refusal(self, reason: str) -> None:
        self._auth_refusals.labels(reason=auth_reason_label(reason)).inc()

    def record_ledger_write_failure(self) -> None:
        self._ledger_failures.inc()

    def record_degraded(self, component: str) -> None:
        self._degraded.labels(component=component if component in DEGRADED_COMPONENTS else OTHER).inc()

    def record_throttled(self, reason: str) -> None:
        self._throttled.labels(reason=reason if reason in THROTTLE_REASONS else OTHER).inc()

    def observe_fair_wait(self, queue: str, waited_s: float) -> None:
        self._fair_wait.labels(queue=queue if queue in FAIR_QUEUES else OTHER).observe(max(waited_s, 0.0))

    def record_fair_refused(self, queue: str, reason: str) -> None:
        queue_label = queue if queue in FAIR_QUEUES else OTHER
        self._fair_refused.labels(
            queue=queue_label, reason=reason if reason in FAIR_REFUSALS else OTHER
        ).inc()

    def record_feedback(self, outcome: str, count: int = 1) -> None:
        if count > 0:
            self._feedback.labels(outcome=outcome if outcome in FEEDBACK_OUTCOMES else OTHER).inc(count)

    def render(self) -> tuple[bytes, str]:
        """(body, content type): every worker's values in multiprocess mode, else this registry's."""
        return _exposition(self.registry)


def _exposition(process_registry: CollectorRegistry | None) -> tuple[bytes, str]:
    directory = multiprocess_dir()
    if directory is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    if process_registry is None:
        process_registry = get_metrics().registry
    return generate_latest(process_registry), CONTENT_TYPE_LATEST


def render() -> tuple[bytes, str]:
    """(body, content type) of the `/metrics` answer: all workers summed, or this process's metrics."""
    return _exposition(None)


# --- one instance per process -----------------------------------------------------------------------

_lock = threading.Lock()
_current: tuple[int, Metrics] | None = None


def get_metrics() -> Metrics:
    """This process's `Metrics`, created on first use and again in a forked child (gunicorn worker)."""
    global _current  # noqa: PLW0603 - one instance per process, replaced after a fork
    pid = os.getpid()
    with _lock:
        if _current is None or _current[0] != pid:
            _current = (pid, Metrics())
        return _current[1]


# --- request counting and timing (WSGI middleware) -------------------------------------------------


class RequestMetricsMiddleware:
    """Counts and times every request, including preflights, 404s and errors answered by handlers."""

    def __init__(self, app: WSGIApplication, metrics: Callable[[], Metrics] = get_metrics) -> None:
        self._app = app
        self._metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        statuses: list[str] = []

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            return self._app(environ, recording_start_response)
        finally:
            self._metrics().observe_request(
                str(environ.get("PATH_INFO", "")), _status_code(statuses), time.perf_counter() - started
            )


def _status_code(statuses: list[str]) -> int:
    """The last status passed to start_response; 500 when the application raised before answering."""
    try:
        return int(statuses[-1].split(" ", 1)[0]) if statuses else 500
    except ValueError:
        return 500


def instrument_app(app: Flask, metrics: Callable[[], Metrics] = get_metrics) -> None:
    """Wrap the app's WSGI callable with `RequestMetricsMiddleware` (call once per app)."""
    app.wsgi_app = RequestMetricsMiddleware(app.wsgi_app, metrics)  # type: ignore[method-assign]
