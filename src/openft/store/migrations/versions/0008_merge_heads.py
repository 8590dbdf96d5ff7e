"""Join the four migrations that were written side by side on top of 0003_evals.

Revision ID: 0008_merge_heads
Revises: 0004_queue, 0005_hardening, 0006_openai_evals, 0007_moderation
"""

revision = "0008_merge_heads"
down_revision = ("0004_queue", "0005_hardening", "0006_openai_evals", "0007_moderation")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
