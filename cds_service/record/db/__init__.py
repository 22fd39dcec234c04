"""Relational storage (SQLAlchemy Core + Alembic): card ledger, feedback and the JWT replay store.

SQLite (embedded, WAL) by default, PostgreSQL for several replicas; both chosen by `CDS_DATABASE_URL`.
"""
