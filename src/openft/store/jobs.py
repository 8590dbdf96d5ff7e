"""Fine-tuning jobs, their events and checkpoints in the database.

The work itself (validating files, training) is queued and leased through openft.jobs; the job row
carries the user-visible status.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openft.store.ids import new_id
from openft.store.pagination import Page, new_seq, paginate
from openft.store.tables import FineTunedModel, FineTuningJob, JobCheckpoint, JobEvent

ACTIVE_STATUSES = ("validating_files", "queued", "running", "paused")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


def get_job(session: Session, organization_id: str | None, job_id: str) -> FineTuningJob | None:
    job = session.get(FineTuningJob, job_id)
    if job is None or (organization_id is not None and job.organization_id != organization_id):
        return None
    return job


def list_jobs(
    session: Session, organization_id: str, *, after: str | None, limit: int, metadata: dict[str, str]
) -> Page:
    stmt = select(FineTuningJob).where(FineTuningJob.organization_id == organization_id)
    if metadata:
        # JSON filtering differs between SQLite and PostgreSQL; filter the (small) org list in Python.
        matching = [
            job.id
            for job in session.scalars(stmt)
            if all((job.job_metadata or {}).get(k) == v for k, v in metadata.items())
        ]
        stmt = stmt.where(FineTuningJob.id.in_(matching))
    return paginate(session, stmt, FineTuningJob, after=after, limit=limit, order="desc")


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(
        id=new_id("ftevent-"),
        seq=new_seq(),
        job_id=job_id,
        created_at=int(time.time()),
        level=level,
        message=message,
        type=type,
        data=data,
        # Written inside a runner's fenced session: the event carries the lease's fencing token.
        lease_token=session.info.get("lease_token"),
    )
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, job_id: str, *, after: str | None, limit: int) -> Page:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    return paginate(session, stmt, JobEvent, after=after, limit=limit, order="desc")


def list_checkpoints(session: Session, job_id: str, *, after: str | None, limit: int) -> Page:
    stmt = select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)
    return paginate(session, stmt, JobCheckpoint, after=after, limit=limit, order="desc")


def latest_checkpoint(session: Session, job_id: str) -> JobCheckpoint | None:
    return session.scalars(
        select(JobCheckpoint).where(JobCheckpoint.job_id == job_id).order_by(JobCheckpoint.step_number.desc())
    ).first()


def forget_missing_checkpoints(session: Session, job_id: str, existing_paths: set[str]) -> None:
    """The trainer keeps the newest checkpoints on disk; drop records of the ones it rotated out."""
    session.execute(
        delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.path.not_in(existing_paths))
    )


def get_fine_tuned_model(session: Session, organization_id: str, name: str) -> FineTunedModel | None:
    row = session.get(FineTunedModel, name)
    if row is None or row.organization_id != organization_id:
        return None
    return row


def get_checkpoint_by_model(session: Session, organization_id: str, name: str) -> JobCheckpoint | None:
    row = session.scalars(select(JobCheckpoint).where(JobCheckpoint.fine_tuned_model_checkpoint == name)).first()
    if row is None:
        return None
    job = session.get(FineTuningJob, row.job_id)
    return row if job is not None and job.organization_id == organization_id else None


def list_fine_tuned_models(session: Session, organization_id: str) -> list[FineTunedModel]:
    return list(
        session.scalars(
            select(FineTunedModel)
            .where(FineTunedModel.organization_id == organization_id)
            .order_by(FineTunedModel.created_at)
        )
    )
