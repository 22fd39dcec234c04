"""`cds-service` command line: `serve` (gunicorn), `evaluate` (a FHIR Bundle, offline), `dev-token`,
`db upgrade`, `feedback-report` and `knowledge check` / `knowledge schema`."""

from __future__ import annotations

import cds_service.serve_patch  # noqa: F401 - must run first: gevent patches the stdlib before ssl is imported

# isort: split
import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from gunicorn.app.base import BaseApplication
from sqlalchemy.exc import SQLAlchemyError

from cds_service.app import create_app
from cds_service.config import Settings, SettingsError, load_settings
from cds_service.core.errors import InvalidBundle
from cds_service.core.security_errors import SecurityConfigError
from cds_service.gunicorn_conf import gunicorn_options
from cds_service.record.db.engine import (
    DatabaseConfigError,
    DatabaseUnavailable,
    database_url,
    make_engine,
    startup_failure,
)
from cds_service.record.db.migrate import run_upgrade
from cds_service.record.db.retention import Retention, prune
from cds_service.record.feedback.patient_key import PatientKeyError
from cds_service.record.feedback.report import run_report_command
from cds_service.wire.auth.dev_keys import mint_dev_token

PROG = "cds-service"
EXIT_OK = 0
EXIT_USAGE = 2
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class GunicornApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """Runs a Flask app factory under gunicorn with options from gunicorn_conf (no argv parsing)."""

    def __init__(self, app_factory: Callable[[], Flask], options: Mapping[str, Any]) -> None:
        self._app_factory = app_factory
        self._options = dict(options)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app_factory()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help or a usage error
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="CDS Hooks 2.0 osteoporosis-escalation service")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the HTTP service under gunicorn")
    serve.add_argument("--host", help="bind address (CDS_HOST)")
    serve.add_argument("--port", help="TCP port (CDS_PORT)")
    serve.add_argument("--workers", help="worker processes (CDS_WORKERS)")
    serve.set_defaults(run=_serve)
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a single-patient FHIR Bundle, print the decision"
    )
    evaluate.add_argument("file", metavar="FILE|-", help="Bundle JSON file, or - for standard input")
    evaluate.add_argument(
        "--as-of", type=_iso_date, help="evaluation date YYYY-MM-DD (default CDS_AS_OF, today)"
    )
    evaluate.set_defaults(run=_evaluate)
    token = commands.add_parser(
        "dev-token", help="print a fresh JWT of the local dev issuer (CDS_AUTH_MODE=dev)"
    )
    token.add_argument("--url", required=True, help="the endpoint URL the token is for (its aud)")
    token.set_defaults(run=_dev_token)
    database = commands.add_parser("db", help="database maintenance")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="run the database migrations").set_defaults(run=_db_upgrade)
    db_commands.add_parser(
        "prune", help="delete ledger and feedback rows past retention, checkpoint the SQLite WAL"
    ).set_defaults(run=_db_prune)
    report = commands.add_parser("feedback-report", help="acceptance and override figures from feedback")
    report.add_argument("--since", type=_iso_date, help="only cards and feedback since YYYY-MM-DD")
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.set_defaults(run=_feedback_report)
    knowledge = commands.add_parser("knowledge", help="check a knowledge file, print its schema")
    knowledge_commands = knowledge.add_subparsers(dest="knowledge_command", required=True)
    check = knowledge_commands.add_parser(
        "check",
        help="validate an edited knowledge file and print what it changes for the demo patients",
    )
    check.add_argument("file", metavar="FILE", help="the edited knowledge file (YAML)")
    check.add_argument(
        "--against", metavar="BASE", help="the knowledge file to compare with (default: the shipped one)"
    )
    check.add_argument(
        "--patients",
        metavar="DIR",
        type=Path,
        help="scenario Bundles with index.json (default: fhir_fixtures)",
    )
    check.set_defaults(run=_knowledge_check)
    knowledge_commands.add_parser(
        "schema", help="print the knowledge file's JSON Schema (docs/knowledge-schema.json)"
    ).set_defaults(run=_knowledge_schema)
    return parser


