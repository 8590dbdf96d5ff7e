"""Hardening: a file's delete is recorded before its bytes go; stored third-party API keys are encrypted.

Revision ID: 0005_hardening
Revises: 0003_evals
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005_hardening"
down_revision = "0003_evals"
branch_labels = None
depends_on = None

ENDPOINTS = ("external", "judge")


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("deleted_at", sa.BigInteger, nullable=True))
    _seal_stored_keys()


def _seal_stored_keys() -> None:
    """Evaluation runs created before encryption hold their endpoints' API keys in plain text: seal them."""
    from openft.store.secrets import is_sealed, seal

    connection = op.get_bind()
    runs = sa.table("eval_runs", sa.column("id", sa.String), sa.column("config", sa.JSON))
    for run_id, config in connection.execute(sa.select(runs.c.id, runs.c.config)).all():
        config = json.loads(config) if isinstance(config, str) else dict(config or {})
        changed = False
        for name in ENDPOINTS:
            endpoint = config.get(name)
            key = endpoint.get("api_key") if isinstance(endpoint, dict) else None
            if isinstance(key, str) and key and not is_sealed(key):
                config[name] = {**endpoint, "api_key": seal(key)}
                changed = True
        if changed:
            connection.execute(sa.update(runs).where(runs.c.id == run_id).values(config=config))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("deleted_at")
