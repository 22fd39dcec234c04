"""Tables (SQLAlchemy Core). Every timestamp is stored in UTC; patient ids only as a keyed hash.

The Alembic migrations in `migrations/versions` create exactly these tables; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

VERSION_TABLE = "cds_alembic_version"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as a UTC instant (timestamptz on PostgreSQL, UTC text on SQLite)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetimes are not stored: give a timezone")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# One row per card shown: what feedback joins to. `kind` is the outcome or warning code.
card_ledger = Table(
    "card_ledger",
    metadata,
    Column("uuid", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("rule", Text, nullable=True),
    Column("protocol_version", Text, nullable=False),
    Column("service_version", Text, nullable=False),
    Column("hook_instance", Text, nullable=False),
    Column("patient_key", Text, nullable=False),  # HMAC-SHA256 of the patient id, never the id
    Column("issued_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("uuid"),
    Index(None, "issued_at"),
)

# The suggestions of a card (one per agent), so accepted suggestion ids map to agents.
card_suggestion = Table(
    "card_suggestion",
    metadata,
    Column("card_uuid", Text, ForeignKey("card_ledger.uuid", ondelete="CASCADE"), nullable=False),
    Column("suggestion_uuid", Text, nullable=False),
    Column("agent", Text, nullable=False),
    Column("is_recommended", Boolean, nullable=False),
    PrimaryKeyConstraint("card_uuid", "suggestion_uuid"),
)

# One row per distinct feedback entry; `matched` = the card was in the ledger when it arrived.
feedback = Table(
    "feedback",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("card", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("outcome_ts", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("matched", Boolean, nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("reason_system", Text, nullable=True),
    Column("reason_code", Text, nullable=True),
    Column("reason_display", Text, nullable=True),
    Column("has_comment", Boolean, nullable=False),
    UniqueConstraint("card", "outcome", "outcome_ts"),
    CheckConstraint("outcome IN ('accepted', 'overridden')", name="outcome"),
    Index(None, "outcome_ts"),
)

# JWT ids already seen, per issuer, until the token expires (replay protection).
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("iss", Text, nullable=False),
    Column("jti", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("iss", "jti"),
    Index(None, "expires_at"),
)
