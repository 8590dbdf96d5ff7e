"""Per-organization quotas: bytes of uploaded files, and unfinished jobs (fine-tuning jobs + evaluations).

Both are off (0) unless the operator sets OPENFT_STORAGE_QUOTA_BYTES / OPENFT_MAX_ACTIVE_JOBS.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openft.config import Settings, get_settings
from openft.store import files as file_store
from openft.store.eval_tables import EvalRun
from openft.store.jobs import ACTIVE_STATUSES
from openft.store.tables import FineTuningJob

EVAL_ACTIVE_STATUSES = ("queued", "running")


class QuotaExceeded(Exception):
    """``kind``: "storage" or "active_jobs"; ``setting`` names the limit an operator can raise."""

    def __init__(self, kind: str, message: str, setting: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.setting, self.param = kind, message, setting, param


def storage_room(session: Session, organization_id: str, settings: Settings | None = None) -> int | None:
    """Bytes the organization may still upload, or None when there is no quota."""
    quota = (settings or get_settings()).storage_quota_bytes
    if not quota:
        return None
    return max(0, quota - file_store.bytes_stored(session, organization_id))


def check_storage(session: Session, organization_id: str, adding: int, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    room = storage_room(session, organization_id, settings)
    if room is not None and adding > room:
        used = settings.storage_quota_bytes - room
        raise QuotaExceeded(
            "storage",
            f"This upload ({adding:,} bytes) would exceed your organization's storage quota of "
            f"{settings.storage_quota_bytes:,} bytes (OPENFT_STORAGE_QUOTA_BYTES); {used:,} bytes are in use. "
            "Delete files you no longer need (DELETE /v1/files/{file_id}) and try again.",
            "OPENFT_STORAGE_QUOTA_BYTES",
            param="file",
        )


def active_jobs(session: Session, organization_id: str) -> int:
    jobs = session.scalar(
        select(func.count()).select_from(FineTuningJob).where(
            FineTuningJob.organization_id == organization_id, FineTuningJob.status.in_(ACTIVE_STATUSES)
        )
    )
    runs = session.scalar(
        select(func.count()).select_from(EvalRun).where(
            EvalRun.organization_id == organization_id, EvalRun.status.in_(EVAL_ACTIVE_STATUSES)
        )
    )
    return int(jobs or 0) + int(runs or 0)


def check_active_jobs(session: Session, organization_id: str, settings: Settings | None = None) -> None:
    limit = (settings or get_settings()).max_active_jobs
    if not limit:
        return
    active = active_jobs(session, organization_id)
    if active >= limit:
        raise QuotaExceeded(
            "active_jobs",
            f"Your organization has reached its limit of {limit} active jobs (OPENFT_MAX_ACTIVE_JOBS): {active} "
            "fine-tuning jobs and evaluations are validating, queued, running or paused. Wait for one to finish "
            "or cancel one, then try again.",
            "OPENFT_MAX_ACTIVE_JOBS",
        )
