"""Initial schema: card ledger, card suggestions, feedback and the JWT replay store.

Revision ID: 0001
Revises:
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "card_ledger",
        sa.Column("uuid", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("protocol_version", sa.Text(), nullable=False),
        sa.Column("service_version", sa.Text(), nullable=False),
        sa.Column("hook_instance", sa.Text(), nullable=False),
        sa.Column("patient_key", sa.Text(), nullable=False),
        sa.Column("issued_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name="pk_card_ledger"),
    )
    op.create_index("ix_card_ledger_issued_at", "card_ledger", ["issued_at"])
    op.create_table(
        "card_suggestion",
        sa.Column("card_uuid", sa.Text(), nullable=False),
        sa.Column("suggestion_uuid", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("is_recommended", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_uuid"],
            ["card_ledger.uuid"],
            name="fk_card_suggestion_card_uuid_card_ledger",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("card_uuid", "suggestion_uuid", name="pk_card_suggestion"),
    )
    op.create_table(
        "feedback",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("outcome_ts", _timestamp(), nullable=False),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("reason_system", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.Text(), nullable=True),
        sa.Column("reason_display", sa.Text(), nullable=True),
        sa.Column("has_comment", sa.Boolean(), nullable=False),
        sa.CheckConstraint("outcome IN ('accepted', 'overridden')", name="ck_feedback_outcome"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("card", "outcome", "outcome_ts", name="uq_feedback_card_outcome_outcome_ts"),
    )
    op.create_index("ix_feedback_outcome_ts", "feedback", ["outcome_ts"])
    op.create_table(
        "jwt_replay",
        sa.Column("iss", sa.Text(), nullable=False),
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name="pk_jwt_replay"),
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
