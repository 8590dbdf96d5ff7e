"""The one work queue (migration 0004_queue): a row per unit of work, whatever its kind.

A task is ``ready`` until a worker leases it. The lease has an owner, an expiry computed by the
database's clock, and a fencing token that grows by one on every claim: a runner's writes apply only
while the task still carries its token and the lease has not expired (see openft.jobs.lease).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from openft.store.tables import Base


class QueueTask(Base):
    __tablename__ = "queue_tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "task-..."
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)  # a registered kind, e.g. "fine_tuning.train"
    subject_id: Mapped[str] = mapped_column(String(64), index=True)  # the job or run the work is for
    organization_id: Mapped[str] = mapped_column(String(64), index=True)  # fairness and the per-org cap
    state: Mapped[str] = mapped_column(String(16), index=True)  # ready | leased | done | withdrawn
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_expires_at: Mapped[float | None] = mapped_column(Float)  # database clock, epoch seconds
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)


class QueueClaim(Base):
    """Every lease ever granted: who held which token, and whose expired lease it replaced."""

    __tablename__ = "queue_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    lease_token: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(128))
    previous_owner: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[float] = mapped_column(Float)  # database clock
