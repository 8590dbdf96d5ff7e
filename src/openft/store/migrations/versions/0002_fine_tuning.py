"""Fine-tuning: jobs (the durable queue), their events and checkpoints, fine-tuned models.

Revision ID: 0002_fine_tuning
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_fine_tuning"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("method", sa.JSON, nullable=False),
        sa.Column("resolved_hyperparameters", sa.JSON),
        sa.Column("suffix", sa.String(64)),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("integrations", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("fine_tuned_model", sa.String(512)),
        sa.Column("result_files", sa.JSON, nullable=False),
        sa.Column("trained_tokens", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("estimated_finish", sa.BigInteger),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("control", sa.String(16)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_dir", sa.Text),
        sa.Column("current_step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
    )
    op.create_index("ix_fine_tuning_jobs_seq", "fine_tuning_jobs", ["seq"])
    op.create_index("ix_fine_tuning_jobs_organization_id", "fine_tuning_jobs", ["organization_id"])
    op.create_index("ix_fine_tuning_jobs_status", "fine_tuning_jobs", ["status"])
    op.create_table(
        "fine_tuning_job_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_fine_tuning_job_events_seq", "fine_tuning_job_events", ["seq"])
    op.create_index("ix_fine_tuning_job_events_job_id", "fine_tuning_job_events", ["job_id"])
    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(512), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
    )
    op.create_index("ix_fine_tuning_checkpoints_seq", "fine_tuning_checkpoints", ["seq"])
    op.create_index("ix_fine_tuning_checkpoints_job_id", "fine_tuning_checkpoints", ["job_id"])
    op.create_index(
        "ix_fine_tuning_checkpoints_fine_tuned_model_checkpoint",
        "fine_tuning_checkpoints",
        ["fine_tuned_model_checkpoint"],
    )
    op.create_table(
        "fine_tuned_models",
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("base_model", sa.String(256), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    op.create_index("ix_fine_tuned_models_organization_id", "fine_tuned_models", ["organization_id"])
    op.create_index("ix_fine_tuned_models_job_id", "fine_tuned_models", ["job_id"])


def downgrade() -> None:
    op.drop_table("fine_tuned_models")
    op.drop_table("fine_tuning_checkpoints")
    op.drop_table("fine_tuning_job_events")
    op.drop_table("fine_tuning_jobs")
