"""LRU cache of LoRA adapters loaded into one PeftModel wrapping the shared base model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from openft.serving import lora_batch
from openft.serving.types import BASE_ADAPTER, AdapterNotFound, EngineOverloaded

log = logging.getLogger(__name__)

AdapterResolver = Callable[[str], Path]
"""Maps an adapter key (a fine-tuned model name) to a PEFT adapter folder; raises AdapterNotFound."""


DEFAULT_MAX_ADAPTER_BYTES = 2 << 30


def max_adapter_bytes_from_env() -> int:
    """``OPENFT_SERVING_MAX_ADAPTER_BYTES``: adapter weights one engine keeps loaded (default 2 GiB)."""
    raw = os.environ.get("OPENFT_SERVING_MAX_ADAPTER_BYTES", "").strip()
    return int(raw) if raw else DEFAULT_MAX_ADAPTER_BYTES


def adapter_file_bytes(folder: Path) -> int:
    files = [*folder.glob("adapter_model*.safetensors"), *folder.glob("adapter_model*.bin")]
    return sum(f.stat().st_size for f in files)


def peft_adapter_name(key: str) -> str:
    # PEFT adapter names become module attribute names: no dots, stable per key.
    return "a_" + hashlib.sha1(key.encode()).hexdigest()[:16]


class AdapterCache:
    """Loads adapters on demand and keeps at most ``capacity`` of them and ``max_bytes`` of their weights,
    evicting the least recently used idle ones; never evicts one a request is using (those may overshoot the
    caps until they finish).

    Only the engine's model thread loads and evicts. ``request_unload`` (a deleted model) is the one method
    other threads call: the adapter is dropped at the engine's next step, or refused right away if asked for.
    """

    def __init__(
        self,
        base_model: PreTrainedModel,
        resolver: AdapterResolver | None,
        capacity: int,
        max_bytes: int | None = None,
        kernel=None,
    ) -> None:
        self._base_model = base_model
        # The native extension the engine hands lora_batch.BatchedLora, whose copies of adapters for it (q4
        # engines: bf16) count toward an adapter's bytes.
        self._kernel = kernel
        self._resolver = resolver
        self.capacity = capacity
        self.max_bytes = max_adapter_bytes_from_env() if max_bytes is None else max_bytes
        self._bytes: dict[str, int] = {}
        self._doomed: set[str] = set()
        self._doomed_lock = threading.Lock()
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

    @property
    def loaded_bytes(self) -> int:
        return sum(self._bytes.values())

    def request_unload(self, key: str) -> bool:
        """Thread-safe: drop ``key`` (its model was deleted) once no request uses it. True if it is loaded."""
        with self._doomed_lock:
            self._doomed.add(key)
        return key in self._loaded

    def _take_doomed(self) -> set[str]:
        with self._doomed_lock:
            doomed, self._doomed = self._doomed, set()
        return doomed

    def acquire(self, key: str | None) -> str:
        """PEFT adapter name for ``key`` (loading it if needed), pinned until ``release``."""
        self._drop_doomed()
        if key is None:
            return BASE_ADAPTER
        if key in self._loaded:
            self._loaded.move_to_end(key)
        else:
            self._load(key)
        self._in_use[key] = self._in_use.get(key, 0) + 1
        self._evict_idle()  # after pinning, so the adapter just loaded is never the one evicted
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

    def _drop_doomed(self) -> None:
        doomed = self._take_doomed()
        for key in doomed:
            if key in self._in_use:  # still answering: try again at the next step
                with self._doomed_lock:
                    self._doomed.add(key)
            elif key in self._loaded:
                self._delete(key)

    def _load(self, key: str) -> None:
        path = self.resolve(key)
        size = adapter_file_bytes(path)
        if size > self.max_bytes:
            raise EngineOverloaded(
                f"adapter {key!r} has {size} bytes of weights, more than this engine's adapter cap of "
                f"{self.max_bytes} bytes (OPENFT_SERVING_MAX_ADAPTER_BYTES)"
            )
        name = peft_adapter_name(key)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self._base_model, str(path), adapter_name=name)
        self.model.eval()
        self._loaded[key] = name
        broken = self._non_finite(name)
        if broken is not None:
            self._delete(key)
            raise ValueError(f"adapter {key!r} has non-finite weights ({broken}); cannot serve it")
        self._bytes[key] = self._measure(name) or size
        self.version += 1
        self.loads += 1
        log.info("loaded adapter %s from %s", key, path)

    def _parameters(self, name: str) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """The PEFT adapter ``name``'s own weights, with their names."""
        marker = f".{name}."
        return ((key, p) for key, p in self.model.named_parameters() if marker in key)

    def _measure(self, name: str) -> int:
        weights = sum(p.numel() * p.element_size() for _, p in self._parameters(name))
        return weights + lora_batch.kernel_copy_bytes(self.model, name, self._kernel)

    def _non_finite(self, name: str) -> str | None:
        """The first of the adapter's weights holding inf or NaN: such an adapter would give NaN, and batched
        decoding (lora_batch.py) multiplies other rows by every adapter in a stack, so it is never loaded."""
        return next((key for key, p in self._parameters(name) if not bool(torch.isfinite(p).all())), None)

    def _evict_idle(self) -> None:
        self._drop_doomed()
        for key in list(self._loaded):
            if len(self._loaded) <= self.capacity and self.loaded_bytes <= self.max_bytes:
                return
            if key in self._in_use:
                continue
            self._delete(key)
            self.evictions += 1

    def _delete(self, key: str) -> None:
        name = self._loaded.pop(key)
        self._bytes.pop(key, None)
        assert isinstance(self.model, PeftModel)
        if self._loaded:
            self.model.delete_adapter(name)
        else:  # PEFT cannot run with no adapter left: strip the LoRA layers, back to the plain base model
            self.model = self.model.unload()
            self._base_model = self.model
        self.version += 1
        log.info("unloaded adapter %s", key)
