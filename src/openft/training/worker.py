"""The worker: claims jobs from the database queue, validates them, and runs each in a child process.

Any number of workers (threads inside `openft serve`, or `openft worker` processes on several machines
sharing the database and artifact directory) can run at once; claiming is atomic. A worker that dies
stops heart-beating; another worker re-queues its job, which resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from sqlalchemy import update

from openft.config import get_settings
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.ids import random_token
from openft.store.tables import FineTuningJob
from openft.training.job_validation import validate_job

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 1.0
KILL_GRACE_SECONDS = 5.0


class Worker:
    def __init__(self, worker_id: str | None = None, poll_seconds: float = 1.0) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{random_token(6)}"
        self.poll_seconds = poll_seconds
        self.stop_event = threading.Event()
        self.child: subprocess.Popen | None = None

    # --- the loop ------------------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker %s started", self.worker_id)
        while not self.stop_event.is_set():
            try:
                did_work = self.run_once()
            except Exception:  # a bad job must not stop the worker; the job itself records the failure
                log.exception("worker iteration failed")
                did_work = False
            if not did_work:
                self.stop_event.wait(self.poll_seconds)

    def stop(self) -> None:
        self.stop_event.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()

    def run_once(self) -> bool:
        self.recover_stale_jobs()
        with session_scope() as session:
            job_id = job_store.claim_next(session, "validating_files", self.worker_id)
        if job_id is not None:
            validate_job(job_id, self.worker_id)
            return True
        with session_scope() as session:
            job_id = job_store.claim_next(session, "queued", self.worker_id)
        if job_id is not None:
            self.run_job(job_id)
            return True
        from openft.evals.jobs import claim_and_run_eval  # evaluations are durable jobs on the same workers

        return claim_and_run_eval(self.worker_id)

    def recover_stale_jobs(self) -> None:
        stale_after = get_settings().worker_stale_seconds
        with session_scope() as session:
            for job in job_store.stale_jobs(session, stale_after):
                checkpoint = job_store.latest_checkpoint(session, job.id)
                result = session.execute(
                    update(FineTuningJob)
                    .where(
                        FineTuningJob.id == job.id,
                        FineTuningJob.worker_id == job.worker_id,
                        FineTuningJob.heartbeat_at == job.heartbeat_at,
                    )
                    .values(status="queued" if job.status == "running" else job.status, worker_id=None, control=None)
                )
                if result.rowcount != 1:
                    continue
                where = f"checkpoint at step {checkpoint.step_number}" if checkpoint else "the beginning"
                job_store.add_event(
                    session,
                    job.id,
                    f"Worker {job.worker_id} stopped responding; the job was re-queued and resumes from {where}",
                    level="warn",
                )

    # --- one job -------------------------------------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        command = [sys.executable, "-m", "openft.training.job_runner", job_id, str(os.getpid())]
        self.child = subprocess.Popen(command, env=os.environ.copy())
        last_beat = 0.0
        killed_for_cancel = False
        try:
            while self.child.poll() is None:
                if self.stop_event.is_set():
                    # Server shutdown: stop the trainer; another start re-queues and resumes the job.
                    self._kill_child()
                    return
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_SECONDS:
                    last_beat = now
                    with session_scope() as session:
                        job_store.heartbeat(session, job_id, self.worker_id)
                        job = session.get(FineTuningJob, job_id)
                        cancelled = job is None or job.status == "cancelled"
                    if cancelled and not killed_for_cancel:
                        killed_for_cancel = True
                        self._kill_child()
                        break
                time.sleep(0.2)
        finally:
            exit_code = self.child.wait()
            self.child = None
        self._after_child(job_id, exit_code)

    def _kill_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _after_child(self, job_id: str, exit_code: int) -> None:
        """The child records normal outcomes itself; anything still 'running' here ended abnormally."""
        if self.stop_event.is_set():
            return
        with session_scope() as session:
            result = session.execute(
                update(FineTuningJob)
                .where(
                    FineTuningJob.id == job_id,
                    FineTuningJob.status == "running",
                    FineTuningJob.worker_id == self.worker_id,
                )
                .values(
                    status="failed",
                    finished_at=int(time.time()),
                    worker_id=None,
                    estimated_finish=None,
                    error={
                        "code": "training_process_died",
                        "message": f"The training process exited unexpectedly (exit code {exit_code}). "
                        "See the server log for details.",
                        "param": None,
                    },
                )
            )
            if result.rowcount == 1:
                job_store.add_event(session, job_id, f"Training process exited with code {exit_code}", level="error")
            session.execute(
                update(FineTuningJob)
                .where(FineTuningJob.id == job_id, FineTuningJob.worker_id == self.worker_id)
                .values(worker_id=None)
            )


def start_embedded_worker() -> Worker:
    worker = Worker()
    thread = threading.Thread(target=worker.run_forever, name="openft-worker", daemon=True)
    thread.start()
    return worker
