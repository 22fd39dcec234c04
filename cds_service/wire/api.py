"""HTTP routes: discovery, service call, feedback and health; every error is an OperationOutcome.

Check order for a call: OPTIONS preflight 204, unknown path or id 404, wrong method 405,
media type 415, body size 413, JSON/request validation 400, then the service (412, other errors).
Every response carries the CORS headers when the request's Origin is allowed. Logs never hold
request bodies, tokens or exception messages (they may contain PHI).
"""

from __future__ import annotations

import logging
import time
import traceback
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import IO, Any

import orjson
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from cds_service import __version__
from cds_service.config import Settings, operational_warnings
from cds_service.core.audience import Endpoint
from cds_service.core.errors import BadRequest, Issue, ServiceError
from cds_service.core.json_empty import drop_empty
from cds_service.core.security_errors import Unauthorized, error_headers
from cds_service.gather.fhir_server_guard import check_fhir_server
from cds_service.present.card_model import Card
from cds_service.record.db.engine import RETRY_AFTER_S, DatabaseUnavailable
from cds_service.record.metrics import get_metrics
from cds_service.record.metrics import render as render_metrics
from cds_service.wire.auth.jwt_verify import AuthContext
from cds_service.wire.auth_flood import AuthFailureLimiter
from cds_service.wire.cdshooks import PatientViewRequest, operation_outcome, parse_patient_view_request
from cds_service.wire.client_limit import ClientLimiter, client_key
from cds_service.wire.cors import Cors, answer_preflight
from cds_service.wire.fair_queue import FairQueue
from cds_service.wire.feedback_routes import (
    handle_admin_report,
    handle_feedback,
    record_issued_cards,
    require_admin_token,
)
from cds_service.wire.hook_protocol import HookService
from cds_service.wire.readiness import Readiness
from cds_service.wire.runtime import Runtime

logger = logging.getLogger(__name__)

JSON_MEDIA_TYPES = frozenset({"application/json", "application/fhir+json"})
_READ_CHUNK = 64 * 1024
_LOG_TEXT_MAX = 64


