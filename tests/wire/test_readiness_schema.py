"""/readyz and the schema revision during a rolling upgrade (docs/operations.md "Upgrading").

The new release's migration Job runs before its pods start, so the old release's pods see a revision
their code does not know: they stay ready (migrations are additive), instead of every old pod turning
unready at once while no new pod is ready yet. A database never migrated, or behind, is not ready."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from cds_service.app import create_app
from cds_service.record.db.migrate import head_revision, known_revisions, schema_state
from cds_service.record.db.schema import VERSION_TABLE
from tests.support.app_settings import test_settings


def client_on(database: Path) -> FlaskClient:
    settings = test_settings({"CDS_DATABASE_URL": f"sqlite:///{database}"})
    return create_app(settings).test_client()


def set_revision(database: Path, revision: str | None) -> None:
    engine = create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.execute(text(f"DELETE FROM {VERSION_TABLE}"))
        if revision is not None:
            connection.execute(
                text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:rev)"), {"rev": revision}
            )
    engine.dispose()


def test_ready_at_the_head(tmp_path: Path) -> None:
    answer = client_on(tmp_path / "db.sqlite3").get("/readyz")
    assert answer.status_code == 200
    assert answer.get_json()["checks"]["database"] == "ok"


def test_still_ready_when_a_newer_release_migrated_past_this_code(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    client_on(database)  # migrates to this code's head
    set_revision(database, "0099_from_a_newer_release")
    answer = client_on(database).get("/readyz")
    assert answer.status_code == 200
    assert answer.get_json()["checks"]["database"] == "ahead"


def test_not_ready_when_the_schema_is_not_migrated(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    client_on(database)
    set_revision(database, None)
    settings = test_settings({"CDS_DATABASE_URL": f"sqlite:///{database}", "CDS_DB_AUTO_MIGRATE": "false"})
    answer = create_app(settings).test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["checks"]["database"] == "not migrated"


def test_schema_states() -> None:
    head = head_revision()
    known = known_revisions()
    assert head in known
    assert schema_state(head, head, known) == "ok"
    assert schema_state(None, head, known) == "not migrated"
    assert schema_state("9999_unknown", head, known) == "ahead"
    older = frozenset({*known, "0000_older"})
    assert schema_state("0000_older", head, older) == "not migrated"
