"""Feedback analytics: acceptance and override by card kind and agent, reasons, latency, weekly trend.

Card-centric figures cover cards issued since `since` (00:00 UTC), each counted once by its latest
feedback (ties broken by arrival); entry counts and override reasons cover feedback entries whose
outcomeTimestamp is since then. Read-only: never migrates (an empty database is an error).
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TextIO, TypeVar

import orjson
from sqlalchemy import Connection, Engine, Select, and_, func, select

from cds_service.record.db.engine import DatabaseUnavailable, make_engine, sqlite_file, unavailable_on_error
from cds_service.record.db.migrate import DatabaseNotInitialised, require_initialised
from cds_service.record.db.schema import card_ledger, card_suggestion, feedback

ReportFormat = Literal["table", "json", "csv"]
FORMATS: tuple[ReportFormat, ...] = ("table", "json", "csv")
EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_NOT_INITIALISED = 2
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")


def parse_since(text: str) -> date:
    """A YYYY-MM-DD date; raises ValueError otherwise."""
    if not _ISO_DATE.match(text):
        raise ValueError("expected a date as YYYY-MM-DD")
    return date.fromisoformat(text)


@dataclass(frozen=True)
class _Feedback:
    outcome: str
    at: datetime
    accepted: frozenset[str]


def build_report(engine: Engine, since: date | None = None, *, now: datetime | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict; raises DatabaseNotInitialised or DatabaseUnavailable."""
    start = datetime.combine(since, time.min, UTC) if since else None
    with unavailable_on_error("feedback report"):
        require_initialised(engine)
        with engine.connect() as connection:
            cards = _cards(connection, start)
            history = _history(connection, start)
            suggestions = _suggestions(connection, start)
            entries, unmatched = _entry_counts(connection, start)
            reasons = _override_reasons(connection, start)
    latest = {card: events[-1] for card, events in history.items()}
    report: dict[str, Any] = {"generated_at": _iso(now or datetime.now(UTC))}
    if since is not None:
        report["since"] = since.isoformat()
    report |= {
        "cards_issued": len(cards),
        "feedback_entries": entries,
        "unmatched_feedback": unmatched,
        "by_outcome": _by_outcome(cards, latest),
        "by_agent": _by_agent(suggestions, latest),
        "override_reasons": reasons,
        "median_seconds_to_feedback": _median_latency(cards, history),
        "weekly": _weekly(cards, latest),
    }
    return report


# ----- queries -------------------------------------------------------------------------------
def _since(statement: _Query, column: Any, start: datetime | None) -> _Query:
    return statement if start is None else statement.where(column >= start)


def _cards(connection: Connection, start: datetime | None) -> dict[str, tuple[str, datetime]]:
    query = _since(
        select(card_ledger.c.uuid, card_ledger.c.kind, card_ledger.c.issued_at),
        card_ledger.c.issued_at,
        start,
    )
    return {uuid: (kind, issued) for uuid, kind, issued in connection.execute(query)}


def _history(connection: Connection, start: datetime | None) -> dict[str, list[_Feedback]]:
    """Feedback on the cards issued since `start`, oldest first per card."""
    query = _since(
        select(feedback.c.card, feedback.c.outcome, feedback.c.outcome_ts, feedback.c.accepted_suggestions)
        .join(card_ledger, card_ledger.c.uuid == feedback.c.card)
        .order_by(feedback.c.card, feedback.c.outcome_ts, feedback.c.id),
        card_ledger.c.issued_at,
        start,
    )
    history: dict[str, list[_Feedback]] = defaultdict(list)
    for card, outcome, at, accepted in connection.execute(query):
        ids = frozenset(str(i) for i in accepted) if isinstance(accepted, list) else frozenset()
        history[card].append(_Feedback(outcome, at, ids))
    return history