def create_blueprint(service: HookService, settings: Settings, runtime: Runtime) -> Blueprint:
    """Routes, CORS and error handlers for one service; registers app-wide hooks on registration.

    Order for a service call: 404/405, 429 (the source address used up its failed authentications),
    401 (client JWT), 403 (issuer/tenant), 429 (per-client limits),
    415, 413, 400 (JSON), 403 (fhirServer not allowed: checked as soon as the body is parsed, before any
    other validation and before prefetch is read), 400 (request), then 412/500 from the service, with
    503 when the worker's fair queue is full or the wait for the evaluation's turn times out.
    """
    limiter = ClientLimiter(settings.client_rate_limit, settings.client_max_in_flight)
    failures = AuthFailureLimiter(settings.auth_failure_limit)
    authn = _FailureCountingAuthenticator(runtime, failures)
    # Fair turns per worker: the decision, the cards and their ledger write (one writer per worker).
    # A client refused for its rate moments ago waits until no other client's call does.
    evaluation = FairQueue(
        "evaluation",
        max_waiting=settings.fair_queue_max,
        timeout_s=settings.fair_queue_timeout_s,
        lowered=limiter.over_rate,
    )
    blueprint = Blueprint("cds_hooks", __name__)
    blueprint.record_once(
        lambda state: state.app.extensions.update(cds_fair_queues={"evaluation": evaluation})
    )
    cors = Cors(settings.cors_allowed_origins)
    blueprint.before_app_request(answer_preflight)
    blueprint.after_app_request(cors.apply)

    @blueprint.app_errorhandler(Exception)
    def any_error(error: Exception) -> Response:
        return _error_response(error, service.service_id)

    @blueprint.get("/cds-services")
    def discovery() -> Response:
        try:
            authn.authenticate(request.headers.get("Authorization"), "discovery", service.service_id)
        except ServiceError as error:
            return _error_response(error, service.service_id)
        return _json({"services": [service.descriptor()]})

    def answer_hook(auth: AuthContext, client: str, logged: dict[str, Any]) -> Response:
        body = _read_json_body(settings.max_body_bytes)
        logged["hookInstance"] = _raw_hook_instance(body)
        fhir_server = body.get("fhirServer") if isinstance(body, dict) else None
        if isinstance(fhir_server, str):
            check_fhir_server(fhir_server, auth, runtime.trust)
        hook = parse_patient_view_request(body)
        _yield_to_other_connections()
        with ExitStack() as held:

            def turn_until_ledgered() -> AbstractContextManager[object]:
                """The call's turn, kept past the cards until they are in the ledger (see below)."""
                held.enter_context(evaluation.turn(client))
                return nullcontext()

            # Run to completion: a call that has its turn keeps it through the ledger write, so while the
            # write waits on the database no other call's evaluation starts in this worker (gevent would
            # resume this call only after that whole evaluation); other connections' reads and parsing,
            # /healthz included, still run during the wait.
            result = service.handle(hook, auth, turn_until_ledgered)
            logged["cards"] = len(result.cards)
            _ledger_cards(runtime, hook, result.cards, service.protocol_version())
        return _json(result.to_wire(), keep_empty=True)  # to_wire omits every empty value itself

    @blueprint.post("/cds-services/<service_id>")
    def call_service(service_id: str) -> Response:
        started = time.perf_counter()
        logged: dict[str, Any] = {"service": _clip(service_id)}
        try:
            _require_known(service_id, service.service_id)
            auth = authn.authenticate(request.headers.get("Authorization"), "service", service.service_id)
            client = client_key(auth.iss, auth.sub, request.remote_addr)
            with limiter.admit(client):
                response = answer_hook(auth, client, logged)
        except Exception as error:  # mapped to a status; unexpected ones are logged there
            response = _error_response(error, service.service_id)
        _log_event("cds_call", status=response.status_code, duration_ms=_since(started), **logged)
        return response

    @blueprint.post("/cds-services/<service_id>/feedback")
    def feedback(service_id: str) -> Response:
        started = time.perf_counter()
        try:
            _require_known(service_id, service.service_id)
            auth = authn.authenticate(request.headers.get("Authorization"), "feedback", service.service_id)
            with limiter.admit(client_key(auth.iss, auth.sub, request.remote_addr)):
                body = _read_json_body(settings.max_body_bytes)
                if not runtime.db_health.usable():
                    raise DatabaseUnavailable()  # refused, never acknowledged and lost
                try:
                    status, answer, headers = handle_feedback(body, runtime.store)
                except DatabaseUnavailable:
                    runtime.db_health.failed("feedback")
                    raise
            response = _json(answer, status, keep_empty=True)
            response.headers.update(headers)
        except Exception as error:
            response = _error_response(error, service.service_id)
        _log_event(
            "cds_feedback_call",
            service=_clip(service_id),
            status=response.status_code,
            duration_ms=_since(started),
        )
        return response

    @blueprint.get("/admin/feedback-report")
    def feedback_report() -> Response:
        try:
            status, report, headers = handle_admin_report(
                request.headers.get("Authorization"),
                request.args.get("since"),
                runtime.store,
                settings.admin_token_sha256,
            )
        except ServiceError as error:
            return _error_response(error, service.service_id)
        response = _json(report, status, keep_empty=True)
        response.headers.update(headers)
        return response

    @blueprint.get("/admin/metrics")
    def metrics() -> Response:
        """Prometheus exposition (all workers), for the operator token: Prometheus sends it natively."""
        try:
            require_admin_token(request.headers.get("Authorization"), settings.admin_token_sha256)
        except ServiceError as error:
            return _error_response(error, service.service_id)
        body, content_type = render_metrics()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    readiness = Readiness(runtime, service)

    @blueprint.get("/readyz")
    def readyz() -> Response:
        """Readiness: database reachable and migrated, knowledge loaded, each issuer's JWKS loaded."""
        ready, checks = readiness.check()
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        response = _json(body, 200 if ready else 503, keep_empty=True)
        if not ready:
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @blueprint.get("/healthz")
    def healthz() -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "service_version": __version__,
            "protocol_version": service.protocol_version(),
            "auth_mode": settings.auth_mode,
        }
        if settings.as_of is not None:
            body["as_of_pinned"] = settings.as_of.isoformat()
        body["ledger_write_failures"] = runtime.store.ledger_failures
        body["database"] = "degraded" if runtime.db_health.down else "ok"
        body["warnings"] = operational_warnings(settings)
        return _json(body, keep_empty=True)

    return blueprint


class _FailureCountingAuthenticator:
    """The runtime's authenticator behind the per-address budget of failed authentications: an address
    past it is refused (429) before its token is decoded; each 401 is counted against its address."""

    def __init__(self, runtime: Runtime, failures: AuthFailureLimiter) -> None:
        self._authenticator = runtime.authenticator
        self._failures = failures

    def authenticate(self, header: str | None, endpoint: Endpoint, service_id: str) -> AuthContext:
        if self._authenticator.mode == "off":
            return self._authenticator.authenticate(header, endpoint, service_id)
        address = request.remote_addr
        self._failures.check(address)
        try:
            return self._authenticator.authenticate(header, endpoint, service_id)
        except Unauthorized:
            self._failures.failed(address)
            raise