def _serve(args: argparse.Namespace) -> int:
    overrides = {"CDS_HOST": args.host, "CDS_PORT": args.port, "CDS_WORKERS": args.workers}
    environ = {**os.environ, **{key: value for key, value in overrides.items() if value is not None}}
    startup_errors: tuple[type[Exception], ...] = (SettingsError, *_knowledge_errors(), *_runtime_errors())
    try:
        settings = load_settings(environ)
        _configure_logging(settings)
        create_app(settings)  # fail fast before forking: settings, knowledge, trust, database
        if settings.db_auto_migrate:  # once, before the workers start (advisory lock on PostgreSQL)
            run_upgrade(_database_url(settings))
    except startup_errors as error:
        return _fail(error)
    except SQLAlchemyError as error:  # unreachable server, corrupt file: one clear line, no traceback
        return _fail(RuntimeError(startup_failure(error, _database_url(settings))))
    GunicornApplication(lambda: create_app(settings), gunicorn_options(settings)).run()
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    input_errors: tuple[type[Exception], ...] = (SettingsError, InvalidBundle, *_knowledge_errors())
    try:
        settings = load_settings()
        _configure_logging(settings)
        bundle = _read_json(args.file)
        as_of = resolve_as_of(args.as_of, settings)
        from cds_service.offline import evaluate_bundle  # noqa: PLC0415 - heavy, evaluate only

        decision = evaluate_bundle(bundle, as_of, settings)
    except input_errors as error:
        return _fail(error)
    sys.stdout.write(orjson.dumps(decision, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


def _dev_token(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        print(mint_dev_token(settings.data_dir, args.url))
    except (SettingsError, ValueError) as error:
        return _fail(error)
    return EXIT_OK


def _db_prune(_args: argparse.Namespace) -> int:
    errors: tuple[type[Exception], ...] = (SettingsError, *_runtime_errors())
    try:
        settings = load_settings()
        _configure_logging(settings)
        engine = make_engine(_database_url(settings))
        retention = Retention(settings.ledger_retention_days, settings.feedback_retention_days)
        pruned = prune(engine, retention, datetime.now(UTC), truncate_wal=True)
        print(
            f"deleted {pruned.cards} ledger cards, {pruned.feedback} feedback entries, "
            f"{pruned.replay} expired replay records"
        )
    except errors as error:
        return _fail(error)
    except SQLAlchemyError as error:
        return _fail(RuntimeError(startup_failure(error, _database_url(settings))))
    return EXIT_OK


def _db_upgrade(_args: argparse.Namespace) -> int:
    errors: tuple[type[Exception], ...] = (SettingsError, *_runtime_errors())
    try:
        settings = load_settings()
        _configure_logging(settings)
        print(f"database at revision {run_upgrade(_database_url(settings))}")
    except errors as error:
        return _fail(error)
    except SQLAlchemyError as error:
        return _fail(RuntimeError(startup_failure(error, _database_url(settings))))
    return EXIT_OK


def _feedback_report(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        return _fail(error)
    return run_report_command(_database_url(settings), args.since, args.format)


def _knowledge_check(args: argparse.Namespace) -> int:
    from cds_service.knowledge_check import run_check  # noqa: PLC0415 - heavy, this command only

    return run_check(args.file, args.against, args.patients)


def _knowledge_schema(_args: argparse.Namespace) -> int:
    from cds_service.knowledge.json_schema import schema_text  # noqa: PLC0415

    sys.stdout.write(schema_text())
    return EXIT_OK


def _database_url(settings: Settings) -> str:
    return database_url(settings.database_url, settings.data_dir)


def _runtime_errors() -> tuple[type[Exception], ...]:
    return (DatabaseConfigError, DatabaseUnavailable, SecurityConfigError, PatientKeyError)


def resolve_as_of(cli_as_of: date | None, settings: Settings) -> date:
    """--as-of, then CDS_AS_OF, then today's date in UTC."""
    return cli_as_of or settings.as_of or datetime.now(UTC).date()


def _read_json(file: str) -> Any:
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as error:
        raise InvalidBundle(f"cannot read {file}: {error.strerror}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidBundle(f"{'standard input' if file == '-' else file} is not valid JSON") from None


def _iso_date(text: str) -> date:
    try:
        if _ISO_DATE.match(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected YYYY-MM-DD")


def _knowledge_errors() -> tuple[type[Exception], ...]:
    try:
        from cds_service.knowledge.schema import KnowledgeError  # noqa: PLC0415
    except ImportError:
        return (ValueError,)
    return (KnowledgeError,)


def _configure_logging(settings: Settings) -> None:
    """One line per record on stderr (stdout stays for `evaluate` output); workers inherit it."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
    )
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))


def _fail(error: Exception) -> int:
    reason = " ".join(str(error).split()) or type(error).__name__
    print(f"{PROG}: {reason}", file=sys.stderr)
    return EXIT_USAGE
