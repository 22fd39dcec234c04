"""Alembic environment: migrates the connection that cds_service.record.db.migrate passes in.

Online mode only; the caller owns the transaction (and the cross-process lock), so every
migration of one upgrade commits together.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cds_service.record.db.schema import VERSION_TABLE, metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use `cds-service db upgrade`")
_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError(
        "run migrations through cds_service.record.db.migrate.upgrade (it passes a connection)"
    )
run_migrations(_connection)
