"""HTTP routes of the SMART app (EHR launch, SMART App Launch 2.0, public client with PKCE S256).

GET /smart/launch?iss&launch -> discovery -> 302 to the EHR's authorize endpoint (state + challenge in an
encrypted cookie); GET /smart/callback -> state checked against the cookie, code exchanged with the
verifier -> 303 to GET /smart/app, which reads the record from `iss` with the token and renders it;
POST /smart/feedback stores an override reason for the card's decision. Every refusal is a plain page
saying why. Responses are never cached, carry no referrer and allow no script.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Final

from authlib.common.security import generate_token
from flask import Blueprint, Response, request

from cds_service.config import Settings
from cds_service.core.errors import DataUnavailable
from cds_service.core.fhir_id import is_fhir_id
from cds_service.core.security_errors import Forbidden
from cds_service.gather.smart_oauth import (
    SmartEndpoints,
    SmartLaunchError,
    SmartTrust,
    authorization_url,
    discover,
    exchange_code,
)
from cds_service.gather.smart_record import FhirLimits, fetch_record
from cds_service.present.smart_link import parse_app_context
from cds_service.present.smart_page import STYLESHEET, PageLinks, render_app, render_refused
from cds_service.present.smart_view import build_view
from cds_service.record.db.engine import DatabaseUnavailable
from cds_service.record.feedback.validate import FeedbackItem, OverrideReason
from cds_service.wire.runtime import Runtime
from cds_service.wire.service import PatientViewService
from cds_service.wire.smart_session import (
    COOKIE_NAME,
    COOKIE_PATH,
    PENDING_TTL_S,
    AppSession,
    PendingLaunch,
    SessionCodec,
    session_secret,
)

log = logging.getLogger(__name__)

SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Inline styles only for the SVG charts' attributes; no script at all.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'"
    ),
}


def redirect(location: str, status: int) -> Response:
    response = Response("", status=status)
    response.headers["Location"] = location
    return response


class _Refused(Exception):
    def __init__(self, title: str, detail: str, status: int) -> None:
        super().__init__(title)
        self.title, self.detail, self.status = title, detail, status


def create_smart_blueprint(service: PatientViewService, settings: Settings, runtime: Runtime) -> Blueprint:
    bp = Blueprint("smart_app", __name__)
    base = (settings.public_base_url or settings.listen_base_url).rstrip("/")
    redirect_uri = f"{base}/smart/callback"
    links = PageLinks(css_url=f"{base}/smart/app.css", feedback_url=f"{base}/smart/feedback")
    trust = SmartTrust.from_settings(settings.smart_iss_allowlist, settings.smart_auth_origins)
    codec = SessionCodec(
        session_secret(
            settings.data_dir,
            settings.smart_session_secret.get_secret_value() if settings.smart_session_secret else None,
        )
    )
    ttl = settings.smart_session_ttl_s
    secure = base.startswith("https://")
    timeouts = (settings.fhir_connect_timeout_s, settings.fhir_read_timeout_s)
    limits = FhirLimits(
        settings.fhir_connect_timeout_s,
        settings.fhir_read_timeout_s,
        settings.fhir_deadline_s,
        settings.fhir_max_pages,
    )

    def page(html: str, status: int = 200) -> Response:
        response = Response(html, status=status, content_type="text/html; charset=utf-8")
        response.headers.update(SECURITY_HEADERS)
        return response

    def refused(title: str, detail: str, status: int, event: str) -> Response:
        log.info("smart %s refused status=%d", event, status)
        response = page(render_refused(title, detail, links), status)
        if status in (401, 403):
            _clear(response)
        return response

    def _set(response: Response, value: PendingLaunch | AppSession, max_age: int) -> None:
        # In an EHR iframe (https) the cookie is third-party: SameSite=None + Partitioned (CHIPS) keeps it
        # to this EHR's frame. On plain-http loopback (tests, local demo) Lax is the only choice.
        response.set_cookie(
            COOKIE_NAME,
            codec.seal(value),
            max_age=max_age,
            path=COOKIE_PATH,
            secure=secure,
            httponly=True,
            samesite="None" if secure else "Lax",
            partitioned=secure,
        )

    def _clear(response: Response) -> None:
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, secure=secure, httponly=True)

    @bp.get("/smart/app.css")
    def stylesheet() -> Response:
        response = Response(STYLESHEET, content_type="text/css; charset=utf-8")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    @bp.get("/smart/launch")
    def launch() -> Response:
        iss, launch_id = request.args.get("iss", ""), request.args.get("launch", "")
        if not iss or not launch_id or len(launch_id) > 2048:
            hint = (
                " The CDS Hooks sandbox opened this link for an open FHIR server (fhirServiceUrl, patientId)"
                " without a SMART launch: open the app from a SMART launcher instead (README, SMART app)."
                if "fhirServiceUrl" in request.args
                else ""
            )
            return refused(
                "Not an EHR launch",
                "The app must be opened by the EHR, which sends the iss and launch parameters." + hint,
                400,
                "launch",
            )
        try:
            policy = trust.iss_policy(iss)
            endpoints = discover(iss, policy, timeouts)
            trust.token_policy(endpoints.token, iss)
        except SmartLaunchError as error:
            return refused(error.title, error.detail, error.status, "launch")
        pending = PendingLaunch(
            state=secrets.token_urlsafe(32),
            code_verifier=generate_token(64),
            iss=iss,
            authorize=endpoints.authorize,
            token=endpoints.token,
            started=codec.now(),
        )
        target = authorization_url(
            endpoints,
            client_id=settings.smart_client_id,
            redirect_uri=redirect_uri,
            state=pending.state,
            code_verifier=pending.code_verifier,
            launch=launch_id,
            aud=iss,
        )
        response = redirect(target, 302)
        response.headers.update(SECURITY_HEADERS)
        _set(response, pending, PENDING_TTL_S)
        log.info("smart launch redirected to authorize")
        return response

    @bp.get("/smart/callback")
    def callback() -> Response:
        pending = codec.open(request.cookies.get(COOKIE_NAME), PENDING_TTL_S)
        state = request.args.get("state", "")
        if not isinstance(pending, PendingLaunch) or not hmac.compare_digest(
            pending.state.encode(), state.encode("utf-8", "replace")
        ):
            return refused(
                "This sign-in does not belong to this browser session",
                "The authorization response does not match a launch started in this browser (unknown or "
                "expired state). Nothing was read.",
                400,
                "callback",
            )
        error = request.args.get("error")
        if error:
            return refused(
                "The EHR did not authorize the app",
                f"The authorization server answered {error[:64]!r}. Nothing was read.",
                401,
                "callback",
            )
        try:
            grant = exchange_code(
                SmartEndpoints(pending.authorize, pending.token),
                trust.token_policy(pending.token, pending.iss),
                client_id=settings.smart_client_id,
                redirect_uri=redirect_uri,
                code=request.args.get("code", "")[:4096],
                code_verifier=pending.code_verifier,
                timeouts=timeouts,
            )
        except SmartLaunchError as failure:
            return refused(failure.title, failure.detail, failure.status, "token")
        decision_id, card_patient = parse_app_context(grant.app_context)
        if not is_fhir_id(grant.patient):
            return refused(
                "The EHR gave no usable patient", "The token's patient is not a FHIR id.", 400, "token"
            )
        if card_patient is not None and card_patient != grant.patient:
            return refused(
                "This is not the card's patient",
                "The EHR authorized the app for a different patient than the one the card was issued for. "
                "Nothing was read. Open the app from the card in this patient's chart.",
                403,
                "token",
            )
        lifetime = min(grant.expires_in or ttl, ttl)
        session = AppSession(
            iss=pending.iss,
            access_token=grant.access_token,
            patient=grant.patient,
            decision_id=decision_id,
            card_patient=card_patient,
            expires_at=codec.now() + lifetime,
            csrf=secrets.token_urlsafe(24),
        )
        response = redirect(f"{base}/smart/app", 303)
        response.headers.update(SECURITY_HEADERS)
        _set(response, session, ttl)
        log.info("smart token accepted")
        return response

    def current_session() -> AppSession:
        session = codec.open(request.cookies.get(COOKIE_NAME), ttl)
        if not isinstance(session, AppSession):
            raise _Refused(
                "No active session",
                "This page is only available after a launch from the EHR, and for a short time after it.",
                401,
            )
        if codec.now() >= session.expires_at:
            raise _Refused(
                "Your access has expired",
                "The access the EHR granted to this app has expired, so nothing was read. "
                "Launch the app again from the EHR.",
                401,
            )
        return session

    @bp.get("/smart/app")
    def app_page() -> Response:
        try:
            session = current_session()
            policy = trust.iss_policy(session.iss)
            resources = fetch_record(
                service.templates,
                limits,
                iss=session.iss,
                policy=policy,
                access_token=session.access_token,
                patient_id=session.patient,
            )
            record, decision = service.assess(resources, session.patient, service.as_of())
        except _Refused as refusal:
            return refused(refusal.title, refusal.detail, refusal.status, "app")
        except SmartLaunchError as error:
            return refused(error.title, error.detail, error.status, "app")
        except (DataUnavailable, Forbidden) as error:
            detail = (
                error.issues[0].diagnostics if isinstance(error, DataUnavailable) and error.issues else ""
            )
            return refused(
                "The patient's record could not be read",
                "The FHIR server did not give the whole record with this app's access, so nothing is "
                f"shown (a partial record could mislead). {detail[:300]}",
                502,
                "app",
            )
        html = render_app(
            build_view(record, decision, service.knowledge),
            decision,
            service.knowledge,
            decision_id=session.decision_id,
            csrf=session.csrf,
            feedback_sent=request.args.get("feedback") == "sent",
            links=links,
        )
        log.info("smart app rendered outcome=%s", decision.outcome)
        return page(html)

    @bp.post("/smart/feedback")
    def feedback() -> Response:
        try:
            session = current_session()
        except _Refused as refusal:
            return refused(refusal.title, refusal.detail, refusal.status, "feedback")
        csrf = request.form.get("csrf", "")
        if not hmac.compare_digest(session.csrf.encode(), csrf.encode("utf-8", "replace")):
            return refused(
                "The form has expired", "Reload the app and send the reason again.", 403, "feedback"
            )
        reasons = {r.code: r for r in service.knowledge.model.override_reasons}
        chosen = reasons.get(request.form.get("reason", ""))
        if chosen is None or session.decision_id is None:
            return refused("No reason chosen", "Choose one of the listed override reasons.", 400, "feedback")
        item = FeedbackItem(
            card=session.decision_id,
            outcome="overridden",
            outcome_ts=datetime.now(UTC),
            reason=OverrideReason(system=chosen.system, code=chosen.code, display=chosen.display),
        )
        try:
            runtime.store.store_feedback([item])
        except DatabaseUnavailable:
            return refused(
                "Feedback could not be saved", "The service's database is unavailable.", 503, "feedback"
            )
        response = redirect(f"{base}/smart/app?feedback=sent", 303)
        response.headers.update(SECURITY_HEADERS)
        return response

    return bp