def _yield_to_other_connections() -> None:
    """Let other connections of this worker run between the CPU-bound steps of a hook call.

    Under gevent (patched `time.sleep`) this switches to any ready greenlet, so /healthz and short calls
    are not queued behind a whole heavy evaluation; with threads it only releases the GIL."""
    time.sleep(0)


def _ledger_cards(
    runtime: Runtime, hook: PatientViewRequest, cards: list[Card], protocol_version: str
) -> None:
    """Record the cards before the 200 (feedback joins to them); a failure never hides the cards."""
    get_metrics().record_cards(cards)
    if not runtime.db_health.usable():  # known outage: do not wait for a connect timeout
        runtime.store.count_ledger_failure()
        get_metrics().record_ledger_write_failure()
        get_metrics().record_degraded("ledger")
        return
    recorded = record_issued_cards(
        runtime.store,
        cards,
        hook_instance=hook.hookInstance,
        patient_id=hook.context.patientId,
        patient_key=runtime.patient_key,
        protocol_version=protocol_version,
    )
    if not recorded:
        get_metrics().record_ledger_write_failure()


def _require_known(service_id: str, known_id: str) -> None:
    if service_id != known_id:
        raise ServiceError(
            [Issue("not-found", f"no CDS Service with this id; GET /cds-services lists '{known_id}'")], 404
        )


def _read_json_body(limit: int) -> Any:
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise ServiceError(
            [Issue("not-supported", "Content-Type must be application/json or application/fhir+json")], 415
        )
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    data = _read_at_most(request.stream, limit)
    if not data.strip():
        raise BadRequest("the request body is empty", code="required")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON", code="structure") from None


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ServiceError:
    return ServiceError([Issue("too-long", f"the request body exceeds {limit} bytes")], 413)


def _raw_hook_instance(body: Any) -> str | None:
    value = body.get("hookInstance") if isinstance(body, dict) else None
    return _clip(value) if isinstance(value, str) else None


def _error_response(error: Exception, service_id: str) -> Response:
    if isinstance(error, Unauthorized):
        get_metrics().record_auth_refusal(error.reason)
    if isinstance(error, MethodNotAllowed) and _unknown_service_in_path(service_id):
        error = ServiceError([Issue("not-found", "no CDS Service with this id")], 404)
    if isinstance(error, ServiceError):
        response = _json(operation_outcome(error), error.status)
        response.headers.update(error_headers(error))
        response.headers.update(getattr(error, "headers", None) or {})
        return response
    if isinstance(error, HTTPException):
        return _http_error(error)
    _log_unexpected(error)
    return _json(operation_outcome(ServiceError([Issue("exception", "internal error")], 500)), 500)


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    messages = {
        404: ("not-found", "no such endpoint; CDS Services are listed at GET /cds-services"),
        405: ("not-supported", f"method {request.method} is not allowed on this endpoint"),
        413: ("too-long", "the request body is too large"),
    }
    code, diagnostics = messages.get(status, ("processing", error.name))
    response = _json(operation_outcome(ServiceError([Issue(code, diagnostics)], status)), status)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response


def _unknown_service_in_path(known_id: str) -> bool:
    """404 beats 405: a wrong method on /cds-services/<unknown id>[/feedback] is a 404."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        _endpoint, args = adapter.match(method="POST")
    except HTTPException:
        return False
    service_id = args.get("service_id")
    return service_id is not None and service_id != known_id


def _log_unexpected(error: Exception) -> None:
    """Exception type and stack (file, line, code) only: messages and locals may hold PHI."""
    stack = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
    causes: list[str] = []
    cause = error.__cause__ or error.__context__
    while cause is not None and len(causes) < 5:
        causes.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    logger.error(
        "unhandled %s on %s %s (caused by: %s)\n%s",
        type(error).__name__,
        request.method,
        request.path,
        ", ".join(causes) or "-",
        stack,
    )


def _json(body: Any, status: int = 200, *, keep_empty: bool = False) -> Response:
    payload = body if keep_empty else drop_empty(body)
    response = Response(orjson.dumps(payload), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _log_event(event: str, **fields: Any) -> None:
    if logger.isEnabledFor(logging.INFO):  # the line is built only when it is written
        logger.info(orjson.dumps({"event": event, **fields}).decode())


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _clip(text: str) -> str:
    return text[:_LOG_TEXT_MAX]
