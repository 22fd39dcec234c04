"""EHR profiles in the trusted-issuers file: validation at start-up, vendor defaults, and the post-render
step that applies a profile to cards (selectionBehavior, suggestion code system, link hosts)."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.core.ehr_profile import (
    GENERIC_PROFILE,
    RXNORM_OID,
    RXNORM_URL,
    SANDBOX_PROFILE,
    EhrProfile,
    ResolvedProfile,
    SelectionBehavior,
    host_allowed,
)
from cds_service.core.security_errors import SecurityConfigError
from cds_service.present.card_model import Action, Card, Link, Source, Suggestion
from cds_service.present.card_profile import apply_profile
from cds_service.wire.auth.issuers import read_issuers_file, sandbox_issuer
from tests.support.ehr_profiles import (
    EPIC_FEEDBACK_AUD,
    EPIC_ISS,
    SERVICE_AUD,
    SERVICE_PATH,
    client_jwt,
    required_mode_app,
)
from tests.support.fixtures import hook_request
from tests.wire.test_security_support import ec_key, issuer_entry, rsa_key


def _issuers_file(tmp_path: Path, profile: Any) -> Path:
    entry = issuer_entry(tmp_path, ec_key("profile-test"), profile=profile)
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": [entry]}), encoding="utf-8")
    return path


# -- validation at start-up --------------------------------------------------------------------------------


def test_a_complete_profile_is_read_from_the_issuers_file(tmp_path: Path) -> None:
    profile = {
        "vendor": "epic",
        "suggestion_code_system": "urn:oid:2.16.840.1.113883.6.88",
        "selection_behavior": "any",
        "feedback_audience": "https://cds.example.org/epic/feedback",
        "allowed_link_hosts": ["apps.example.org", "*.hospital.example"],
        "prefetch_failure": {"allergies": "omit", "dxa": "fail"},
    }
    (issuer,) = read_issuers_file(_issuers_file(tmp_path, profile))
    resolved = issuer.profile.resolve()
    assert resolved.vendor == "epic"
    assert resolved.feedback_audience == ("https://cds.example.org/epic/feedback",)
    assert resolved.allowed_link_hosts == frozenset({"apps.example.org", "*.hospital.example"})
    assert resolved.policy("allergies") == "omit"
    assert resolved.policy("dxa") == "fail"
    assert resolved.omitted_keys() == frozenset({"allergies"})


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"vendor": "cerner"}, "profile.vendor"),
        ({"selection_behavior": "all"}, "profile.selection_behavior"),
        ({"prefetch_failure": {"vitals": "omit"}}, "profile.prefetch_failure.vitals"),
        ({"prefetch_failure": {"labs": "skip"}}, "profile.prefetch_failure.labs"),
        ({"allowed_link_hosts": ["https://apps.example.org/launch"]}, "not a host name"),
        ({"allowed_link_hosts": ["apps.example.org:8443"]}, "not a host name"),
        ({"feedback_audience": "not a url"}, "profile.feedback_audience"),
        ({"feedback_audience": []}, "lists no URL"),
        ({"suggestion_code_system": "RxNorm"}, "URI"),
        ({"colour": "blue"}, "profile.colour"),
    ],
)
def test_an_invalid_profile_stops_start_up_naming_it(tmp_path: Path, profile: Any, message: str) -> None:
    with pytest.raises(SecurityConfigError, match=message.replace(".", r"\.")):
        read_issuers_file(_issuers_file(tmp_path, profile))


def test_vendor_defaults() -> None:
    epic = EhrProfile(vendor="epic").resolve()
    oracle = EhrProfile(vendor="oracle").resolve()
    assert (epic.suggestion_code_system, epic.selection_behavior) == (RXNORM_OID, "any")
    assert epic.omitted_keys() == frozenset()
    assert (oracle.suggestion_code_system, oracle.selection_behavior) == (RXNORM_URL, "at-most-one")
    assert oracle.omitted_keys() == frozenset({"medicationStatements"})
    assert oracle.allowed_link_hosts == frozenset()  # Oracle strips unregistered links: none unless listed
    for profile in (GENERIC_PROFILE, SANDBOX_PROFILE):
        assert profile.suggestion_code_system == RXNORM_URL
        assert profile.selection_behavior is None  # CDS_SELECTION_BEHAVIOR decides
        assert profile.omitted_keys() == frozenset()
        assert profile.allowed_link_hosts is None
    assert sandbox_issuer().config.profile.resolve() == SANDBOX_PROFILE


def test_an_override_wins_over_the_vendor_default() -> None:
    oracle = EhrProfile(vendor="oracle", prefetch_failure={"medicationStatements": "fail"}).resolve()
    assert oracle.omitted_keys() == frozenset()
    epic = EhrProfile(vendor="epic", selection_behavior="at-most-one").resolve()
    assert epic.selection_behavior == "at-most-one"


def test_wildcard_hosts_match_sub_domains_only() -> None:
    allowed = frozenset({"*.hospital.example", "apps.example.org"})
    assert host_allowed("smart.hospital.example", allowed)
    assert host_allowed("APPS.example.org", allowed)
    assert not host_allowed("hospital.example", allowed)
    assert not host_allowed("evilhospital.example", allowed)
    assert not host_allowed("apps.example.org.evil.test", allowed)


# -- applying a profile to rendered cards ------------------------------------------------------------------


def _card() -> Card:
    def suggestion(code: str, recommended: bool) -> Suggestion:
        resource = {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM_URL, "code": code, "display": code}]},
        }
        return Suggestion(
            f"Consider {code}", code, [Action("create", "draft", resource)], is_recommended=recommended
        )

    return Card(
        uuid="u",
        summary="s",
        indicator="warning",
        source=Source("x", "https://guidelines.example.org/"),
        kind="ESCALATE",
        suggestions=[suggestion("1", True), suggestion("2", True)],
        selection_behavior="any",
        links=[
            Link("app", "https://apps.example.org/launch", "smart"),
            Link("elsewhere", "https://tracker.example.net/x", "absolute"),
        ],
    )


def _applied(profile: ResolvedProfile, default: SelectionBehavior) -> dict[str, Any]:
    """The card after the profile, as the wire carries it."""
    (card,) = apply_profile([_card()], profile, default)
    return card.to_wire()


def test_epic_profile_recodes_rxnorm_and_keeps_any() -> None:
    card = _applied(EhrProfile(vendor="epic").resolve(), "at-most-one")
    assert card["selectionBehavior"] == "any"
    systems = {
        coding["system"]
        for s in card["suggestions"]
        for action in s["actions"]
        for coding in action["resource"]["medicationCodeableConcept"]["coding"]
    }
    assert systems == {RXNORM_OID}
    assert [s.get("isRecommended") for s in card["suggestions"]] == [True, True]
    assert len(card["links"]) == 2


def test_at_most_one_keeps_a_single_recommended_suggestion() -> None:
    card = _applied(GENERIC_PROFILE, "at-most-one")
    assert card["selectionBehavior"] == "at-most-one"
    assert [s.get("isRecommended") for s in card["suggestions"]] == [True, None]


def test_link_hosts_filter_links_and_drop_an_empty_list() -> None:
    only_apps = EhrProfile(allowed_link_hosts=["apps.example.org"]).resolve()
    card = _applied(only_apps, "any")
    assert [link["label"] for link in card["links"]] == ["app"]
    card = _applied(EhrProfile(vendor="oracle").resolve(), "any")
    assert "links" not in card  # CDS Hooks: an optional field is omitted, never []
    assert card["source"]["url"] == "https://guidelines.example.org/"  # the source is not a card link


def test_a_card_without_suggestions_or_links_is_left_as_it_is() -> None:
    plain = Card("u", "s", "info", Source("x"), kind="ESCALATE")
    (card,) = apply_profile([copy.deepcopy(plain)], EhrProfile(vendor="oracle").resolve(), "any")
    assert card.to_wire() == plain.to_wire()


# -- feedback audience ---------------------------------------------------------------------------------------


def test_epic_feedback_is_accepted_only_with_the_configured_audience(tmp_path: Path) -> None:
    key = rsa_key("epic-feedback", "RS384")
    profile = {"vendor": "epic", "feedback_audience": EPIC_FEEDBACK_AUD}
    client = required_mode_app(
        tmp_path, key, {"iss": EPIC_ISS, "fhir_servers": [EPIC_ISS], "profile": profile}
    )
    entry = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2025-06-01T10:00:00Z"}

    def feedback(aud: str) -> int:
        headers = {"Authorization": f"Bearer {client_jwt(key, EPIC_ISS, aud)}"}
        return client.post(
            f"{SERVICE_PATH}/feedback", json={"feedback": [entry]}, headers=headers
        ).status_code

    assert feedback(EPIC_FEEDBACK_AUD) == 200
    assert feedback(f"{SERVICE_AUD}/feedback") == 401
    # The service call itself keeps the service URL as its audience.
    call = client.post(
        SERVICE_PATH,
        json=hook_request("s01", with_prefetch=True),
        headers={"Authorization": f"Bearer {client_jwt(key, EPIC_ISS, SERVICE_AUD)}"},
    )
    assert call.status_code == 200
