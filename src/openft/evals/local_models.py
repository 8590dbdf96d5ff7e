"""Routes model names to in-process serving engines for an evaluation run in a worker.

One engine per base model serves the base model and every LoRA fine-tune (and checkpoint) of it; a full
fine-tune gets its own engine. Engines are closed when the run ends, so a worker returns the memory.
"""

from __future__ import annotations

from pathlib import Path

from openft.models.registry import ModelNotFound, get_base_model, load_model, load_tokenizer
from openft.serving.backend import ModelRoute
from openft.serving.decode_weights import apply_decode_weights
from openft.serving.engine import Engine
from openft.serving.types import AdapterNotFound
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.tables import FineTuningJob


def fine_tuned_weights(organization_id: str, name: str) -> tuple[str, Path, bool]:
    """(base model, weights folder, is LoRA) of a fine-tuned model or checkpoint of the organization."""
    with session_scope() as session:
        model = job_store.get_fine_tuned_model(session, organization_id, name)
        if model is not None:
            return model.base_model, Path(model.path), model.kind == "lora"
        checkpoint = job_store.get_checkpoint_by_model(session, organization_id, name)
        if checkpoint is not None:
            job = session.get(FineTuningJob, checkpoint.job_id)
            path = Path(checkpoint.path)
            return job.model, path, (path / "adapter_config.json").is_file()
    raise ModelNotFound(name)


class LocalModels:
    """`route(name)`: a ModelRouter for openft.serving.backend.LocalBackend, scoped to one organization."""

    def __init__(self, organization_id: str, max_batch_size: int = 8) -> None:
        self.organization_id = organization_id
        self.max_batch_size = max_batch_size
        self.engines: dict[str, Engine] = {}
        self.adapter_paths: dict[str, Path] = {}

    def _engine(self, key: str, loader) -> Engine:
        if key not in self.engines:
            self.engines[key] = Engine(
                loader, self._resolve_adapter, max_batch_size=self.max_batch_size, name=f"eval-{key[:24]}"
            )
        return self.engines[key]

    def _base_engine(self, base: str) -> Engine:
        # What an evaluation measures is what serving answers with, so the same decode weights.
        return self._engine(base, lambda: (apply_decode_weights(load_model(base).eval()), load_tokenizer(base)))

    def _resolve_adapter(self, key: str) -> Path:
        if key not in self.adapter_paths:
            raise AdapterNotFound(key, "not a fine-tuned model of this evaluation")
        return self.adapter_paths[key]

    def _fine_tuned(self, name: str) -> tuple[str, Path, bool]:
        return fine_tuned_weights(self.organization_id, name)

    def route(self, name: str) -> ModelRoute:
        try:
            get_base_model(name)
            return ModelRoute(self._base_engine(name), None)
        except ModelNotFound:
            pass
        base, path, is_lora = self._fine_tuned(name)
        if is_lora:
            self.adapter_paths[name] = path
            return ModelRoute(self._base_engine(base), name)

        def load_full():
            from transformers import AutoModelForCausalLM

            return apply_decode_weights(AutoModelForCausalLM.from_pretrained(path).eval()), load_tokenizer(base)

        return ModelRoute(self._engine(name, load_full), None)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
