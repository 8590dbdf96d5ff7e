"""Distillations and the cache of teacher answers.

Revision ID: 0010_distill
Revises: 0008_merge_heads
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_distill"
down_revision = "0008_merge_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "distillations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("progress", sa.JSON),
        sa.Column("usage", sa.JSON),
        sa.Column("report", sa.JSON),
        sa.Column("output_file", sa.String(64)),
        sa.Column("error", sa.JSON),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("heartbeat_at", sa.Float),
    )
    for column in ("seq", "organization_id", "status"):
        op.create_index(f"ix_distillations_{column}", "distillations", [column])
    op.create_table(
        "distillation_cache",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("message", sa.JSON, nullable=False),
        sa.Column("finish_reason", sa.String(32)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("paid_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("organization_id", "cache_key", name="uq_distillation_cache_org_key"),
    )
    op.create_index("ix_distillation_cache_organization_id", "distillation_cache", ["organization_id"])
    op.create_index("ix_distillation_cache_paid_by", "distillation_cache", ["paid_by"])


def downgrade() -> None:
    op.drop_table("distillation_cache")
    op.drop_table("distillations")
