"""Feedback batch validation (CDS Hooks notes §1.7 F1–F5): spec, Epic and sandbox shapes, bad entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cds_service.core.errors import BadRequest
from cds_service.record.feedback.validate import (
    EPIC_REASON_SYSTEM,
    MAX_ENTRIES,
    FeedbackItem,
    OverrideReason,
    TooManyEntries,
    parse_timestamp,
    validate_feedback,
)
from cds_service.wire.cdshooks import operation_outcome

CARD = "9368d37b-283f-44a0-93ea-547cebab93ed"
SUGGESTION = "e56e1945-20b3-4393-8503-a1a20fd73152"
EPIC = "com.epic.cdshooks.feedback.overrideReason."

# CDS Hooks 2.0 specification, "Feedback" section examples.
SPEC_ACCEPTED = {
    "card": CARD,
    "outcome": "accepted",
    "acceptedSuggestions": [{"id": SUGGESTION}],
    "outcomeTimestamp": "2020-12-11T00:00:00.000Z",
}
SPEC_OVERRIDDEN = {
    "card": CARD,
    "outcome": "overridden",
    "overrideReason": {
        "reason": {
            "code": "reason-code-provided-by-service",
            "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
            "display": "Patient refused",
        },
        "userComment": "Clinician's comment (may hold PHI: never stored)",
    },
    "outcomeTimestamp": "2020-12-11T00:00:00.000Z",
}
MIDNIGHT = datetime(2020, 12, 11, tzinfo=UTC)


def one(entry: dict[str, Any]) -> FeedbackItem:
    (item,) = validate_feedback({"feedback": [entry]})
    return item


def bad(body: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        validate_feedback(body)
    return caught.value


def test_spec_accepted_example() -> None:
    assert one(SPEC_ACCEPTED) == FeedbackItem(CARD, "accepted", MIDNIGHT, (SUGGESTION,), None)


def test_spec_overridden_example_keeps_the_coding_but_not_the_comment() -> None:
    item = one(SPEC_OVERRIDDEN)
    assert item.reason == OverrideReason(
        "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
        "reason-code-provided-by-service",
        "Patient refused",
        has_comment=True,
    )
    assert "Clinician" not in repr(item)


def test_overridden_without_reason_is_valid() -> None:
    entry = {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2020-12-11T00:00:00Z"}
    assert one(entry).reason is None


def test_sandbox_reason_without_display() -> None:
    entry = {
        "card": CARD,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {
                "code": "patient-refuses",
                "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
            }
        },
        "outcomeTimestamp": "2025-06-01T10:15:30.123Z",
    }
    item = one(entry)
    assert item.reason == OverrideReason(
        "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes", "patient-refuses", None
    )
    assert item.outcome_ts == datetime(2025, 6, 1, 10, 15, 30, 123000, tzinfo=UTC)


def test_epic_override_reasons_object_with_reason() -> None:
    entry = {
        "card": CARD,
        "outcome": "overridden",
        "overrideReasons": {"reason": {"code": "risk-benefit-ratio", "system": "urn:x"}, "userComment": ""},
        "outcomeTimestamp": "2025-06-01T10:00:00Z",
    }
    assert one(entry).reason == OverrideReason("urn:x", "risk-benefit-ratio", None, has_comment=False)


@pytest.mark.parametrize(
    "extension",
    [
        {
            f"{EPIC}reasonCategory": "12",
            f"{EPIC}reasonDisplay": "Patient declines",
            f"{EPIC}reasonTitle": "Declined",
        },
        {
            "com": {
                "epic": {
                    "cdshooks": {
                        "feedback": {
                            "overrideReason": {"reasonCategory": 12, "reasonDisplay": "Patient declines"}
                        }
                    }
                }
            }
        },
    ],
    ids=["flat-dotted-keys", "nested"],
)
def test_epic_override_reason_extension(extension: dict[str, Any]) -> None:
    entry = {
        "card": CARD,
        "outcome": "overridden",
        "overrideReasons": {"extension": extension},
        "outcomeTimestamp": "2025-06-01T10:00:00-05:00",
    }
    item = one(entry)
    assert item.reason == OverrideReason(EPIC_REASON_SYSTEM, "12", "Patient declines")
    assert item.outcome_ts == datetime(2025, 6, 1, 15, 0, tzinfo=UTC)


def test_epic_title_only_is_code_and_display() -> None:
    entry = {
        "card": CARD,
        "outcome": "overridden",
        "overrideReasons": {"extension": {f"{EPIC}reasonTitle": "Not clinically relevant"}},
        "outcomeTimestamp": "2025-06-01T10:00:00Z",
    }
    assert one(entry).reason == OverrideReason(
        EPIC_REASON_SYSTEM, "Not clinically relevant", "Not clinically relevant"
    )


def test_spec_coding_wins_and_epic_fills_the_display() -> None:
    entry = {
        "card": CARD,
        "outcome": "overridden",
        "overrideReasons": {
            "reason": {"code": "patient-refuses", "system": "urn:s"},
            "extension": {f"{EPIC}reasonCategory": "7", f"{EPIC}reasonDisplay": "Refused"},
        },
        "outcomeTimestamp": "2025-06-01T10:00:00Z",
    }
    assert one(entry).reason == OverrideReason("urn:s", "patient-refuses", "Refused")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T10:00:00Z", datetime(2025, 6, 1, 10, tzinfo=UTC)),
        ("2025-06-01t10:00:00z", datetime(2025, 6, 1, 10, tzinfo=UTC)),
        ("2025-06-01T12:00:00+02:00", datetime(2025, 6, 1, 10, tzinfo=UTC)),
        ("2025-06-01T10:00:00.123456789Z", datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2025-06-01T10:00:00", datetime(2025, 6, 1, 10, tzinfo=UTC)),  # no offset: read as UTC
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),  # leap second
    ],
)
def test_timestamps_become_utc_instants(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text", ["2025-06-01", "yesterday", "2025-13-01T00:00:00Z", "2025-06-01T10:00Z", "2025-06-01T10:00:00+2"]
)
def test_bad_timestamps(text: str) -> None:
    assert parse_timestamp(text) is None


def test_every_bad_entry_gets_one_issue_and_valid_ones_none() -> None:
    entries: list[Any] = [
        SPEC_ACCEPTED,  # 0 valid
        {**SPEC_ACCEPTED, "card": None},  # 1
        {**SPEC_ACCEPTED, "outcome": "ignored"},  # 2
        {**SPEC_ACCEPTED, "outcomeTimestamp": "yesterday"},  # 3
        {k: v for k, v in SPEC_ACCEPTED.items() if k != "acceptedSuggestions"},  # 4
        {**SPEC_ACCEPTED, "acceptedSuggestions": [{"id": ""}, "x"]},  # 5
        {**SPEC_OVERRIDDEN, "overrideReason": {}},  # 6: needs reason or comment
        {**SPEC_OVERRIDDEN, "overrideReason": {"reason": {"system": "urn:x"}}},  # 7: code required
        "not an object",  # 8
        {"card": 7, "outcome": "accepted", "outcomeTimestamp": 3},  # 9: several problems, one issue
        SPEC_OVERRIDDEN,  # 10 valid
    ]
    error = bad({"feedback": entries})
    assert error.status == 400
    expressions = [issue.expression for issue in error.issues]
    assert expressions == [
        ("feedback[1].card",),
        ("feedback[2].outcome",),
        ("feedback[3].outcomeTimestamp",),
        ("feedback[4].acceptedSuggestions",),
        ("feedback[5].acceptedSuggestions[0].id", "feedback[5].acceptedSuggestions[1]"),
        ("feedback[6].overrideReason",),
        ("feedback[7].overrideReason.reason.code",),
        ("feedback[8]",),
        ("feedback[9].card", "feedback[9].outcomeTimestamp", "feedback[9].acceptedSuggestions"),
    ]
    body = operation_outcome(error)
    assert body["resourceType"] == "OperationOutcome"
    assert len(body["issue"]) == 9
    assert body["issue"][0] == {
        "severity": "error",
        "code": "required",
        "diagnostics": "feedback[1].card: is required",
        "expression": ["feedback[1].card"],
    }


@pytest.mark.parametrize(
    ("body", "expression"),
    [([], None), ({}, "feedback"), ({"feedback": {}}, "feedback"), ({"feedback": "x"}, "feedback")],
)
def test_bad_body_shape(body: Any, expression: str | None) -> None:
    error = bad(body)
    assert [issue.expression for issue in error.issues] == [(expression,) if expression else ()]


def test_empty_batch_is_valid() -> None:
    assert validate_feedback({"feedback": []}) == []


def test_more_than_5000_entries_is_413_before_validation() -> None:
    assert len(validate_feedback({"feedback": [SPEC_ACCEPTED] * MAX_ENTRIES})) == MAX_ENTRIES
    with pytest.raises(TooManyEntries) as caught:
        validate_feedback({"feedback": [{}] * (MAX_ENTRIES + 1)})
    assert caught.value.status == 413


def test_accepted_suggestion_ids_are_deduplicated_and_other_fields_ignored() -> None:
    entry = {
        **SPEC_ACCEPTED,
        "acceptedSuggestions": [{"id": "a"}, {"id": "b"}, {"id": "a"}],
        "overrideReason": "ignored for accepted",
        "extra": {"vendor": True},
    }
    item = one(entry)
    assert item.accepted_suggestions == ("a", "b")
    assert item.reason is None


def test_overridden_ignores_accepted_suggestions() -> None:
    assert one({**SPEC_OVERRIDDEN, "acceptedSuggestions": "not checked"}).accepted_suggestions == ()
