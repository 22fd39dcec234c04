"""Initial schema: card ledger, card suggestions, feedback and the JWT replay store.

Revision ID: 0001
Revises:
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sqlalchemy.DateTime:
    return sqlalchemy.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "card_ledger",
        sqlalchemy.Column("uuid", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("kind", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("rule", sqlalchemy.Text(), nullable=True),
        sqlalchemy.Column("protocol_version", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("service_version", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("hook_instance", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("patient_key", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("issued_at", _timestamp(), nullable=False),
        sqlalchemy.PrimaryKeyConstraint("uuid", name="pk_card_ledger"),
    )
    op.create_index("ix_card_ledger_issued_at", "card_ledger", ["issued_at"])
    op.create_table(
        "card_suggestion",
        sqlalchemy.Column("card_uuid", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("suggestion_uuid", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("agent", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("is_recommended", sqlalchemy.Boolean(), nullable=False),
        sqlalchemy.ForeignKeyConstraint(
            ["card_uuid"],
            ["card_ledger.uuid"],
            name="fk_card_suggestion_card_uuid_card_ledger",
            ondelete="CASCADE",
        ),
        sqlalchemy.PrimaryKeyConstraint("card_uuid", "suggestion_uuid", name="pk_card_suggestion"),
    )
    op.create_table(
        "feedback",
        sqlalchemy.Column(
            "id",
            sqlalchemy.BigInteger().with_variant(sqlalchemy.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sqlalchemy.Column("card", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("outcome", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("outcome_ts", _timestamp(), nullable=False),
        sqlalchemy.Column("received_at", _timestamp(), nullable=False),
        sqlalchemy.Column("matched", sqlalchemy.Boolean(), nullable=False),
        sqlalchemy.Column("accepted_suggestions", sqlalchemy.JSON(), nullable=False),
        sqlalchemy.Column("reason_system", sqlalchemy.Text(), nullable=True),
        sqlalchemy.Column("reason_code", sqlalchemy.Text(), nullable=True),
        sqlalchemy.Column("reason_display", sqlalchemy.Text(), nullable=True),
        sqlalchemy.Column("has_comment", sqlalchemy.Boolean(), nullable=False),
        sqlalchemy.CheckConstraint("outcome IN ('accepted', 'overridden')", name="ck_feedback_outcome"),
        sqlalchemy.PrimaryKeyConstraint("id", name="pk_feedback"),
        sqlalchemy.UniqueConstraint(
            "card", "outcome", "outcome_ts", name="uq_feedback_card_outcome_outcome_ts"
        ),
    )
    op.create_index("ix_feedback_outcome_ts", "feedback", ["outcome_ts"])
    op.create_table(
        "jwt_replay",
        sqlalchemy.Column("iss", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("jti", sqlalchemy.Text(), nullable=False),
        sqlalchemy.Column("expires_at", _timestamp(), nullable=False),
        sqlalchemy.PrimaryKeyConstraint("iss", "jti", name="pk_jwt_replay"),
    )
    op.create_index("ix_jwt_replay_expires_at", "jwt_replay", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jwt_replay_expires_at", table_name="jwt_replay")
    op.drop_table("jwt_replay")
    op.drop_index("ix_feedback_outcome_ts", table_name="feedback")
    op.drop_table("feedback")
    op.drop_table("card_suggestion")
    op.drop_index("ix_card_ledger_issued_at", table_name="card_ledger")
    op.drop_table("card_ledger")
