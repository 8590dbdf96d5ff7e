"""Distillations (migration 0010_distill): the job, and the cache of teacher answers that keeps a rerun or a
resumed job from paying twice for the same prompt; beside it (migration 0011_distill_filter_cache) the filter's
verdicts on those answers, so a rerun does not pay a model grader's judge twice either."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openft.store.tables import Base


class Distillation(Base):
    __tablename__ = "distillations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "distill-..."
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)  # queued|running|succeeded|failed|cancelled
    # The request as accepted: input file, teacher (its API key sealed), sampling, concurrency, filter.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    distill_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # total, answered, cached, failed, ...
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the teacher's tokens and cost so far
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # kept, dropped with reasons, failed prompts
    output_file: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)


class TeacherAnswer(Base):
    """One teacher answer, keyed by (teacher, model, prompt, sampling parameters) within one organization."""

    __tablename__ = "distillation_cache"
    __table_args__ = (UniqueConstraint("organization_id", "cache_key", name="uq_distillation_cache_org_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    cache_key: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical request
    message: Mapped[dict[str, Any]] = mapped_column(JSON)  # the assistant message as the teacher sent it
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    paid_by: Mapped[str] = mapped_column(String(64), index=True)  # the distillation that paid for it
    created_at: Mapped[int] = mapped_column(BigInteger)


class FilterVerdict(Base):
    """The filter's verdict on one cached answer: keyed by the filter spec, the prompt line a grader reads as
    `item`, and the answer itself, within one organization. Only verdicts a grader made are kept (rules are free)."""

    __tablename__ = "distillation_verdicts"
    __table_args__ = (UniqueConstraint("organization_id", "verdict_key", name="uq_distillation_verdicts_org_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    verdict_key: Mapped[str] = mapped_column(String(64))  # sha256 of (filter spec, prompt line, answer)
    answer_key: Mapped[str] = mapped_column(String(64), index=True)  # the TeacherAnswer.cache_key it judged
    keep: Mapped[bool] = mapped_column(Boolean)
    rule: Mapped[str | None] = mapped_column(String(64))  # None (kept) or "grader"
    reason: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    judged_by: Mapped[str] = mapped_column(String(64))  # the distillation whose filter made it
    created_at: Mapped[int] = mapped_column(BigInteger)
