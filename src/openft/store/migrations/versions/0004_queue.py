"""The one work queue: leased tasks with fencing tokens, the claim history, and events tagged with a token.

Work already waiting or running in a database made by the previous release becomes queue tasks, so an
upgraded server carries on with it (a running job's task starts with an expired lease and resumes).

Revision ID: 0004_queue
Revises: 0003_evals
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0004_queue"
down_revision = "0003_evals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_token", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
    )
    for column in ("seq", "kind", "subject_id", "organization_id", "state"):
        op.create_index(f"ix_queue_tasks_{column}", "queue_tasks", [column])
    op.create_table(
        "queue_claims",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("lease_token", sa.BigInteger, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("previous_owner", sa.String(128)),
        sa.Column("claimed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_queue_claims_task_id", "queue_claims", ["task_id"])
    with op.batch_alter_table("fine_tuning_job_events") as batch:
        batch.add_column(sa.Column("lease_token", sa.BigInteger))
    _enqueue_existing_work()


def _enqueue_existing_work() -> None:
    bind = op.get_bind()
    tasks = sa.table(
        "queue_tasks",
        *(sa.column(name) for name in ("id", "seq", "kind", "subject_id", "organization_id", "state",
                                       "lease_owner", "lease_token", "lease_expires_at", "attempts", "created_at")),
    )
    kinds = {"validating_files": "fine_tuning.validate", "queued": "fine_tuning.train", "running": "fine_tuning.train"}
    rows = []
    jobs = bind.execute(sa.text("SELECT id, seq, organization_id, status, worker_id FROM fine_tuning_jobs "
                                "WHERE status IN ('validating_files', 'queued', 'running')"))
    for job_id, seq, org_id, status, worker_id in jobs:
        rows.append((job_id, seq, kinds[status], org_id, worker_id))
    runs = bind.execute(sa.text("SELECT id, seq, organization_id, worker_id FROM eval_runs "
                                "WHERE status IN ('queued', 'running')"))
    for run_id, seq, org_id, worker_id in runs:
        rows.append((run_id, seq, "evaluation", org_id, worker_id))
    now = time.time()
    for index, (subject_id, seq, kind, org_id, worker_id) in enumerate(rows):
        # Work a worker held keeps its owner under an already expired lease: the next claim takes it over.
        bind.execute(tasks.insert().values(
            id=f"task-migrated{index:011d}", seq=seq, kind=kind, subject_id=subject_id, organization_id=org_id,
            state="leased" if worker_id else "ready", lease_owner=worker_id, lease_token=1 if worker_id else 0,
            lease_expires_at=0.0 if worker_id else None, attempts=1 if worker_id else 0, created_at=now,
        ))


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_job_events") as batch:
        batch.drop_column("lease_token")
    op.drop_table("queue_claims")
    op.drop_table("queue_tasks")
