"""Alembic migration environment (run through cds_service.record.db.migrate, never with alembic.ini)."""
