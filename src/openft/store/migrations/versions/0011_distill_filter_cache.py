"""The filter's verdicts on cached teacher answers, so a rerun makes no judge calls either.

Revision ID: 0011_distill_filter_cache
Revises: 0010_distill
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_distill_filter_cache"
down_revision = "0010_distill"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "distillation_verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("verdict_key", sa.String(64), nullable=False),
        sa.Column("answer_key", sa.String(64), nullable=False),
        sa.Column("keep", sa.Boolean, nullable=False),
        sa.Column("rule", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("judged_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("organization_id", "verdict_key", name="uq_distillation_verdicts_org_key"),
    )
    op.create_index("ix_distillation_verdicts_organization_id", "distillation_verdicts", ["organization_id"])
    op.create_index("ix_distillation_verdicts_answer_key", "distillation_verdicts", ["answer_key"])


def downgrade() -> None:
    op.drop_table("distillation_verdicts")
