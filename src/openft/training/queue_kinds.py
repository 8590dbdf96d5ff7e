"""Fine-tuning's kinds of queue work: `fine_tuning.validate` (the validating_files step) and
`fine_tuning.train`. Importing this module registers them (openft.jobs.registry.KIND_MODULES)."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session

from openft.jobs import queue
from openft.jobs.lease import Lease
from openft.jobs.registry import register_kind
from openft.store import jobs as job_store
from openft.store.tables import FineTuningJob

VALIDATE = "fine_tuning.validate"
TRAIN = "fine_tuning.train"

register_kind(
    VALIDATE,
    run="openft.training.queue_kinds:run_validation",
    on_crash="openft.training.queue_kinds:validation_crashed",
)
register_kind(TRAIN, run="openft.training.job_runner:run_job", on_crash="openft.training.job_runner:on_crash")


def run_validation(lease: Lease) -> int:
    from openft.training.job_validation import validate_job  # tokenizers: only in the child

    with lease.session() as session:
        job = session.get(FineTuningJob, lease.subject_id)
        if job is None or job.status != "validating_files":
            _after_validation(session, lease, job)
            return 0
        # validate_job's own writes require the job to be held by exactly this lease.
        job.worker_id = lease.holder
        if lease.previous_owner:
            job_store.add_event(session, job.id, f"Worker {lease.previous_owner} stopped responding; "
                                "file validation was re-queued and starts again", level="warn")
    validate_job(lease.subject_id, lease.holder)
    with lease.session() as session:
        _after_validation(session, lease, session.get(FineTuningJob, lease.subject_id))
    return 0


def _after_validation(session: Session, lease: Lease, job: FineTuningJob | None) -> None:
    """Queue the training, or honour a pause sent while the files were being validated."""
    lease.finish(session)
    if job is None or job.status != "queued":
        return
    if job.control == "pause":
        job.status, job.control = "paused", None
        job_store.add_event(session, job.id, "Fine-tuning job paused before it started; resume it to start")
        return
    queue.enqueue(session, TRAIN, job.id, job.organization_id)


def validation_crashed(lease: Lease, session: Session, exit_code: int) -> None:
    job = session.get(FineTuningJob, lease.subject_id)
    if job is None or job.status != "validating_files":
        return
    message = f"The file validation process exited unexpectedly (exit code {exit_code})."
    job.status, job.worker_id, job.finished_at = "failed", None, int(time.time())
    job.error = {"code": "validation_process_died", "message": message, "param": None}
    job_store.add_event(session, job.id, message, level="error")
