"""The patient-view service: discovery descriptor and the hook pipeline.

prefetch/FHIR -> patient scope -> parse (filter, then validate) -> extract facts -> evaluate -> cards
-> the calling EHR's profile applied to the cards (card_profile.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime
from itertools import chain
from typing import Any

import orjson

from cds_service import SERVICE_ID
from cds_service.config import Settings
from cds_service.core.ehr_profile import GENERIC_PROFILE, ResolvedProfile
from cds_service.core.errors import DataUnavailable
from cds_service.facts.extract import extract_record
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import PatientRecord
from cds_service.gather.client import FhirClient
from cds_service.gather.fhir_server_guard import guarded_session
from cds_service.gather.medication_fetch import fetch_missing_medications
from cds_service.gather.prefetch import build_prefetch_templates, resolve_prefetch
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import load_knowledge
from cds_service.present.card_model import HookResponse
from cds_service.present.card_profile import apply_profile
from cds_service.present.cards import render_cards
from cds_service.present.smart_link import with_smart_link
from cds_service.record.metrics import fhir_fetch_result, get_metrics
from cds_service.rules.decision import Decision
from cds_service.rules.protocol import evaluate
from cds_service.wire.auth.jwt_verify import AuthContext
from cds_service.wire.cdshooks import PatientViewRequest

log = logging.getLogger(__name__)

DESCRIPTION = (
    "For adults aged {min_age_years} or more at high fracture risk without very-high-risk features "
    "whose first-line anti-resorptive (alendronate, risedronate, ibandronate, zoledronic acid 5 mg, "
    "denosumab 60 mg) did not reach the 3-year BMD targets (total hip +{target_delta_t_total_hip} T / "
    "+{target_pct_total_hip} %, lumbar spine +{target_delta_t_lumbar_spine} T / "
    "+{target_pct_lumbar_spine} %): suggests "
    "sequential anabolic, then anti-resorptive, therapy with agent choice, phase plan and monitoring. "
    "Also warns when a denosumab dose is overdue or an anabolic course ended without a follow-on."
)
USAGE_REQUIREMENTS = (
    "Prefetch keys are fixed (configure them by name): patient, dxa, labs, conditions, procedures, "
    "allergies, medicationStatements, medicationRequests, medicationAdministrations, medicationDispenses. "
    "Absent keys are fetched from fhirServer (FHIR R4) with fhirAuthorization; the token needs patient "
    "read/search scopes for these resource types. Cards suggest, never order."
)


# Why a missing prefetch key cannot be fetched (the 412's diagnostics).
NO_AUTHORIZATION_REASON = (
    "the EHR sent fhirServer without fhirAuthorization, so the service may not query it. Epic omits the "
    "access token when the CDS service URL registered in the EHR does not match the called URL exactly: "
    "check the registered endpoint URL (scheme, host, port, path, trailing slash)"
)
NO_SERVER_REASON = "the EHR sent no fhirServer to fetch it from"


def today_utc() -> date:
    return datetime.now(UTC).date()


class PatientViewService:
    service_id = SERVICE_ID

    def __init__(
        self,
        settings: Settings,
        knowledge: Knowledge,
        *,
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
        today: Callable[[], date] = today_utc,
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge
        self.trust = settings.trust()
        self.templates = build_prefetch_templates(knowledge.dxa_codes(), knowledge.lab_codes())
        self._new_uuid = new_uuid
        self._today = today
        # The SMART app's base URL for card links; None while CDS_SMART_CLIENT_ID is unset.
        self.smart_base_url = (
            (settings.public_base_url or settings.listen_base_url) if settings.smart_client_id else None
        )

    def protocol_version(self) -> str:
        return self.knowledge.protocol_version

    def descriptor(self) -> dict[str, Any]:
        return {
            "hook": "patient-view",
            "id": self.service_id,
            "title": self.knowledge.model.title,
            "description": DESCRIPTION.format_map(self.knowledge.text_values),
            "prefetch": dict(self.templates),
            "usageRequirements": USAGE_REQUIREMENTS,
        }

    def as_of(self) -> date:
        return self.settings.as_of or self._today()

    def decide(
        self,
        resources: Iterable[dict[str, Any]],
        patient_id: str,
        as_of: date,
        unavailable: Iterable[str] = (),
    ) -> Decision:
        """`unavailable`: prefetch keys the EHR could not provide (unknown to the protocol, never "none")."""
        return self.assess(resources, patient_id, as_of, unavailable)[1]

    def assess(
        self,
        resources: Iterable[dict[str, Any]],
        patient_id: str,
        as_of: date,
        unavailable: Iterable[str] = (),
    ) -> tuple[PatientRecord, Decision]:
        """The facts and the decision (the SMART app draws the facts the decision was made from)."""
        # as_of lets parse skip lab results outside the look-back window that validation could not change.
        # The patient scope is applied in parse's first pass (as `patient_scope.scoped` would).
        parsed = parse_resources(resources, self.knowledge, as_of=as_of, patient_id=patient_id)
        record = extract_record(parsed, self.knowledge, unavailable)
        return record, evaluate(record, self.knowledge, as_of)

    def _client(self, request: PatientViewRequest, auth: AuthContext) -> FhirClient | None:
        """A client for this call only; its session connects solely to the checked fhirServer address.

        In `required` mode the service never queries fhirServer without the EHR's access token (an open,
        token-less server is a sandbox case: `dev`/`off` only)."""
        if not request.fhirServer:
            return None
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        if token is None and self.settings.auth_mode == "required":
            return None
        settings = self.settings
        return FhirClient(
            request.fhirServer,
            token,
            connect_timeout=settings.fhir_connect_timeout_s,
            read_timeout=settings.fhir_read_timeout_s,
            deadline_s=settings.fhir_deadline_s,
            max_pages=settings.fhir_max_pages,
            session=guarded_session(request.fhirServer, auth, self.trust),
        )

    def handle(
        self,
        request: PatientViewRequest,
        auth: AuthContext,
        turn: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> HookResponse:
        """Gather the record (waiting on FHIR servers), then decide and render inside `turn()`: the
        CPU-bound part, which the HTTP layer runs in the caller's turn of the worker's fair queue."""
        patient_id = request.context.patientId
        client = self._client(request, auth)
        reason = NO_AUTHORIZATION_REASON if client is None and request.fhirServer else NO_SERVER_REASON
        metrics = get_metrics()
        profile = _profile_of(auth)
        try:
            data = resolve_prefetch(
                self.templates,
                request.prefetch,
                patient_id,
                client,
                reason,
                omit_keys=profile.omitted_keys(),
            )
        except DataUnavailable as error:
            if client is not None:
                metrics.record_fhir_fetch(fhir_fetch_result(error) or "unavailable")
            _log_unavailable(request.hookInstance, error)
            raise
        if data.fetched_keys:
            metrics.record_fhir_fetch("ok", len(data.fetched_keys))
        resources = list(chain.from_iterable(data.resources.values()))  # one C-level pass
        if client is not None:  # one extra batched round for referenced, unsupplied Medications (§3c)
            resources.extend(fetch_missing_medications(client, resources))
        with turn():
            decision = self.decide(resources, patient_id, self.as_of(), data.unavailable)
            behavior = profile.selection_behavior or self.settings.selection_behavior
            rendered = render_cards(
                decision,
                self.knowledge,
                patient_id=patient_id,
                selection_behavior=behavior,
                as_of_pinned=self.settings.as_of is not None,
                new_uuid=self._new_uuid,
            )
            rendered = with_smart_link(
                rendered, decision.outcome, patient_id=patient_id, base_url=self.smart_base_url
            )
            cards = apply_profile(rendered, profile, self.settings.selection_behavior)
        metrics.record_decision(decision.outcome, decision.rule)
        if log.isEnabledFor(logging.INFO):  # the line is built only when it is written
            fields = {
                "event": "cds_decision",
                "hookInstance": request.hookInstance[:64],
                "outcome": decision.outcome,
                "rule": decision.rule,
                "warnings": [w.code for w in decision.warnings],
                "cards": len(cards),
                "card_kinds": [card.kind for card in cards],
                "suggestions": sum(len(card.suggestions) for card in cards),
                "fetched_keys": len(data.fetched_keys),
                "pages": data.pages_fetched,
                "profile": profile.vendor,
                # Keys this EHR could not provide (policy omit, or not in its CapabilityStatement) and why.
                "unavailable": {key: why[:200] for key, why in data.unavailable.items()},
            }
            # One JSON line for operators (no PHI: no patient id, no values); the same fields as record
            # attributes for structured handlers.
            log.info(orjson.dumps(fields).decode(), extra={"decision": fields})
        return HookResponse(cards)


def _profile_of(auth: AuthContext) -> ResolvedProfile:
    """The verified issuer's EHR profile; the generic one when no JWT was checked (`off` mode)."""
    return auth.issuer.profile.resolve() if auth.issuer is not None else GENERIC_PROFILE


def _log_unavailable(hook_instance: str, error: DataUnavailable) -> None:
    """The decision log line of a 412: which key or query failed and why (no PHI, no token, no URL)."""
    issue = error.issues[0] if error.issues else None
    fields = {
        "event": "cds_data_unavailable",
        "hookInstance": hook_instance[:64],
        "status": 412,
        "expression": list(issue.expression) if issue else [],
        "reason": issue.diagnostics[:400] if issue else "",
    }
    log.warning(orjson.dumps(fields).decode(), extra={"decision": fields})


def build_service(settings: Settings) -> PatientViewService:
    """The production service; raises KnowledgeError on an invalid knowledge file."""
    knowledge = load_knowledge(settings.knowledge_file)
    return PatientViewService(settings, knowledge)
