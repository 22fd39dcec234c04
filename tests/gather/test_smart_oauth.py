"""The SMART app's outbound half without a browser: scopes, the iss and token-endpoint allowlists (SSRF) and
discovery from .well-known/smart-configuration (S256 required, redirects never followed)."""

from __future__ import annotations

import pytest
import responses

from cds_service.gather.smart_oauth import SCOPES, SmartLaunchError, SmartTrust, discover

ISS = "http://127.0.0.1:8123/fhir"
PUBLIC_LAUNCHER_ISS = "https://launch.smarthealthit.org/v/r4/fhir"


def test_scopes_are_the_resource_types_the_app_reads_and_nothing_more() -> None:
    assert SCOPES.split(" ") == [
        "launch",
        "patient/Patient.rs",
        "patient/Observation.rs",
        "patient/Condition.rs",
        "patient/Procedure.rs",
        "patient/AllergyIntolerance.rs",
        "patient/MedicationStatement.rs",
        "patient/MedicationRequest.rs",
        "patient/MedicationAdministration.rs",
        "patient/MedicationDispense.rs",
        "patient/Medication.rs",
    ]


def test_only_listed_iss_are_allowed_and_public_names_never_reach_loopback() -> None:
    trust = SmartTrust.from_settings(f"{ISS}, {PUBLIC_LAUNCHER_ISS}", "https://auth.example.org")
    assert trust.iss_policy(ISS + "/").allow_loopback is True
    public = trust.iss_policy(PUBLIC_LAUNCHER_ISS)
    assert (public.allow_loopback, public.allow_private) == (False, False)
    for refused in (
        "http://127.0.0.1:8124/fhir",
        "https://launch.smarthealthit.org/v/r4/fhir/other",
        "file:///x",
    ):
        with pytest.raises(SmartLaunchError) as error:
            trust.iss_policy(refused)
        assert error.value.status == 403
    trust.token_policy("https://launch.smarthealthit.org/v/r4/auth/token", PUBLIC_LAUNCHER_ISS)
    trust.token_policy("https://auth.example.org/token", PUBLIC_LAUNCHER_ISS)
    with pytest.raises(SmartLaunchError):
        trust.token_policy("https://evil.example.net/token", PUBLIC_LAUNCHER_ISS)


@responses.activate
def test_discovery_reads_well_known_smart_configuration_and_requires_s256() -> None:
    policy = SmartTrust.from_settings(ISS, "").iss_policy(ISS)
    config = {"authorization_endpoint": f"{ISS}/auth", "token_endpoint": f"{ISS}/token"}
    responses.get(f"{ISS}/.well-known/smart-configuration", json=config)
    with pytest.raises(SmartLaunchError, match="PKCE S256"):
        discover(ISS, policy, (1.0, 1.0))
    responses.replace(
        responses.GET,
        f"{ISS}/.well-known/smart-configuration",
        json={**config, "code_challenge_methods_supported": ["S256"]},
    )
    endpoints = discover(ISS, policy, (1.0, 1.0))
    assert (endpoints.authorize, endpoints.token) == (f"{ISS}/auth", f"{ISS}/token")
    assert [call.request.url for call in responses.calls] == [f"{ISS}/.well-known/smart-configuration"] * 2


@responses.activate
def test_discovery_never_follows_a_redirect() -> None:
    policy = SmartTrust.from_settings(ISS, "").iss_policy(ISS)
    responses.get(
        f"{ISS}/.well-known/smart-configuration", status=302, headers={"Location": "http://169.254.169.254/"}
    )
    with pytest.raises(SmartLaunchError) as error:
        discover(ISS, policy, (1.0, 1.0))
    assert error.value.status == 502
    assert len(responses.calls) == 1
