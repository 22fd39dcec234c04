"""The SMART app's read of one patient's record: the hook's own prefetch queries, sent to `iss` with the
launch's access token through the pinned transport, under the same deadline, page cap and circuit
breaker as a hook call. Complete or not at all (DataUnavailable), like the hook."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.gather.client import FhirClient
from cds_service.gather.fhir_server_guard import ConnectPolicy
from cds_service.gather.medication_fetch import fetch_missing_medications
from cds_service.gather.prefetch import resolve_prefetch
from cds_service.gather.smart_oauth import pinned_session


@dataclass(frozen=True)
class FhirLimits:
    """The hook's FHIR settings (CDS_FHIR_*): timeouts, overall deadline and page cap."""

    connect_timeout_s: float
    read_timeout_s: float
    deadline_s: float
    max_pages: int


def fetch_record(
    templates: Mapping[str, str],
    limits: FhirLimits,
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
        connect_timeout=limits.connect_timeout_s,
        read_timeout=limits.read_timeout_s,
        deadline_s=limits.deadline_s,
        max_pages=limits.max_pages,
        session=pinned_session(policy),
    )
    data = resolve_prefetch(templates, None, patient_id, client)
    resources = [resource for found in data.resources.values() for resource in found]
    resources.extend(fetch_missing_medications(client, resources))
    return resources
