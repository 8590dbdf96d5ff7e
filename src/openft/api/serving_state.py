"""Which engine serves which model name, for one organization.

One engine per base model (its LoRA fine-tunes and LoRA checkpoints share it, batched together) and one
per full fine-tune. Engines load lazily on the first request and live until the server stops.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from openft.api.errors import model_not_found
from openft.models.registry import ModelNotFound, get_base_model, load_model, load_tokenizer
from openft.serving.backend import ModelRoute
from openft.serving.engine import Engine
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.tables import FineTuningJob


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user asked for it, echoed in responses
    base: str
    adapter_path: str | None  # a PEFT adapter folder (LoRA), served on the base engine
    full_model_path: str | None  # a whole fine-tuned model folder (lora_rank 0), served on its own engine


def resolve_model(organization_id: str, name: str) -> ResolvedModel:
    """Base names, the organization's `ft:` names and their `:ckpt-step-N` checkpoints; anything else is 404."""
    try:
        base = get_base_model(name)
        return ResolvedModel(name, base.name, None, None)
    except ModelNotFound:
        pass
    with session_scope() as session:
        fine_tuned = job_store.get_fine_tuned_model(session, organization_id, name)
        if fine_tuned is not None:
            path, kind, base_name = fine_tuned.path, fine_tuned.kind, fine_tuned.base_model
        else:
            checkpoint = job_store.get_checkpoint_by_model(session, organization_id, name)
            if checkpoint is None:
                raise model_not_found(name)
            job = session.get(FineTuningJob, checkpoint.job_id)
            path, base_name = checkpoint.path, job.model
            kind = "full" if (job.resolved_hyperparameters or {}).get("lora_rank") == 0 else "lora"
    if not Path(path).is_dir():
        raise model_not_found(name)
    if kind == "full":
        return ResolvedModel(name, base_name, None, path)
    return ResolvedModel(name, base_name, path, None)


def _adapter_folder(key: str) -> Path | None:
    path = Path(key)
    return path if (path / "adapter_config.json").is_file() else None


class EngineRegistry:
    def __init__(self, max_batch_size: int = 16, max_queue: int = 64) -> None:
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue

    def _engine(self, key: str, loader) -> Engine:
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = Engine(loader, _adapter_folder, max_batch_size=self.max_batch_size,
                                max_queue=self.max_queue, name=key.replace("/", "_")[-40:])
                engine.start()
                self._engines[key] = engine
            return engine

    def route(self, model: ResolvedModel) -> ModelRoute:
        if model.full_model_path is not None:
            path = model.full_model_path

            def load_full():
                from transformers import AutoModelForCausalLM

                return AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(model.base)

            return ModelRoute(self._engine("full:" + path, load_full), None)
        base = model.base
        engine = self._engine("base:" + base, lambda: (load_model(base).eval(), load_tokenizer(base)))
        return ModelRoute(engine, model.adapter_path)

    def stats(self) -> dict[str, dict]:
        with self._lock:
            engines = dict(self._engines)
        return {key: engine.stats() for key, engine in engines.items()}

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()
