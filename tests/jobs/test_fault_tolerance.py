"""Three `openft worker` processes, six jobs (fine-tuning and evaluations mixed). One worker is killed with
SIGKILL mid-training, another is frozen (SIGSTOP) past its lease and then resumed. All six jobs succeed,
no job ever runs in two places at once, and every checkpoint and event is complete.

Runs on SQLite (several processes on one machine) and, with OPENFT_TEST_DATABASE=postgresql, on PostgreSQL.
"Never in two places at once" is proved from what was written: every event a runner writes carries its
lease's fencing token, the fenced write refuses a stale token, and the events of each job, in the order
they were written, show tokens that never go back and steps that never overlap between leases.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from openft.store.db import session_scope
from openft.store.queue_tables import QueueClaim, QueueTask
from openft.store.tables import FineTuningJob, JobCheckpoint, JobEvent
from tests.evals.fakes import HELD_OUT, SYSTEM
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

LEASE_SECONDS = 4.0
EPOCHS, EXAMPLES = 6, 10  # 60 steps of batch 1, a checkpoint at the end of every epoch
# Every step takes at least this long (tests/jobs/slow_steps), and a job is faulted in its first third, so it
# still has 40 steps (6 s, past the lease) to go: on a fast machine the tiny model would otherwise finish
# inside the lease and nothing would be taken over.
MIN_STEP_SECONDS = 0.15
SLOW_STEPS = {"PYTHONPATH": str(Path(__file__).parent / "slow_steps"),
              "OPENFT_TEST_MIN_STEP_SECONDS": str(MIN_STEP_SECONDS)}


def eval_file(client) -> str:
    rows = [{"messages": [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": a}]}
            for t, a in HELD_OUT[:4]]
    data = "\n".join(json.dumps(r) for r in rows).encode() + b"\n"
    return client.files.create(file=("held_out.jsonl", io.BytesIO(data)), purpose="evals").id


def worker_pid(owner: str | None) -> int | None:
    """Worker ids are ``host-PID-random``."""
    return int(owner.rsplit("-", 2)[-2]) if owner else None


def holders(url: str, job_ids: list[str]) -> dict[str, int]:
    """job id -> pid of the worker leasing its training right now (jobs past their first steps, in their first
    third)."""
    with session_scope(url) as session:
        rows = session.execute(
            select(QueueTask.subject_id, QueueTask.lease_owner)
            .join(FineTuningJob, FineTuningJob.id == QueueTask.subject_id)
            .where(QueueTask.state == "leased", QueueTask.kind == "fine_tuning.train",
                   QueueTask.subject_id.in_(job_ids), FineTuningJob.current_step >= 3,
                   FineTuningJob.current_step <= EPOCHS * EXAMPLES // 3)
        ).all()
    return {job_id: worker_pid(owner) for job_id, owner in rows}


@pytest.mark.slow
def test_workers_killed_and_frozen_lose_nothing_and_never_run_a_job_twice(tmp_path, tiny_model_dir):
    server = start_queue_server(tmp_path, tiny_model_dir, OPENFT_WORKER_STALE_SECONDS=str(LEASE_SECONDS))
    url = database_url(server)
    workers = [start_worker(server, f"worker{i}", env=SLOW_STEPS) for i in range(3)]
    frozen: int | None = None
    try:
        key = server.create_key("faults")
        client = server.client(key, timeout=60)
        api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        hyper = {"n_epochs": EPOCHS, "batch_size": 1}
        jobs = [
            client.fine_tuning.jobs.create(
                model="tiny-llama", training_file=upload(client, EXAMPLES, tag=f"j{i}"), seed=i,
                method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
            ).id
            for i in range(4)
        ]
        held_out = eval_file(client)
        evals = []
        for _ in range(2):
            created = api.post("/evaluations", json={"eval_file": held_out, "model": "tiny-llama", "max_tokens": 4,
                                                     "strategies": ["zero-shot"]})
            assert created.status_code == 200, created.text
            evals.append(created.json()["id"])

        # SIGKILL a worker that is training; freeze (SIGSTOP) another that is training, past its lease.
        busy = wait_until(lambda: len(set(holders(url, jobs).values())) >= 2 and holders(url, jobs), 900,
                          f"two workers training at once\n{worker_logs(server)}", interval=0.1)
        (killed_job, killed_pid), (frozen_job, frozen) = list(busy.items())[:2]
        os.kill(killed_pid, signal.SIGKILL)
        os.kill(frozen, signal.SIGSTOP)
        time.sleep(LEASE_SECONDS * 2.5)  # well past the lease and the takeover grace
        os.kill(frozen, signal.SIGCONT)
        frozen_pid, frozen = frozen, None

        def all_done():
            statuses = [client.fine_tuning.jobs.retrieve(j).status for j in jobs]
            statuses += [api.get(f"/evaluations/{r}").json()["status"] for r in evals]
            return all(s in TERMINAL for s in statuses) and statuses
        statuses = wait_until(all_done, 1200, f"all six jobs to finish\n{worker_logs(server)}", interval=0.5)
        assert statuses == ["succeeded"] * 6, (statuses, [client.fine_tuning.jobs.retrieve(j).error for j in jobs],
                                               worker_logs(server))

        with session_scope(url) as session:
            claims = {task_id: [(c.lease_token, c.owner, c.previous_owner) for c in rows]
                      for task_id, rows in _claims_by_task(session).items()}
            tasks = {t.id: t for t in session.scalars(select(QueueTask))}
            takeovers = {tasks[t].subject_id: c for t, c in claims.items() if len(c) > 1}
            # The killed and the frozen worker's jobs were both taken over by another worker.
            for job_id, pid in ((killed_job, killed_pid), (frozen_job, frozen_pid)):
                history = takeovers.get(job_id)
                assert history, f"{job_id} (held by pid {pid}) was never taken over: {claims}"
                assert worker_pid(history[0][1]) == pid and history[1][2] == history[0][1]
                if job_id in jobs:  # the takeover event names the worker that stopped responding
                    messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
                    assert any(m.startswith(f"Worker {history[0][1]} stopped responding") for m in messages)
            for history in claims.values():
                assert [token for token, _, _ in history] == list(range(1, len(history) + 1))
            for job_id in jobs:
                _assert_one_runner_at_a_time(session, job_id)
        frozen_log = (server.home / f"worker{_index_of(workers, frozen_pid)}.log").read_text()
        assert "lost" in frozen_log, frozen_log  # on waking it found its lease gone, and its child stopped
        assert not list(Path(server.home).glob("**/core*"))
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        stop_workers(workers)
        stop_server(server)


def _index_of(workers, pid: int) -> int:
    return next(i for i, w in enumerate(workers) if w.pid == pid)


def _claims_by_task(session) -> dict[str, list[QueueClaim]]:
    out: dict[str, list[QueueClaim]] = {}
    for claim in session.scalars(select(QueueClaim).order_by(QueueClaim.id)):
        out.setdefault(claim.task_id, []).append(claim)
    return out


def _assert_one_runner_at_a_time(session, job_id: str) -> None:
    events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))
    tokens = [e.lease_token for e in events if e.lease_token is not None]
    assert tokens == sorted(tokens), f"{job_id}: a write from an older lease landed after a newer one: {tokens}"
    # Within each lease the steps go up one by one; a later lease resumes from a checkpoint of an earlier one.
    by_token: dict[int, list[int]] = {}
    for event in events:
        if event.type == "metrics":
            by_token.setdefault(event.lease_token, []).append(int(event.data["step"]))
    total = EPOCHS * EXAMPLES
    covered: set[int] = set()
    for token, steps in by_token.items():
        assert steps == list(range(steps[0], steps[-1] + 1)), f"{job_id} lease {token}: steps {steps}"
        resumed_at_checkpoint = steps[0] == 1 or (steps[0] - 1) % EXAMPLES == 0
        assert resumed_at_checkpoint, f"{job_id}: lease {token} did not resume at a checkpoint"
        covered.update(steps)
    missing = sorted(set(range(1, total + 1)) - covered)
    assert not missing, f"{job_id}: steps never recorded: {missing}"
    # Every checkpoint recorded exists on disk, the last one at the final step; the job's model is there.
    checkpoints = list(session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)))
    assert max(c.step_number for c in checkpoints) == total
    assert all(Path(c.path).is_dir() for c in checkpoints)
    job = session.get(FineTuningJob, job_id)
    assert job.status == "succeeded" and job.current_step == total
    assert job.finished_at - job.created_at >= int((total - 1) * MIN_STEP_SECONDS), "the slow-steps hook did not load"
    messages = [e.message for e in events]
    assert messages[-1] == "The job has successfully completed"
    assert "Worker None" not in " ".join(messages)
