"""A database made by the previous release (schema at 0003_evals, with data) upgrades in place: every row
survives, and work that was waiting or running becomes queue tasks that a worker picks up."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import select, text

from openft.jobs import queue
from openft.jobs.settings import QueueSettings
from openft.store.db import alembic_config, get_engine, session_scope, upgrade_database
from openft.store.queue_tables import QueueTask
from openft.store.tables import FineTuningJob, JobCheckpoint, JobEvent

PREVIOUS_RELEASE_HEAD = "0003_evals"


def build_previous_release_database() -> None:
    engine = get_engine()
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, PREVIOUS_RELEASE_HEAD)
    job = ("INSERT INTO fine_tuning_jobs (id, seq, organization_id, model, training_file, status, method, seed, "
           "result_files, created_at, attempts, worker_id, heartbeat_at, current_step) VALUES "
           "(:id, :seq, 'org-1', 'tiny-llama', 'file-1', :status, :method, 7, '[]', 1700000000, 1, :worker, :beat, "
           ":step)")
    with engine.begin() as db:
        db.execute(text("INSERT INTO organizations (id, name, created_at) VALUES ('org-1', 'acme', 1700000000)"))
        db.execute(text("INSERT INTO files (id, seq, organization_id, filename, purpose, bytes, created_at, status, "
                        "storage_key) VALUES ('file-1', 1, 'org-1', 'train.jsonl', 'fine-tune', 42, 1700000000, "
                        "'processed', 'blob_1')"))
        method = json.dumps({"type": "supervised"})
        for seq, (job_id, status, worker, step) in enumerate([
            ("ftjob-done", "succeeded", None, 30), ("ftjob-waiting", "queued", None, None),
            ("ftjob-checking", "validating_files", None, None), ("ftjob-training", "running", "old-host-1-x", 12),
        ]):
            db.execute(text(job), {"id": job_id, "seq": seq, "status": status, "method": method, "worker": worker,
                                   "beat": 1700000000.0 if worker else None, "step": step})
        db.execute(text("INSERT INTO fine_tuning_job_events (id, seq, job_id, created_at, level, message, type, data) "
                        "VALUES ('ftevent-1', 1, 'ftjob-done', 1700000000, 'info', 'Step 30/30', 'metrics', :data)"),
                   {"data": json.dumps({"step": 30, "train_loss": 0.5})})
        db.execute(text("INSERT INTO fine_tuning_checkpoints (id, seq, job_id, created_at, step_number, "
                        "fine_tuned_model_checkpoint, metrics, path) VALUES ('ftckpt_1', 1, 'ftjob-done', "
                        "1700000000, 30, 'ft:tiny:acme::x:ckpt-step-30', '{}', '/tmp/ckpt')"))
        db.execute(text("INSERT INTO eval_runs (id, seq, organization_id, status, config, created_at) VALUES "
                        "('eval-1', 9, 'org-1', 'queued', :config, 1700000000)"), {"config": json.dumps({"k": 3})})


def test_previous_release_database_upgrades_in_place(openft_home):
    build_previous_release_database()
    upgrade_database()

    with session_scope() as session:
        done = session.get(FineTuningJob, "ftjob-done")
        assert (done.status, done.current_step, done.seed, done.method) == ("succeeded", 30, 7, {"type": "supervised"})
        event = session.get(JobEvent, "ftevent-1")
        assert event.data == {"step": 30, "train_loss": 0.5} and event.lease_token is None
        assert session.get(JobCheckpoint, "ftckpt_1").fine_tuned_model_checkpoint == "ft:tiny:acme::x:ckpt-step-30"
        assert session.scalar(text("SELECT config FROM eval_runs WHERE id = 'eval-1'")) in ({"k": 3}, '{"k": 3}')
        tasks = {t.subject_id: t for t in session.scalars(select(QueueTask))}
    # Waiting and running work became queue tasks; finished work did not.
    assert {s: (t.kind, t.state) for s, t in tasks.items()} == {
        "ftjob-waiting": ("fine_tuning.train", "ready"),
        "ftjob-checking": ("fine_tuning.validate", "ready"),
        "ftjob-training": ("fine_tuning.train", "leased"),
        "eval-1": ("evaluation", "ready"),
    }
    # The job the old worker held is taken over at once (its lease is long expired), naming that worker.
    settings = QueueSettings(lease_seconds=30, max_per_organization=0)
    with session_scope() as session:
        leases = []
        while (lease := queue.claim(session, "new-worker", ["fine_tuning.train"], settings)) is not None:
            leases.append(lease)
    assert {(lease.subject_id, lease.previous_owner) for lease in leases} == {
        ("ftjob-waiting", None), ("ftjob-training", "old-host-1-x")
    }
