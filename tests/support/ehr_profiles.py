"""Apps, tokens and data shapes for the per-EHR-profile integration tests (tests/test_ehr_profiles_http.py).

Each profile gets the app configured as a site would configure it for that EHR (auth mode, trusted-issuers
file with the issuer's `profile:`), a JWT signed as that EHR signs (algorithm, header), and the scenario
data in the shape that EHR serves it (tests/fhir_server/server.mjs FHIR_PROFILE does the server side).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import yaml
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.facts.parsed_resources import MEDICATION_USE_TYPES
from tests.support.app_settings import test_settings
from tests.wire.test_security_support import Key, jwks

PUBLIC_BASE = "https://cds.example.org"
SERVICE_PATH = "/cds-services/osteoporosis-escalation"
SERVICE_AUD = PUBLIC_BASE + SERVICE_PATH
EPIC_ISS = "https://ehr.example.org/api/FHIR/R4"
EPIC_FEEDBACK_AUD = "https://cds.example.org/epic/savecdshooksfeedback"
ORACLE_ISS = "https://cds-hooks.cerner.com"


def required_mode_app(tmp_path: Path, key: Key, issuer: dict[str, Any]) -> FlaskClient:
    """The service in `required` mode trusting one issuer (keys from a JWKS file, as a site sets it up)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    jwks_file = tmp_path / "issuer-jwks.json"
    jwks_file.write_text(json.dumps(jwks(key)), encoding="utf-8")
    issuers = tmp_path / "issuers.yaml"
    entry = {"jwks_file": str(jwks_file), "algorithms": [key.alg], **issuer}
    issuers.write_text(yaml.safe_dump({"issuers": [entry]}), encoding="utf-8")
    settings = test_settings(
        {
            "CDS_AUTH_MODE": "required",
            "CDS_TRUSTED_ISSUERS": str(issuers),
            "CDS_PUBLIC_BASE_URL": PUBLIC_BASE,
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_AS_OF": "2025-06-01",
            "CDS_FHIR_DEADLINE_S": "20",
            "CDS_FHIR_READ_TIMEOUT_S": "15",
        }
    )
    return create_app(settings).test_client()


def client_jwt(key: Key, iss: str, aud: str, **header: str) -> str:
    """A CDS Client JWT as the EHR builds it (Epic adds `sub` and `nbf` = iat - 5 min)."""
    now = int(time.time())
    body = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    if iss == EPIC_ISS:
        body.update({"sub": "our-epic-client-id", "nbf": now - 300})
    return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT", **header})


def epic_medication_references(bundle: dict[str, Any]) -> dict[str, Any]:
    """Every medication-use resource names its drug by `medicationReference` + `display`, as Epic's do;
    the Medication itself is a separate resource on the server (never contained, never prefetched)."""
    shaped = copy.deepcopy(bundle)
    medications: list[dict[str, Any]] = []
    for entry in shaped["entry"]:
        resource = entry["resource"]
        concept = resource.get("medicationCodeableConcept")
        if resource["resourceType"] not in MEDICATION_USE_TYPES or concept is None:
            continue
        medication_id = f"{resource['id']}-med"
        display = concept.get("text") or next(
            (c["display"] for c in concept.get("coding", []) if c.get("display")), None
        )
        del resource["medicationCodeableConcept"]
        resource["medicationReference"] = {"reference": f"Medication/{medication_id}"}
        if display:
            resource["medicationReference"]["display"] = display
        medications.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, medication_id)}",
                "resource": {"resourceType": "Medication", "id": medication_id, "code": concept},
                "request": {"method": "PUT", "url": f"Medication/{medication_id}"},
            }
        )
    shaped["entry"] = [*medications, *shaped["entry"]]
    return shaped
