"""Feedback analytics: figures, formats, the CLI entry point and the admin endpoint handler."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect

from cds_service.core.errors import BadRequest
from cds_service.record.db.engine import DatabaseUnavailable, make_engine, sqlite_file
from cds_service.record.db.migrate import DatabaseNotInitialised, upgrade
from cds_service.record.feedback.report import build_report, format_report, run_report_command
from cds_service.record.feedback.store import FeedbackStore, IssuedCard, IssuedSuggestion
from cds_service.record.feedback.validate import EPIC_REASON_SYSTEM, validate_feedback
from cds_service.wire.feedback_routes import AdminUnauthorized, handle_admin_report
from tests.support.databases import (  # noqa: F401 - pytest fixtures
    any_db_url_fixture,
    postgres_admin_fixture,
    postgres_url_fixture,
    sqlite_url_fixture,
)

NOW = datetime(2025, 6, 20, 12, 0, tzinfo=UTC)
REASONS = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
TOKEN = "admin-token-0123456789"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
EPIC = "com.epic.cdshooks.feedback.overrideReason."


def card(uuid: str, kind: str, suggestions: tuple[tuple[str, str], ...] = ()) -> IssuedCard:
    issued = tuple(IssuedSuggestion(s, agent, i == 0) for i, (s, agent) in enumerate(suggestions))
    return IssuedCard(uuid, kind, "R12", issued)


def issue(store: FeedbackStore, when: datetime, *cards: IssuedCard) -> None:
    store.record_cards(
        list(cards),
        hook_instance=f"hi-{when.isoformat()}",
        patient_key="k" * 64,
        protocol_version="1.0+abc",
        service_version="0.1.0",
        issued_at=when,
    )


def seed(store: FeedbackStore) -> None:
    issue(store, datetime(2025, 5, 20, 8, 0, tzinfo=UTC), card("D", "CONSIDER"))
    issue(
        store,
        datetime(2025, 6, 2, 9, 0, tzinfo=UTC),
        card("A", "ESCALATE", (("sA1", "romosozumab"), ("sA2", "abaloparatide"))),
    )
    issue(
        store,
        datetime(2025, 6, 3, 10, 0, tzinfo=UTC),
        card("B", "ESCALATE", (("sB1", "romosozumab"), ("sB2", "abaloparatide"))),
    )
    issue(store, datetime(2025, 6, 10, 8, 0, tzinfo=UTC), card("C", "DENOSUMAB_OVERDUE"))
    reason = {"reason": {"system": REASONS, "code": "patient-refuses"}}
    entries = [
        {
            "card": "A",
            "outcome": "overridden",
            "outcomeTimestamp": "2025-06-02T09:01:00Z",
            "overrideReason": reason,
        },
        {
            "card": "A",
            "outcome": "accepted",
            "outcomeTimestamp": "2025-06-02T09:03:00Z",
            "acceptedSuggestions": [{"id": "sA1"}],
        },
        {
            "card": "B",
            "outcome": "overridden",
            "outcomeTimestamp": "2025-06-03T10:02:00Z",
            "overrideReason": {"reason": {**reason["reason"], "display": "Patient refuses"}},
        },
        {
            "card": "C",
            "outcome": "overridden",
            "outcomeTimestamp": "2025-06-10T08:10:00Z",
            "overrideReasons": {
                "extension": {f"{EPIC}reasonCategory": "12", f"{EPIC}reasonDisplay": "Declined"}
            },
        },
        {
            "card": "ghost",
            "outcome": "accepted",
            "outcomeTimestamp": "2025-06-04T00:00:00Z",
            "acceptedSuggestions": [{"id": "x"}],
        },
    ]
    store.store_feedback(validate_feedback({"feedback": entries}))


@pytest.fixture(name="engine")
def engine_fixture(any_db_url: str) -> Iterator[Engine]:
    engine = make_engine(any_db_url)
    upgrade(engine)
    seed(FeedbackStore(engine))
    yield engine
    engine.dispose()


def test_full_report(engine: Engine) -> None:
    assert build_report(engine, now=NOW) == {
        "generated_at": "2025-06-20T12:00:00Z",
        "cards_issued": 4,
        "feedback_entries": 5,
        "unmatched_feedback": 1,
        "by_outcome": {
            "CONSIDER": {
                "issued": 1,
                "accepted": 0,
                "overridden": 0,
                "acceptance_rate": 0.0,
                "override_rate": 0.0,
            },
            "DENOSUMAB_OVERDUE": {
                "issued": 1,
                "accepted": 0,
                "overridden": 1,
                "acceptance_rate": 0.0,
                "override_rate": 1.0,
            },
            "ESCALATE": {
                "issued": 2,
                "accepted": 1,
                "overridden": 1,
                "acceptance_rate": 0.5,
                "override_rate": 0.5,
            },
        },
        "by_agent": {
            "abaloparatide": {"recommended": 2, "accepted": 0, "overridden": 1},
            "romosozumab": {"recommended": 2, "accepted": 1, "overridden": 1},
        },
        "override_reasons": [
            {"system": REASONS, "code": "patient-refuses", "display": "Patient refuses", "count": 2},
            {"system": EPIC_REASON_SYSTEM, "code": "12", "display": "Declined", "count": 1},
        ],
        "median_seconds_to_feedback": 120.0,
        "weekly": [
            {"week": "2025-05-19", "issued": 1, "accepted": 0, "overridden": 0},
            {"week": "2025-06-02", "issued": 2, "accepted": 1, "overridden": 1},
            {"week": "2025-06-09", "issued": 1, "accepted": 0, "overridden": 1},
        ],
    }


def test_report_since(engine: Engine) -> None:
    report = build_report(engine, date(2025, 6, 3), now=NOW)
    assert report["since"] == "2025-06-03"
    assert (report["cards_issued"], report["feedback_entries"], report["unmatched_feedback"]) == (2, 3, 1)
    assert report["by_outcome"]["ESCALATE"] == {
        "issued": 1,
        "accepted": 0,
        "overridden": 1,
        "acceptance_rate": 0.0,
        "override_rate": 1.0,
    }
    assert report["by_agent"] == {
        "abaloparatide": {"recommended": 1, "accepted": 0, "overridden": 1},
        "romosozumab": {"recommended": 1, "accepted": 0, "overridden": 1},
    }
    assert [r["count"] for r in report["override_reasons"]] == [1, 1]
    assert report["median_seconds_to_feedback"] == 360.0
    assert [w["week"] for w in report["weekly"]] == ["2025-06-02", "2025-06-09"]


def test_empty_database_report_has_nulls_not_errors(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    report = build_report(engine, now=NOW)
    engine.dispose()
    assert report["cards_issued"] == report["feedback_entries"] == 0
    assert report["by_outcome"] == report["by_agent"] == {}
    assert report["median_seconds_to_feedback"] is None
    assert report["weekly"] == report["override_reasons"] == []


def test_formats(engine: Engine) -> None:
    report = build_report(engine, date(2025, 5, 1), now=NOW)
    assert json.loads(format_report(report, "json")) == report
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert {"section": "by_outcome", "key": "ESCALATE", "metric": "acceptance_rate", "value": "0.5"} in rows
    assert {"section": "summary", "key": "", "metric": "since", "value": "2025-05-01"} in rows
    assert {"section": "weekly", "key": "2025-06-02", "metric": "issued", "value": "2"} in rows
    table = format_report(report, "table")
    assert "cards issued since 2025-05-01" in table
    escalate = next(line for line in table.splitlines() if line.startswith("ESCALATE"))
    assert escalate.split() == ["ESCALATE", "2", "1", "1", "0.500", "0.500"]


def test_cli_prints_the_report(any_db_url: str, engine: Engine) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_report_command(any_db_url, None, "json", out, err) == 0
    assert json.loads(out.getvalue())["cards_issued"] == 4
    assert err.getvalue() == ""


def test_cli_exits_2_on_an_uninitialised_database_and_never_migrates(any_db_url: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_report_command(any_db_url, None, "table", out, err) == 2
    assert "run `cds-service db upgrade`" in err.getvalue()
    assert out.getvalue() == ""
    path = sqlite_file(any_db_url)
    if path is not None:
        assert not path.exists()
    else:
        engine = make_engine(any_db_url)
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
        engine.dispose()
        with pytest.raises(DatabaseNotInitialised):
            build_report(make_engine(any_db_url))


def test_cli_reports_an_unavailable_database(tmp_path: Path) -> None:
    err = io.StringIO()
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    assert run_report_command(url, None, "json", io.StringIO(), err) == 1
    assert "unavailable" in err.getvalue()


# ----- admin endpoint handler ----------------------------------------------------------------
def test_admin_report_with_the_right_token(engine: Engine) -> None:
    status, body, headers = handle_admin_report(
        f"Bearer {TOKEN}", "2025-06-03", FeedbackStore(engine), TOKEN_SHA256
    )
    assert (status, body["since"], body["cards_issued"]) == (200, "2025-06-03", 2)
    assert headers == {"Cache-Control": "no-store"}
    assert handle_admin_report(f"bearer {TOKEN}", None, FeedbackStore(engine), TOKEN_SHA256.upper())[0] == 200


@pytest.mark.parametrize("configured", [None, "", "not-a-sha256"])
def test_admin_report_is_404_when_not_configured(sqlite_url: str, configured: str | None) -> None:
    store = FeedbackStore(make_engine(sqlite_url))
    with pytest.raises(Exception) as caught:
        handle_admin_report(f"Bearer {TOKEN}", None, store, configured)
    assert getattr(caught.value, "status", None) == 404
    assert sqlite_file(sqlite_url) is not None
    assert not sqlite_file(sqlite_url).exists()  # type: ignore[union-attr]


@pytest.mark.parametrize("header", [None, "", "Bearer", f"Basic {TOKEN}", "Bearer wrong", f"Bearer {TOKEN}x"])
def test_admin_report_is_401_without_the_token(sqlite_url: str, header: str | None) -> None:
    store = FeedbackStore(make_engine(sqlite_url))
    with pytest.raises(AdminUnauthorized) as caught:
        handle_admin_report(header, None, store, TOKEN_SHA256)
    assert caught.value.status == 401
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="cds-admin"'}
    assert TOKEN not in str(caught.value)


def test_admin_report_bad_since_is_400(sqlite_url: str) -> None:
    with pytest.raises(BadRequest) as caught:
        handle_admin_report(f"Bearer {TOKEN}", "June", FeedbackStore(make_engine(sqlite_url)), TOKEN_SHA256)
    assert caught.value.issues[0].expression == ("since",)


def test_admin_report_on_an_uninitialised_database_is_503(sqlite_url: str) -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        handle_admin_report(f"Bearer {TOKEN}", None, FeedbackStore(make_engine(sqlite_url)), TOKEN_SHA256)
    assert caught.value.status == 503
    assert "cds-service db upgrade" in str(caught.value)


def test_feedback_timestamped_before_the_card_counts_as_zero_seconds(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    store = FeedbackStore(engine)
    issue(store, datetime(2025, 6, 2, 9, 0, tzinfo=UTC), card("E", "ESCALATE", (("sE1", "romosozumab"),)))
    early = {"card": "E", "outcome": "accepted", "outcomeTimestamp": "2025-06-02T08:59:00Z"}
    store.store_feedback(validate_feedback({"feedback": [{**early, "acceptedSuggestions": [{"id": "sE1"}]}]}))
    assert build_report(engine, now=NOW)["median_seconds_to_feedback"] == 0.0
    engine.dispose()
