"""OpenAI Evals API: evals, runs, output items, and organizations' judge endpoints.

Revision ID: 0006_openai_evals
Revises: 0003_evals
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_openai_evals"
down_revision = "0003_evals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "openai_evals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("data_source_config", sa.JSON, nullable=False),
        sa.Column("testing_criteria", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_openai_evals_seq", "openai_evals", ["seq"])
    op.create_index("ix_openai_evals_organization_id", "openai_evals", ["organization_id"])
    op.create_table(
        "openai_eval_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("eval_id", sa.String(64), sa.ForeignKey("openai_evals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("data_source", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("result_counts", sa.JSON, nullable=False),
        sa.Column("per_testing_criteria_results", sa.JSON, nullable=False),
        sa.Column("per_model_usage", sa.JSON, nullable=False),
        sa.Column("error", sa.JSON),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("heartbeat_at", sa.Float),
    )
    for column in ("seq", "eval_id", "organization_id", "status"):
        op.create_index(f"ix_openai_eval_runs_{column}", "openai_eval_runs", [column])
    op.create_table(
        "openai_eval_output_items",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("openai_eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("eval_id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("datasource_item_id", sa.Integer, nullable=False),
        sa.Column("datasource_item", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("sample", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    for column in ("seq", "run_id", "eval_id", "organization_id", "status"):
        op.create_index(f"ix_openai_eval_output_items_{column}", "openai_eval_output_items", [column])
    op.create_table(
        "openai_judge_endpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("remote_model", sa.String(512), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=False),
        sa.Column("api_key", sa.String(4096)),
        sa.Column("api_key_env", sa.String(128)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("organization_id", "model", name="uq_openai_judge_endpoints_org_model"),
    )
    op.create_index("ix_openai_judge_endpoints_organization_id", "openai_judge_endpoints", ["organization_id"])


def downgrade() -> None:
    op.drop_table("openai_judge_endpoints")
    op.drop_table("openai_eval_output_items")
    op.drop_table("openai_eval_runs")
    op.drop_table("openai_evals")
