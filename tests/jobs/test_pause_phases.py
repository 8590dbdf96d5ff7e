"""A pause sent at any moment of a job's start is honoured (the job ends `paused`) or refused with a 400,
never acknowledged and then dropped (issue 13: `job_runner.py` used to reset the request at start).

The phases: validating files, queued, just claimed by a worker, loading (running, no step yet), first step.
"""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select

from openft.jobs import queue
from openft.jobs.settings import QueueSettings
from openft.store.db import session_scope
from openft.store.queue_tables import QueueTask
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

SETTLE_S = 600  # generous: a loaded 2-core machine imports torch slowly


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    live = start_queue_server(tmp_path_factory.mktemp("pause-phases"), tiny_model_dir)
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def client(server):
    return server.client(server.create_key("pauser"), timeout=60)


def create_job(client, tag: str, epochs: int = 3):
    return client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=upload(client, tag=tag),
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": 1}}},
    )


def status(client, job_id: str) -> str:
    return client.fine_tuning.jobs.retrieve(job_id).status


def settles_paused(client, server, job_id: str) -> None:
    ended = wait_until(lambda: (s := status(client, job_id)) in TERMINAL | {"paused"} and s, SETTLE_S,
                       f"job {job_id} to settle after a pause\n{worker_logs(server)}", interval=0.2)
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=200)]
    assert ended == "paused", (ended, messages)


def job_row(server, job_id: str) -> FineTuningJob:
    with session_scope(database_url(server)) as session:
        return session.get(FineTuningJob, job_id)


def train_task_waits(server, job_id: str) -> bool:
    with session_scope(database_url(server)) as session:
        return queue.active_task(session, job_id, "fine_tuning.train") is not None


def test_pause_while_validating_files(client, server):
    job = create_job(client, "v")
    assert job.status == "validating_files"  # no worker yet: the job waits in this phase
    assert client.fine_tuning.jobs.pause(job.id).status == "validating_files"  # acknowledged...
    workers = [start_worker(server, "validate-worker", "--kind", "fine_tuning.validate")]
    try:
        settles_paused(client, server, job.id)  # ...and honoured once the files are validated
    finally:
        stop_workers(workers)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("Files validated" in m for m in events), events


def test_pause_while_queued_and_just_claimed(client, server):
    queued, claimed = create_job(client, "q"), create_job(client, "c")
    workers = [start_worker(server, "validate-only", "--kind", "fine_tuning.validate")]
    try:
        for job in (queued, claimed):
            wait_until(lambda j=job: train_task_waits(server, j.id), SETTLE_S, f"{job.id} to be queued for training")
    finally:
        stop_workers(workers)
    # Queued: nobody holds it; it leaves the queue at once.
    assert client.fine_tuning.jobs.pause(queued.id).status == "paused"
    # Just claimed: a worker holds the lease, its child has not started training yet.
    settings = QueueSettings(lease_seconds=60, max_per_organization=0)
    with session_scope(database_url(server)) as session:
        lease = queue.claim(session, "test-claimer", ["fine_tuning.train"], settings)
    assert lease is not None and lease.subject_id == claimed.id  # the paused job is no longer claimable
    assert client.fine_tuning.jobs.pause(claimed.id).status == "paused"
    with session_scope(database_url(server)) as session:
        assert not queue.renew(session, lease, settings), "the claimer learns its lease is gone (its child stops)"
        assert session.scalar(select(QueueTask.state).where(QueueTask.id == lease.task_id)) == "withdrawn"
    # The pause stuck: resuming puts it back on the queue, where a worker would find it.
    assert client.fine_tuning.jobs.resume(claimed.id).status == "queued"
    with session_scope(database_url(server)) as session:
        assert queue.active_task(session, claimed.id, "fine_tuning.train") is not None


def test_pause_while_loading_and_at_the_first_step(client, server):
    loading, first_step = create_job(client, "l"), create_job(client, "s", epochs=4)
    workers = [start_worker(server, "phase-worker")]
    try:
        # Loading: the runner marked it running, no step has been recorded yet.
        wait_until(lambda: (row := job_row(server, loading.id)).status == "running" and row.current_step is None,
                   SETTLE_S, f"the job to start loading\n{worker_logs(server)}", interval=0.02)
        client.fine_tuning.jobs.pause(loading.id)
        settles_paused(client, server, loading.id)

        # First step: the first metrics are in.
        wait_until(lambda: (job_row(server, first_step.id).current_step or 0) >= 1, SETTLE_S,
                   f"the first step\n{worker_logs(server)}", interval=0.02)
        client.fine_tuning.jobs.pause(first_step.id)
        settles_paused(client, server, first_step.id)
        assert list(client.fine_tuning.jobs.checkpoints.list(first_step.id)), "a paused job keeps a checkpoint"

        client.fine_tuning.jobs.resume(first_step.id)
        wait_until(lambda: status(client, first_step.id) in TERMINAL, SETTLE_S, f"resumed job\n{worker_logs(server)}")
        done = client.fine_tuning.jobs.retrieve(first_step.id)
        assert done.status == "succeeded", done.error
    finally:
        stop_workers(workers)


def test_pausing_an_ended_job_is_refused_clearly(client, server):
    job = create_job(client, "f")
    client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.pause(job.id)
    assert refused.value.status_code == 400 and "only running or queued jobs can be paused" in refused.value.message
