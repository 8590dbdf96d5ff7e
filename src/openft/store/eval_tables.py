"""Evaluation runs: durable jobs like fine-tuning jobs, claimed by the same workers (migration 0003_evals)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from openft.store.tables import Base


class EvalRun(Base):
    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "eval-..."
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)  # queued|running|succeeded|failed|cancelled
    # The request as accepted (file ids, models, strategies, metrics, k, judge, external endpoint).
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    eval_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"completed": n, "total": m}
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # openft.evals.runner.run_evaluation output
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