def _suggestions(connection: Connection, start: datetime | None) -> list[tuple[str, str, str]]:
    query = _since(
        select(card_suggestion.c.card_uuid, card_suggestion.c.suggestion_uuid, card_suggestion.c.agent).join(
            card_ledger, card_ledger.c.uuid == card_suggestion.c.card_uuid
        ),
        card_ledger.c.issued_at,
        start,
    )
    return [(card, suggestion, agent) for card, suggestion, agent in connection.execute(query)]


def _entry_counts(connection: Connection, start: datetime | None) -> tuple[int, int]:
    """(feedback entries, entries whose card is not in the ledger) since `start`."""
    query = _since(
        select(func.count(), func.count().filter(card_ledger.c.uuid.is_(None))).select_from(
            feedback.outerjoin(card_ledger, card_ledger.c.uuid == feedback.c.card)
        ),
        feedback.c.outcome_ts,
        start,
    )
    total, unmatched = connection.execute(query).one()
    return int(total), int(unmatched)


def _override_reasons(connection: Connection, start: datetime | None) -> list[dict[str, Any]]:
    count = func.count().label("count")
    query = _since(
        select(feedback.c.reason_system, feedback.c.reason_code, func.max(feedback.c.reason_display), count)
        .where(and_(feedback.c.outcome == "overridden", feedback.c.reason_code.is_not(None)))
        .group_by(feedback.c.reason_system, feedback.c.reason_code),
        feedback.c.outcome_ts,
        start,
    )
    rows = [
        {"system": system, "code": code, "display": display, "count": int(n)}
        for system, code, display, n in connection.execute(query)
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["system"] or "", r["code"]))


# ----- aggregation ---------------------------------------------------------------------------
def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def _by_outcome(
    cards: dict[str, tuple[str, datetime]], latest: dict[str, _Feedback]
) -> dict[str, dict[str, Any]]:
    issued: Counter[str] = Counter()
    outcomes: Counter[tuple[str, str]] = Counter()
    for uuid, (kind, _issued) in cards.items():
        issued[kind] += 1
        if uuid in latest:
            outcomes[(kind, latest[uuid].outcome)] += 1
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(issued):
        accepted, overridden = outcomes[(kind, "accepted")], outcomes[(kind, "overridden")]
        out[kind] = {
            "issued": issued[kind],
            "accepted": accepted,
            "overridden": overridden,
            "acceptance_rate": _rate(accepted, issued[kind]),
            "override_rate": _rate(overridden, issued[kind]),
        }
    return out


def _by_agent(
    suggestions: Iterable[tuple[str, str, str]], latest: dict[str, _Feedback]
) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for card, suggestion, agent in suggestions:
        counts[agent]["recommended"] += 1
        last = latest.get(card)
        if last is not None and last.outcome == "accepted" and suggestion in last.accepted:
            counts[agent]["accepted"] += 1
        elif last is not None and last.outcome == "overridden":
            counts[agent]["overridden"] += 1
    return {
        agent: {key: counts[agent][key] for key in ("recommended", "accepted", "overridden")}
        for agent in sorted(counts)
    }


def _median_latency(
    cards: dict[str, tuple[str, datetime]], history: dict[str, list[_Feedback]]
) -> float | None:
    """Median seconds from issue to the first feedback on the card.

    A feedback timestamp before the card was issued (the EHR's clock is behind ours) counts as 0 s.
    """
    delays = [
        max((events[0].at - cards[card][1]).total_seconds(), 0.0)
        for card, events in history.items()
        if card in cards
    ]
    return round(statistics.median(delays), 1) if delays else None


def _weekly(cards: dict[str, tuple[str, datetime]], latest: dict[str, _Feedback]) -> list[dict[str, Any]]:
    weeks: dict[date, Counter[str]] = defaultdict(Counter)
    for uuid, (_kind, issued) in cards.items():
        monday = issued.date() - timedelta(days=issued.weekday())
        weeks[monday]["issued"] += 1
        if uuid in latest:
            weeks[monday][latest[uuid].outcome] += 1
    return [
        {
            "week": monday.isoformat(),
            "issued": weeks[monday]["issued"],
            "accepted": weeks[monday]["accepted"],
            "overridden": weeks[monday]["overridden"],
        }
        for monday in sorted(weeks)
    ]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ----- formats -------------------------------------------------------------------------------
