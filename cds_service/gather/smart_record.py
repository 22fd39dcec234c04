"""The SMART app's read of one patient's record: the hook's own prefetch queries, sent to `iss` with the
launch's access token through the pinned transport, under the same deadline, page cap and circuit
breaker as a hook call. Complete or not at all (DataUnavailable), like the hook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.config import Settings
from cds_service.fhir.client import FhirClient
from cds_service.fhir.medication_fetch import fetch_missing_medications
from cds_service.fhir.prefetch import resolve_prefetch
from cds_service.gather.smart_oauth import pinned_session
from cds_service.security.fhir_server_guard import ConnectPolicy


def fetch_record(
    templates: Mapping[str, str],
    settings: Settings,
    *,
    iss: str,
    policy: ConnectPolicy,
    access_token: str,
    patient_id: str,
) -> list[dict[str, Any]]:
    """Every resource the hook would read for `patient_id`, fetched from `iss` with `access_token`."""
    client = FhirClient(
        iss,
        access_token,
        connect_timeout=settings.fhir_connect_timeout_s,
        read_timeout=settings.fhir_read_timeout_s,
        deadline_s=settings.fhir_deadline_s,
        max_pages=settings.fhir_max_pages,
        session=pinned_session(policy),
    )
    data = resolve_prefetch(templates, None, patient_id, client)
    resources = [resource for found in data.resources.values() for resource in found]
    resources.extend(fetch_missing_medications(client, resources))
    return resources
