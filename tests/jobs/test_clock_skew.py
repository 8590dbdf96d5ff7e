"""A worker whose clock is 5 minutes off is not declared dead: leases expire by the database's clock.

(Before the queue, each worker wrote `time.time()` as its heartbeat and others compared it with theirs,
so a worker 5 minutes behind looked dead at once and its job ran twice.)
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from openft.store.db import session_scope
from openft.store.queue_tables import QueueClaim, QueueTask
from openft.store.tables import FineTuningJob
from tests.fixtures.server import stop_server
from tests.jobs.helpers import (
    TERMINAL,
    database_url,
    start_queue_server,
    start_worker,
    stop_workers,
    upload,
    wait_until,
    worker_logs,
)

SKEW_SECONDS = -300  # five minutes behind
LEASE_SECONDS = 6.0  # short, yet long enough that a loaded CI machine renews in time

SKEWED_CLOCK = f"""
import time as _time
_real_time, _real_time_ns = _time.time, _time.time_ns
_time.time = lambda: _real_time() + {SKEW_SECONDS}
_time.time_ns = lambda: _real_time_ns() + {SKEW_SECONDS} * 1_000_000_000
"""


@pytest.mark.slow
def test_a_worker_five_minutes_behind_keeps_its_job(tmp_path, tiny_model_dir):
    skew = tmp_path / "skewed-clock"
    skew.mkdir()
    (skew / "sitecustomize.py").write_text(SKEWED_CLOCK)
    skewed_env = {"PYTHONPATH": str(skew)}
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                           env=skewed_env, capture_output=True, text=True, check=True)
    assert abs(float(probe.stdout) - (time.time() + SKEW_SECONDS)) < 30, "the skew did not apply"

    (tmp_path / "home").mkdir()
    server = start_queue_server(tmp_path / "home", tiny_model_dir, OPENFT_WORKER_STALE_SECONDS=str(LEASE_SECONDS))
    url = database_url(server)
    workers = []
    try:
        client = server.client(server.create_key("skew"), timeout=60)
        job = client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=upload(client, 10),
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 6, "batch_size": 1}}},
        )
        workers.append(start_worker(server, "skewed", env={**skewed_env}))

        def skewed_worker_trains():
            with session_scope(url) as session:
                owner = session.scalar(select(QueueTask.lease_owner).where(
                    QueueTask.subject_id == job.id, QueueTask.kind == "fine_tuning.train", QueueTask.state == "leased"))
                step = session.get(FineTuningJob, job.id).current_step
            return owner is not None and (step or 0) >= 1 and owner
        skewed_owner = wait_until(skewed_worker_trains, 600, f"the skewed worker to train\n{worker_logs(server)}")
        # A worker with a correct clock waits for work the whole time; it must never take this job over.
        workers.append(start_worker(server, "honest"))
        wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status in TERMINAL, 900,
                   f"the job to finish\n{worker_logs(server)}", interval=0.5)
        finished = client.fine_tuning.jobs.retrieve(job.id)
        assert finished.status == "succeeded", finished.error
        with session_scope(url) as session:
            train_task = session.scalar(select(QueueTask.id).where(QueueTask.subject_id == job.id,
                                                                   QueueTask.kind == "fine_tuning.train"))
            owners = [c.owner for c in session.scalars(select(QueueClaim).where(QueueClaim.task_id == train_task))]
        assert owners == [skewed_owner], f"the job was taken from the skewed worker: {owners}"
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500)]
        assert not any("stopped responding" in m for m in messages)
        with session_scope(url) as session:
            row = session.get(FineTuningJob, job.id)
            assert row.started_at < row.created_at  # the skewed runner's own clock stamped its start
    finally:
        stop_workers(workers)
        stop_server(server)
