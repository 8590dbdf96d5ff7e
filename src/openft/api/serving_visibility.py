"""What `/v1/serving/stats` may show one organization: engines are shared, adapters are not.

A base model's engine batches every organization's LoRA adapters together, so its counters describe shared
machinery; but the adapter folders it has loaded name other organizations' jobs. The caller sees only its own
adapters (fine-tuned models and checkpoints) and only the whole-model engines of its own full fine-tunes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from openft.store.db import session_scope
from openft.store.tables import FineTunedModel, FineTuningJob, JobCheckpoint

FULL_MODEL_PREFIX = "full:"


def _normal(path: str) -> str:
    return str(Path(path).resolve())


def owned_model_paths(organization_id: str) -> set[str]:
    """Folders of the organization's fine-tuned models and checkpoints (resolved)."""
    with session_scope() as session:
        models = session.scalars(select(FineTunedModel.path).where(FineTunedModel.organization_id == organization_id))
        checkpoints = session.scalars(
            select(JobCheckpoint.path)
            .join(FineTuningJob, FineTuningJob.id == JobCheckpoint.job_id)
            .where(FineTuningJob.organization_id == organization_id)
        )
        return {_normal(p) for p in [*models, *checkpoints] if p}


def visible_stats(organization_id: str, stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    owned = owned_model_paths(organization_id)
    visible = {}
    for key, engine in stats.items():
        if key.startswith(FULL_MODEL_PREFIX) and _normal(key[len(FULL_MODEL_PREFIX):]) not in owned:
            continue
        adapters = [a for a in engine.get("loaded_adapters") or [] if _normal(str(a)) in owned]
        visible[key] = {**engine, "loaded_adapters": adapters}
    return visible
