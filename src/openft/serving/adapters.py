"""LRU cache of LoRA adapters loaded into one PeftModel wrapping the shared base model."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel

from openft.serving.types import BASE_ADAPTER, AdapterNotFound

log = logging.getLogger(__name__)

AdapterResolver = Callable[[str], Path]
"""Maps an adapter key (a fine-tuned model name) to a PEFT adapter folder; raises AdapterNotFound."""


def peft_adapter_name(key: str) -> str:
    # PEFT adapter names become module attribute names: no dots, stable per key.
    return "a_" + hashlib.sha1(key.encode()).hexdigest()[:16]


class AdapterCache:
    """Loads adapters on demand, keeps at most ``capacity`` idle ones, never evicts one a request is using.

    Not thread-safe: only the engine's model thread calls it.
    """

    def __init__(self, base_model: PreTrainedModel, resolver: AdapterResolver | None, capacity: int) -> None:
        self._base_model = base_model
        self._resolver = resolver
        self.capacity = capacity
        self.model: PreTrainedModel | PeftModel = base_model
        self._loaded: OrderedDict[str, str] = OrderedDict()  # key -> PEFT name, least recently used first
        self._in_use: dict[str, int] = {}
        self.loads = 0
        self.version = 0  # bumped whenever the set of loaded adapters changes
        self.evictions = 0

    def resolve(self, key: str) -> Path:
        if self._resolver is None:
            raise AdapterNotFound(key, "this engine serves no adapters")
        path = Path(self._resolver(key))
        config_path = path / "adapter_config.json"
        if not config_path.is_file():
            raise AdapterNotFound(key, f"{path} holds no adapter_config.json")
        config = json.loads(config_path.read_text())
        if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
            # PEFT cannot mix these with other adapters in one batch (adapter_names rejects DoRA).
            raise ValueError(f"adapter {key!r} is not plain LoRA (DoRA or another PEFT method); cannot serve it")
        return path

    @property
    def loaded_keys(self) -> list[str]:
        return list(self._loaded)

    @property
    def loaded_names(self) -> list[str]:
        return list(self._loaded.values())

    def acquire(self, key: str | None) -> str:
        """PEFT adapter name for ``key`` (loading it if needed), pinned until ``release``."""
        if key is None:
            return BASE_ADAPTER
        if key in self._loaded:
            self._loaded.move_to_end(key)
        else:
            self._load(key)
        self._in_use[key] = self._in_use.get(key, 0) + 1
        return self._loaded[key]

    def release(self, key: str | None) -> None:
        if key is None:
            return
        count = self._in_use.get(key, 0) - 1
        if count > 0:
            self._in_use[key] = count
        else:
            self._in_use.pop(key, None)
        self._evict_idle()

    def _load(self, key: str) -> None:
        path = self.resolve(key)
        name = peft_adapter_name(key)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self._base_model, str(path), adapter_name=name)
        self.model.eval()
        self._loaded[key] = name
        self.version += 1
        self.loads += 1
        log.info("loaded adapter %s from %s", key, path)
        self._evict_idle()

    def _evict_idle(self) -> None:
        for key in list(self._loaded):
            if len(self._loaded) <= self.capacity:
                return
            if key in self._in_use:
                continue
            name = self._loaded.pop(key)
            assert isinstance(self.model, PeftModel)
            self.model.delete_adapter(name)
            self.evictions += 1
            self.version += 1
            log.info("evicted adapter %s", key)
