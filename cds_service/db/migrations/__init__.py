"""Alembic migration environment (run through cds_service.db.migrate, never with alembic.ini)."""
