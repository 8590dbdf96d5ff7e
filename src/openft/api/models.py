"""Models API: base models from the registry and the organization's fine-tuned models."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import delete, select

from openft.api.auth import current_org
from openft.api.errors import bad_request, model_not_found
from openft.models.registry import ModelNotFound, get_base_model, list_base_models
from openft.store import artifacts as artifact_store
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.tables import FineTuningJob, JobCheckpoint, Organization

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"])
Org = Annotated[Organization, Depends(current_org)]
OWNER_OF_BASE_MODELS = "openft"


def unload_served_models(state: Any, served: list[tuple[str, str, bool]], output_dir: Path) -> None:
    """Free the memory a deleted model (and its checkpoints) holds in the local engines and in vLLM."""
    engines = getattr(state, "engines", None)
    vllm = getattr(state, "vllm", None)
    for name, path, full in served:
        if not path:
            continue
        # Served from where it was written, or from this machine's download cache of the artifact store.
        for local in {path, str(artifact_store.cache_dir() / artifact_store.artifact_key(path, output_dir))}:
            if engines is not None:
                engines.unload(full_model_path=local if full else None, adapter_path=None if full else local)
        if vllm is not None:
            import anyio.from_thread

            try:
                anyio.from_thread.run(vllm.unload, name)
            except Exception:  # the model is deleted either way; vLLM's LRU unloads it later
                log.exception("could not unload %s from vLLM", name)


def _wire(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


@router.get("")
def list_models(org: Org) -> dict[str, Any]:
    data = [_wire(m.name, m.created, OWNER_OF_BASE_MODELS) for m in list_base_models()]
    with session_scope() as session:
        data += [_wire(m.id, m.created_at, org.name) for m in job_store.list_fine_tuned_models(session, org.id)]
    return {"object": "list", "data": data}


# `{model:path}`: fine-tuned names contain ':' and registered base models may contain '/'.
@router.get("/{model:path}")
def retrieve_model(model: str, org: Org) -> dict[str, Any]:
    try:
        base = get_base_model(model)
        return _wire(base.name, base.created, OWNER_OF_BASE_MODELS)
    except ModelNotFound:
        pass
    with session_scope() as session:
        fine_tuned = job_store.get_fine_tuned_model(session, org.id, model)
        if fine_tuned is not None:
            return _wire(fine_tuned.id, fine_tuned.created_at, org.name)
        checkpoint = job_store.get_checkpoint_by_model(session, org.id, model)
        if checkpoint is not None:
            return _wire(checkpoint.fine_tuned_model_checkpoint, checkpoint.created_at, org.name)
    raise model_not_found(model)


@router.delete("/{model:path}")
def delete_model(model: str, org: Org, request: Request) -> dict[str, Any]:
    with session_scope() as session:
        fine_tuned = job_store.get_fine_tuned_model(session, org.id, model)
        if fine_tuned is None:
            try:
                get_base_model(model)
            except ModelNotFound:
                raise model_not_found(model) from None
            raise bad_request(f"`{model}` is a base model; only fine-tuned models can be deleted.", param="model")
        job = session.get(FineTuningJob, fine_tuned.job_id)
        artifacts = Path(job.output_dir) if job is not None and job.output_dir else Path(fine_tuned.path).parent
        checkpoints = session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == fine_tuned.job_id)).all()
        full = fine_tuned.kind == "full"
        served = [(fine_tuned.id, fine_tuned.path, full)]
        served += [(c.fine_tuned_model_checkpoint, c.path, full) for c in checkpoints]
        session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == fine_tuned.job_id))
        session.delete(fine_tuned)
    # Records first, files second: a crash in between leaves unreferenced files, never a dangling model.
    unload_served_models(request.app.state, served, artifacts)
    shutil.rmtree(artifacts, ignore_errors=True)
    artifact_store.delete_job_artifacts(artifacts)
    return {"id": model, "object": "model", "deleted": True}
