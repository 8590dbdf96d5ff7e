"""Distillation jobs: creating (and queueing), finding (always within one organization), listing, cancelling,
and their wire shape. The runner is runner.py."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openft.evals.distill.requests import CheckedRequest, public_config
from openft.jobs import queue
from openft.store.distill_tables import Distillation
from openft.store.ids import new_id
from openft.store.pagination import Page, new_seq, paginate

QUEUE_KIND = "distillation"
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


def empty_progress(total: int | None) -> dict[str, Any]:
    return {"total": total, "answered": 0, "from_cache": 0, "failed": 0, "kept": 0, "dropped": 0}


def create(session: Session, organization_id: str, checked: CheckedRequest) -> Distillation:
    row = Distillation(
        id=new_id("distill-"), seq=new_seq(), organization_id=organization_id, status="queued",
        config=checked.config, distill_metadata=checked.metadata, progress=empty_progress(checked.n_prompts),
        usage=None, report=None, output_file=None, error=None, created_at=int(time.time()),
    )  # fmt: skip
    session.add(row)
    session.flush()
    queue.enqueue(session, QUEUE_KIND, row.id, organization_id)  # any worker takes it, like a fine-tuning job
    return row


def get(session: Session, organization_id: str, distillation_id: str) -> Distillation | None:
    row = session.get(Distillation, distillation_id)
    return row if row is not None and row.organization_id == organization_id else None


def list_page(session: Session, organization_id: str, *, after: str | None, limit: int) -> Page:
    stmt = select(Distillation).where(Distillation.organization_id == organization_id)
    return paginate(session, stmt, Distillation, after=after, limit=limit, order="desc")


def cancel(session: Session, row: Distillation) -> None:
    """Cancel a queued or running distillation; a worker running it stops its child at once. Answers already
    paid for stay in the cache, so a new distillation of the same prompts does not pay for them again."""
    row.status, row.finished_at = "cancelled", int(time.time())
    queue.withdraw(session, row.id)


def to_wire(row: Distillation) -> dict[str, Any]:
    return {
        "id": row.id, "object": "distillation", "status": row.status, "created_at": row.created_at,
        "started_at": row.started_at, "finished_at": row.finished_at, "error": row.error,
        "metadata": row.distill_metadata, **public_config(row.config), "progress": row.progress,
        "usage": row.usage, "output_file": row.output_file,
        "result": None if row.report is None else {k: v for k, v in row.report.items() if k in SUMMARY_KEYS},
    }  # fmt: skip


SUMMARY_KEYS = ("prompts", "kept", "dropped", "failed", "dropped_by_reason")


def report_to_wire(row: Distillation) -> dict[str, Any]:
    return {"object": "distillation.report", "distillation_id": row.id, "status": row.status,
            "output_file": row.output_file, "usage": row.usage, **(row.report or {})}  # fmt: skip


def teacher_cost_of_file(session: Session, organization_id: str, file_id: str) -> tuple[str, float] | None:
    """(distillation id, the teacher's cost in USD) when `file_id` is a distillation's output file, else None.
    The advisor adds it to a fine-tuned model's one-time cost."""
    row = session.scalars(select(Distillation).where(
        Distillation.organization_id == organization_id, Distillation.output_file == file_id)).first()
    if row is None or not row.usage or row.usage.get("cost_usd") is None:
        return None
    return row.id, float(row.usage["cost_usd"])
