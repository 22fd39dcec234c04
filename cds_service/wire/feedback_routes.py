"""What the HTTP layer calls for feedback, the card ledger and the admin report (Flask-free).

Handlers return (status, body, headers) on success and raise ServiceError subclasses otherwise;
an error's `headers` attribute (Retry-After, WWW-Authenticate), when present, belongs on the response.
Logs carry counts only: never request bodies, card content, patient ids or tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from cds_service import __version__
from cds_service.core.errors import BadRequest, Issue, ServiceError
from cds_service.present.card_model import Card
from cds_service.record.db.engine import DatabaseUnavailable
from cds_service.record.db.migrate import UPGRADE_HINT, DatabaseNotInitialised
from cds_service.record.feedback.report import build_report, parse_since
from cds_service.record.feedback.store import FeedbackStore, issued_cards
from cds_service.record.feedback.validate import validate_feedback
from cds_service.record.metrics import get_metrics

logger = logging.getLogger(__name__)

Handled = tuple[int, dict[str, Any], dict[str, str]]
NO_STORE: Final = {"Cache-Control": "no-store"}
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MAX_TOKEN_CHARS = 4_096


class AdminUnauthorized(ServiceError):
    """401 for the admin report: no bearer token, or not the configured one (no detail given)."""

    headers: Final = {"WWW-Authenticate": 'Bearer realm="cds-admin"'}

    def __init__(self) -> None:
        super().__init__([Issue("login", "a valid admin bearer token is required")], 401)


def not_found() -> ServiceError:
    """The same 404 as an unknown path: the admin report is invisible when it is not configured."""
    return ServiceError(
        [Issue("not-found", "no such endpoint; CDS Services are listed at GET /cds-services")], 404
    )


def handle_feedback(body: Any, store: FeedbackStore) -> Handled:
    """POST .../feedback: validate the whole batch, store it in one transaction, then answer 200 {}.

    Raises BadRequest (400, one issue per bad entry), TooManyEntries (413) or DatabaseUnavailable (503).
    """
    items = validate_feedback(body)
    stored = store.store_feedback(items)
    accepted = sum(1 for item in items if item.outcome == "accepted")
    get_metrics().record_feedback("accepted", accepted)
    get_metrics().record_feedback("overridden", len(items) - accepted)
    _log_event(
        "cds_feedback_stored",
        entries=len(items),
        stored=stored,
        accepted=accepted,
        overridden=len(items) - accepted,
    )
    return 200, {}, dict(NO_STORE)


def record_issued_cards(
    store: FeedbackStore,
    cards: Sequence[Card],
    *,
    hook_instance: str,
    patient_id: str,
    patient_key: Callable[[str], str],
    protocol_version: str,
    service_version: str = __version__,
    issued_at: datetime | None = None,
) -> bool:
    """Ledger the cards of one hook response before it is sent; never raises.

    On failure the cards are still returned: the failure is logged (error class only) and counted in
    `store.ledger_failures`. Returns whether the cards were recorded.
    """
    if not cards:
        return True
    try:
        store.record_cards(
            issued_cards(cards),
            hook_instance=hook_instance,
            patient_key=patient_key(patient_id),
            protocol_version=protocol_version,
            service_version=service_version,
            issued_at=issued_at or datetime.now(UTC),
        )
    except Exception as error:  # the hook answer must not depend on the ledger
        failures = store.count_ledger_failure()
        cause = error.__cause__ if isinstance(error, DatabaseUnavailable) else error
        _log_event(
            "cds_ledger_write_failed",
            level=logging.ERROR,
            error=type(cause or error).__name__,
            cards=len(cards),
            failures=failures,
        )
        return False
    return True


def require_admin_token(auth_header: str | None, token_sha256: str | None) -> None:
    """The operator endpoints (/admin/...): 404 unless a token hash is configured, 401 for a missing or
    wrong bearer token (constant-time comparison of SHA-256 digests)."""
    expected = (token_sha256 or "").strip().lower()
    if not expected:
        raise not_found()
    if not _SHA256_HEX.match(expected):
        logger.error("CDS_ADMIN_TOKEN_SHA256 is not 64 hex digits: the admin endpoints are disabled")
        raise not_found()
    token = _bearer_token(auth_header)
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest() if token is not None else "0" * 64
    if not hmac.compare_digest(digest.encode("ascii"), expected.encode("ascii")) or token is None:
        raise AdminUnauthorized()


def handle_admin_report(
    auth_header: str | None, since: str | None, store: FeedbackStore, token_sha256: str | None
) -> Handled:
    """GET /admin/feedback-report?since=YYYY-MM-DD for a bearer token whose SHA-256 is `token_sha256`.

    404 when no token hash is configured (or it is not 64 hex digits); 401 (AdminUnauthorized) for a
    missing or wrong token; 400 for a bad `since`; 503 when the database is unavailable or empty.
    """
    require_admin_token(auth_header, token_sha256)
    try:
        since_date = parse_since(since) if since else None
    except ValueError:
        raise BadRequest("since must be a date as YYYY-MM-DD", "since", "value") from None
    try:
        report = build_report(store.engine, since_date)
    except DatabaseNotInitialised:
        raise DatabaseUnavailable(f"the database has no schema yet: {UPGRADE_HINT}") from None
    return 200, report, dict(NO_STORE)


def _bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
        return None
    return token


def _log_event(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, orjson.dumps({"event": event, **fields}).decode())
