"""Queue operations: enqueue, claim a lease, renew it, finish or withdraw a task.

Claims take a lease with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (claimers also serialise on an
advisory lock so the per-organization cap is exact) and with a conditional UPDATE on SQLite, after
first taking SQLite's single write lock. Expiry is always compared with the database's clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from openft.jobs.clock import db_now
from openft.jobs.lease import Lease
from openft.jobs.settings import QueueSettings, queue_settings
from openft.store.ids import new_id
from openft.store.pagination import new_seq
from openft.store.queue_tables import QueueClaim, QueueTask

ACTIVE_STATES = ("ready", "leased")
_CLAIM_LOCK_KEY = 0x6F70656E6674  # "openft": one advisory lock for claimers on PostgreSQL
_CANDIDATES = 100


def enqueue(session: Session, kind: str, subject_id: str, organization_id: str) -> QueueTask:
    """Add work; a subject has at most one active task of a kind, so enqueueing twice is harmless."""
    existing = active_task(session, subject_id, kind)
    if existing is not None:
        return existing
    task = QueueTask(
        id=new_id("task-"), seq=new_seq(), kind=kind, subject_id=subject_id, organization_id=organization_id,
        state="ready", lease_token=0, attempts=0, created_at=time.time(),
    )
    session.add(task)
    session.flush()
    return task


def active_task(session: Session, subject_id: str, kind: str | None = None) -> QueueTask | None:
    stmt = select(QueueTask).where(QueueTask.subject_id == subject_id, QueueTask.state.in_(ACTIVE_STATES))
    if kind is not None:
        stmt = stmt.where(QueueTask.kind == kind)
    return session.scalars(stmt.order_by(QueueTask.seq)).first()


def withdraw(session: Session, subject_id: str) -> int:
    """Take a subject's work off the queue (cancel, pause): a worker holding it stops its child at once.

    Call it before writing the subject's rows. The caller's pending changes to them are not flushed first:
    a runner's fenced transaction locks the task row and then the subject's rows, so locking them the other
    way round could deadlock with it (PostgreSQL would then fail the cancel with an error).
    """
    with session.no_autoflush:
        result = session.execute(
            update(QueueTask)
            .where(QueueTask.subject_id == subject_id, QueueTask.state.in_(ACTIVE_STATES))
            .values(state="withdrawn", finished_at=time.time())
        )
    return result.rowcount


def take_write_lock(session: Session) -> None:
    """Serialise with other writers before reading: on PostgreSQL an advisory lock, on SQLite its write lock.

    On SQLite a transaction that reads first and writes later can fail with 'database is locked' when
    another process wrote in between; a write statement first waits for the lock (busy_timeout) instead.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_LOCK_KEY})
    else:
        session.execute(update(QueueTask).where(QueueTask.id.is_(None)).values(seq=QueueTask.seq))


def claim(
    session: Session, worker_id: str, kinds: Sequence[str], settings: QueueSettings | None = None
) -> Lease | None:
    """Lease the next task of one of ``kinds``: the organization holding the fewest leases goes first,
    then the oldest task; an expired lease is taken over once its grace period has passed. Commits."""
    settings = settings or queue_settings()
    take_write_lock(session)
    now = db_now()
    held = Counter(
        dict(
            session.execute(
                select(QueueTask.organization_id, func.count())
                .where(QueueTask.state == "leased", QueueTask.lease_expires_at > now)
                .group_by(QueueTask.organization_id)
            ).all()
        )
    )
    expired_before = now - settings.takeover_grace_seconds
    stmt = (
        select(QueueTask)
        .where(
            QueueTask.kind.in_(list(kinds)),
            (QueueTask.state == "ready")
            | ((QueueTask.state == "leased") & (QueueTask.lease_expires_at < expired_before)),
        )
        .order_by(QueueTask.seq)
        .limit(_CANDIDATES)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    candidates = list(session.scalars(stmt))
    cap = settings.max_per_organization
    candidates = [t for t in candidates if not cap or held[t.organization_id] < cap]
    candidates.sort(key=lambda t: (held[t.organization_id], t.seq))
    for task in candidates:
        previous_owner = task.lease_owner if task.state == "leased" else None
        token = task.lease_token + 1
        result = session.execute(
            update(QueueTask)
            .where(QueueTask.id == task.id, QueueTask.state == task.state, QueueTask.lease_token == task.lease_token)
            .values(
                state="leased", lease_owner=worker_id, lease_token=token, attempts=QueueTask.attempts + 1,
                lease_expires_at=db_now() + settings.lease_seconds,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            continue
        session.add(QueueClaim(task_id=task.id, lease_token=token, owner=worker_id,
                               previous_owner=previous_owner, claimed_at=session.scalar(select(db_now()))))
        session.commit()
        return Lease(task_id=task.id, kind=task.kind, subject_id=task.subject_id, token=token,
                     owner=worker_id, previous_owner=previous_owner)
    session.commit()
    return None


def renew(session: Session, lease: Lease, settings: QueueSettings | None = None) -> bool:
    """Extend a lease that still holds (token unchanged, not expired, not withdrawn). False: it is lost."""
    settings = settings or queue_settings()
    result = session.execute(
        update(QueueTask)
        .where(*lease.holds_clause())
        .values(lease_expires_at=db_now() + settings.lease_seconds)
    )
    session.commit()
    return result.rowcount == 1


def finished_under(session: Session, lease: Lease) -> bool:
    """Whether the runner holding ``lease`` marked its task finished (so a failed renewal is no loss)."""
    state = session.scalar(
        select(QueueTask.state).where(QueueTask.id == lease.task_id, QueueTask.lease_token == lease.token)
    )
    return state == "done"


def release(session: Session, lease: Lease) -> bool:
    """Give a held task back to the queue now (worker shutdown): another worker may claim it at once."""
    result = session.execute(
        update(QueueTask).where(*lease.holds_clause()).values(state="ready", lease_owner=None, lease_expires_at=None)
    )
    session.commit()
    return result.rowcount == 1


def claims(session: Session, task_id: str) -> list[QueueClaim]:
    return list(session.scalars(select(QueueClaim).where(QueueClaim.task_id == task_id).order_by(QueueClaim.id)))
