"""Moderation policy per organization (off | warn | block).

Revision ID: 0007_moderation
Revises: 0003_evals
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_moderation"
down_revision = "0003_evals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "moderation_policies",
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("moderation_policies")