def format_report(report: dict[str, Any], fmt: ReportFormat) -> str:
    if fmt == "json":
        return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        return _csv(report)
    return _text(report)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _columns(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(headers), *[[_fmt(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def _text(report: dict[str, Any]) -> str:
    title = f"Feedback report, generated {report['generated_at']}"
    if "since" in report:
        title += f", cards issued since {report['since']}"
    lines = [
        title,
        "",
        f"Cards issued:        {report['cards_issued']}",
        f"Feedback entries:    {report['feedback_entries']}",
        f"Unmatched feedback:  {report['unmatched_feedback']}",
        f"Median s to feedback: {_fmt(report['median_seconds_to_feedback'])}",
        "",
        "By card kind",
        *_columns(
            ("kind", "issued", "accepted", "overridden", "acceptance", "override"),
            [
                (kind, v["issued"], v["accepted"], v["overridden"], v["acceptance_rate"], v["override_rate"])
                for kind, v in report["by_outcome"].items()
            ],
        ),
        "",
        "By agent",
        *_columns(
            ("agent", "recommended", "accepted", "overridden"),
            [
                (agent, v["recommended"], v["accepted"], v["overridden"])
                for agent, v in report["by_agent"].items()
            ],
        ),
        "",
        "Override reasons",
        *_columns(
            ("code", "count", "display", "system"),
            [(r["code"], r["count"], r["display"], r["system"]) for r in report["override_reasons"]],
        ),
        "",
        "Weekly (cards by week of issue)",
        *_columns(
            ("week", "issued", "accepted", "overridden"),
            [(w["week"], w["issued"], w["accepted"], w["overridden"]) for w in report["weekly"]],
        ),
    ]
    return "\n".join(lines) + "\n"


def _csv(report: dict[str, Any]) -> str:
    """Long format: section,key,metric,value (one figure per row)."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(("section", "key", "metric", "value"))
    summary = ("generated_at", "since", "cards_issued", "feedback_entries", "unmatched_feedback")
    for name in (*summary, "median_seconds_to_feedback"):
        if name in report:
            out.writerow(("summary", "", name, _csv_value(report[name])))
    for section in ("by_outcome", "by_agent"):
        for key, metrics in report[section].items():
            for metric, value in metrics.items():
                out.writerow((section, key, metric, _csv_value(value)))
    for reason in report["override_reasons"]:
        key = f"{reason['system'] or ''}|{reason['code']}"
        out.writerow(("override_reasons", key, "display", _csv_value(reason["display"])))
        out.writerow(("override_reasons", key, "count", reason["count"]))
    for week in report["weekly"]:
        for metric in ("issued", "accepted", "overridden"):
            out.writerow(("weekly", week["week"], metric, week[metric]))
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


# ----- command line --------------------------------------------------------------------------
def run_report_command(
    url: str, since: date | None, fmt: ReportFormat, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """`cds-service feedback-report`: print the report; exit 2 on an uninitialised database."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        err.write("cds-service: the database has no schema yet: run `cds-service db upgrade`\n")
        return EXIT_NOT_INITIALISED
    engine = make_engine(url)
    try:
        report = build_report(engine, since)
    except DatabaseNotInitialised:
        err.write("cds-service: the database has no schema yet: run `cds-service db upgrade`\n")
        return EXIT_NOT_INITIALISED
    except DatabaseUnavailable:
        err.write("cds-service: the database is unavailable\n")
        return EXIT_UNAVAILABLE
    finally:
        engine.dispose()
    out.write(format_report(report, fmt))
    return EXIT_OK
