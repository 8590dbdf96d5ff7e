"""Evaluation runs.

Revision ID: 0003_evals
Revises: 0002_fine_tuning
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_evals"
down_revision = "0002_fine_tuning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("progress", sa.JSON),
        sa.Column("results", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("heartbeat_at", sa.Float),
    )
    op.create_index("ix_eval_runs_seq", "eval_runs", ["seq"])
    op.create_index("ix_eval_runs_organization_id", "eval_runs", ["organization_id"])
    op.create_index("ix_eval_runs_status", "eval_runs", ["status"])


def downgrade() -> None:
    op.drop_table("eval_runs")
