"""OpenAI Evals API objects: evals, their runs, and each run's output items (migration 0006_openai_evals).

Separate from `eval_runs` (openft's own /v1/evaluations comparisons): these follow OpenAI's objects one to one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from openft.store.tables import Base


class OpenAIEval(Base):
    __tablename__ = "openai_evals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "eval_..."
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(512))
    data_source_config: Mapped[dict[str, Any]] = mapped_column(JSON)  # as returned: type, schema, metadata
    testing_criteria: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    eval_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class OpenAIEvalRun(Base):
    __tablename__ = "openai_eval_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "evalrun_..."
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    eval_id: Mapped[str] = mapped_column(ForeignKey("openai_evals.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(32), index=True)  # queued|in_progress|completed|canceled|failed
    model: Mapped[str] = mapped_column(String(512))
    data_source: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    result_counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    per_testing_criteria_results: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    per_model_usage: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)


class OpenAIEvalOutputItem(Base):
    __tablename__ = "openai_eval_output_items"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "outputitem_..."
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("openai_eval_runs.id", ondelete="CASCADE"), index=True)
    eval_id: Mapped[str] = mapped_column(String(64), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    datasource_item_id: Mapped[int] = mapped_column(Integer)
    datasource_item: Mapped[dict[str, Any]] = mapped_column(JSON)
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    sample: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pass | fail | error
    created_at: Mapped[int] = mapped_column(BigInteger)


class JudgeEndpoint(Base):
    """An OpenAI-compatible endpoint an organization names for a judge model of score/label model graders."""

    __tablename__ = "openai_judge_endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "judge_..."
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    model: Mapped[str] = mapped_column(String(512))  # the name graders use
    remote_model: Mapped[str] = mapped_column(String(512))  # the name the endpoint knows
    base_url: Mapped[str] = mapped_column(String(2048))
    api_key: Mapped[str | None] = mapped_column(String(4096))  # sealed (store/secrets.py)
    api_key_env: Mapped[str | None] = mapped_column(String(128))  # or a server variable OPENFT_OUTBOUND_KEY_*
    created_at: Mapped[int] = mapped_column(BigInteger)
