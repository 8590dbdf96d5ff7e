"""Evals, runs and output items of OpenAI's Evals API: creating, finding (always within one organization),
listing, cancelling and deleting them. The run executor is openai_runs.py."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from openft.store.ids import new_id
from openft.store.openai_eval_tables import OpenAIEval, OpenAIEvalOutputItem, OpenAIEvalRun
from openft.store.pagination import Page, new_seq, paginate

QUEUE_KIND = "openai_eval_run"
FINAL_STATUSES = ("completed", "canceled", "failed")


def empty_counts() -> dict[str, int]:
    return {"total": 0, "passed": 0, "failed": 0, "errored": 0}


def create_eval(session: Session, organization_id: str, *, name: str | None, data_source_config: dict[str, Any],
                testing_criteria: list[dict[str, Any]], metadata: dict[str, str] | None) -> OpenAIEval:
    now = int(time.time())
    row = OpenAIEval(
        id=new_id("eval_"), seq=new_seq(), organization_id=organization_id, name=name or "",
        data_source_config=data_source_config, testing_criteria=testing_criteria, eval_metadata=metadata,
        created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def get_eval(session: Session, organization_id: str, eval_id: str) -> OpenAIEval | None:
    row = session.get(OpenAIEval, eval_id)
    return row if row is not None and row.organization_id == organization_id else None


def list_evals(session: Session, organization_id: str, *, after: str | None, limit: int, order: str,
               order_by: str = "created_at") -> Page:
    stmt = select(OpenAIEval).where(OpenAIEval.organization_id == organization_id)
    if order_by == "updated_at":  # small lists; re-sorted after the cursor page by update time
        rows = list(session.scalars(stmt))
        rows.sort(key=lambda r: (r.updated_at, r.seq), reverse=order == "desc")
        start = next((i + 1 for i, r in enumerate(rows) if r.id == after), 0) if after else 0
        return Page(rows=rows[start : start + limit], has_more=start + limit < len(rows))
    return paginate(session, stmt, OpenAIEval, after=after, limit=limit, order=order)


def delete_eval(session: Session, row: OpenAIEval) -> None:
    run_ids = select(OpenAIEvalRun.id).where(OpenAIEvalRun.eval_id == row.id)
    for run_id in session.scalars(run_ids).all():  # the task rows first: queue.withdraw says why
        _withdraw(session, run_id)
    session.execute(delete(OpenAIEvalOutputItem).where(OpenAIEvalOutputItem.run_id.in_(run_ids)))
    session.execute(delete(OpenAIEvalRun).where(OpenAIEvalRun.eval_id == row.id))
    session.delete(row)


def create_run(session: Session, row: OpenAIEval, *, name: str | None, model: str, data_source: dict[str, Any],
               metadata: dict[str, str] | None) -> OpenAIEvalRun:
    run = OpenAIEvalRun(
        id=new_id("evalrun_"), seq=new_seq(), eval_id=row.id, organization_id=row.organization_id,
        name=name or f"{model} run", status="queued", model=model, data_source=data_source,
        run_metadata=metadata, result_counts=empty_counts(), per_testing_criteria_results=[], per_model_usage=[],
        error=None, created_at=int(time.time()),
    )  # fmt: skip
    session.add(run)
    session.flush()
    _enqueue(session, run)
    return run


def _enqueue(session: Session, run: OpenAIEvalRun) -> None:
    """A durable task on the shared queue (openft.jobs), claimed by any worker like a fine-tuning job."""
    from openft.jobs import queue

    queue.enqueue(session, QUEUE_KIND, run.id, run.organization_id)


def _withdraw(session: Session, run_id: str) -> None:
    from openft.jobs import queue

    queue.withdraw(session, run_id)


def get_run(session: Session, organization_id: str, eval_id: str, run_id: str) -> OpenAIEvalRun | None:
    run = session.get(OpenAIEvalRun, run_id)
    if run is None or run.organization_id != organization_id or run.eval_id != eval_id:
        return None
    return run


def list_runs(session: Session, organization_id: str, eval_id: str, *, after: str | None, limit: int, order: str,
              status: str | None) -> Page:
    stmt = select(OpenAIEvalRun).where(OpenAIEvalRun.organization_id == organization_id,
                                       OpenAIEvalRun.eval_id == eval_id)  # fmt: skip
    if status is not None:
        stmt = stmt.where(OpenAIEvalRun.status == status)
    return paginate(session, stmt, OpenAIEvalRun, after=after, limit=limit, order=order)


def cancel_run(session: Session, run: OpenAIEvalRun) -> None:
    run.status, run.finished_at = "canceled", int(time.time())
    _withdraw(session, run.id)


def delete_run(session: Session, run: OpenAIEvalRun) -> None:
    _withdraw(session, run.id)
    session.execute(delete(OpenAIEvalOutputItem).where(OpenAIEvalOutputItem.run_id == run.id))
    session.delete(run)


def list_output_items(session: Session, run: OpenAIEvalRun, *, after: str | None, limit: int, order: str,
                      status: str | None) -> Page:
    stmt = select(OpenAIEvalOutputItem).where(OpenAIEvalOutputItem.run_id == run.id,
                                              OpenAIEvalOutputItem.organization_id == run.organization_id)
    if status is not None:
        stmt = stmt.where(OpenAIEvalOutputItem.status == status)
    return paginate(session, stmt, OpenAIEvalOutputItem, after=after, limit=limit, order=order)


def get_output_item(session: Session, run: OpenAIEvalRun, item_id: str) -> OpenAIEvalOutputItem | None:
    item = session.get(OpenAIEvalOutputItem, item_id)
    return item if item is not None and item.run_id == run.id else None


def count_runs(session: Session, eval_id: str) -> int:
    return session.scalar(select(func.count()).select_from(OpenAIEvalRun).where(OpenAIEvalRun.eval_id == eval_id))
