"""Which engine serves which model name, for one organization, within a memory cap.

One engine per base model (its LoRA fine-tunes and LoRA checkpoints share it, batched together) and one
per full fine-tune. Engines load lazily on the first request and are kept in an LRU bounded by
``OPENFT_SERVING_MAX_ENGINES`` (count) and ``OPENFT_SERVING_MAX_BYTES`` (weights plus loaded adapters).
A new engine evicts the least recently used idle ones; when the busy ones leave no room the request gets a
503 in OpenAI's envelope and the server keeps serving the others. Deleting a model unloads it.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from openft.api.errors import OpenAIError, model_not_found
from openft.models.registry import ModelNotFound, get_base_model, load_model, load_tokenizer
from openft.serving.backend import LocalBackend, ModelRoute, ServingBackend
from openft.serving.decode_weights import apply_decode_weights, decode_weights_setting, native_decode_enabled
from openft.store import artifacts
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.tables import FineTuningJob

if TYPE_CHECKING:  # torch loads with the first engine, not with the API server
    from openft.serving.engine import Engine

log = logging.getLogger(__name__)

# An engine routed to this recently is treated as busy: its request may not have reached the engine's queue.
ROUTE_GRACE_SECONDS = 1.0
GIB = 1 << 30


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user asked for it, echoed in responses
    base: str
    adapter_path: str | None  # a PEFT adapter folder (LoRA), served on the base engine
    full_model_path: str | None  # a whole fine-tuned model folder (lora_rank 0), served on its own engine
    organization_id: str | None = None  # owner of a fine-tuned model; None for base models


def resolve_model(organization_id: str, name: str) -> ResolvedModel:
    """Base names, the organization's `ft:` names and their `:ckpt-step-N` checkpoints; anything else is 404.

    Fine-tuned folders missing on this machine are fetched from the artifact store (store/artifacts.py).
    """
    try:
        base = get_base_model(name)
        return ResolvedModel(name, base.name, None, None)
    except ModelNotFound:
        pass
    with session_scope() as session:
        fine_tuned = job_store.get_fine_tuned_model(session, organization_id, name)
        if fine_tuned is not None:
            path, kind, base_name = fine_tuned.path, fine_tuned.kind, fine_tuned.base_model
            job = session.get(FineTuningJob, fine_tuned.job_id)
        else:
            checkpoint = job_store.get_checkpoint_by_model(session, organization_id, name)
            if checkpoint is None:
                raise model_not_found(name)
            job = session.get(FineTuningJob, checkpoint.job_id)
            path, base_name = checkpoint.path, job.model
            kind = "full" if (job.resolved_hyperparameters or {}).get("lora_rank") == 0 else "lora"
        output_dir = job.output_dir if job is not None else None
    local = artifacts.local_folder(path, output_dir) if path else None
    if local is None:
        raise model_not_found(name)
    if kind == "full":
        return ResolvedModel(name, base_name, None, str(local), organization_id)
    return ResolvedModel(name, base_name, str(local), None, organization_id)


def _adapter_folder(key: str) -> Path | None:
    path = Path(key)
    return path if (path / "adapter_config.json").is_file() else None


# --- limits -------------------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class ServingLimits:
    """Caps on what the local engines hold in memory (0 means the default)."""

    max_engines: int = 4
    max_bytes: int = 0  # weights of every loaded engine plus their loaded adapters; default: half the RAM
    max_adapters: int = 8  # LoRA adapters loaded per engine (their bytes: OPENFT_SERVING_MAX_ADAPTER_BYTES,
    # which each engine's AdapterCache reads itself)
    max_prefill_tokens: int = 0  # prompt tokens per prefill pass; longer prompts are chunked between decode steps

    @classmethod
    def from_env(cls) -> ServingLimits:
        _env_int("OPENFT_SERVING_MAX_ADAPTER_BYTES", 0)  # checked here so a typo stops the server at start
        decode_weights_setting()  # likewise
        native_decode_enabled()
        return cls(
            max_engines=max(_env_int("OPENFT_SERVING_MAX_ENGINES", 4), 1),
            max_bytes=_env_int("OPENFT_SERVING_MAX_BYTES", 0),
            max_adapters=max(_env_int("OPENFT_SERVING_MAX_ADAPTERS", 8), 1),
            max_prefill_tokens=_env_int("OPENFT_SERVING_MAX_PREFILL_TOKENS", 0),
        )

    @property
    def bytes_cap(self) -> int:
        return self.max_bytes or psutil.virtual_memory().total // 2


def _weights_on_disk(folder: Path, scale: float) -> int:
    files = [*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]
    return int(sum(f.stat().st_size for f in files) * scale)


def _fp32_scale(folder: Path) -> float:
    """Base models load in fp32: a bf16/fp16 checkpoint doubles in memory."""
    try:
        import json

        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return 1.0
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return 2.0 if dtype in ("bfloat16", "float16") else 1.0


def _base_model(name: str):
    return apply_decode_weights(load_model(name).eval())


# `q4` decode weights add a 4-bit and a bf16 copy of the linear layers and a bf16 output layer: ~63% of the
# bundled model's fp32 size where the CPU has native bf16 (the estimate assumes it does).
_DECODE_WEIGHTS_GROWTH = {"fp32": 1.0, "q4": 1.65}


def estimate_bytes(model: ResolvedModel) -> int:
    """Weights' size in memory before loading (0 when unknown; measured once loaded)."""
    return int(_estimate_loaded_weights(model) * _DECODE_WEIGHTS_GROWTH[decode_weights_setting()])


def _estimate_loaded_weights(model: ResolvedModel) -> int:
    if model.full_model_path is not None:
        return _weights_on_disk(Path(model.full_model_path), 1.0)
    base = get_base_model(model.base)
    if base.kind == "hf_dir":
        folder = Path(base.location)
        return _weights_on_disk(folder, _fp32_scale(folder))
    from openft.config import get_settings

    cached = get_settings().model_cache_dir / base.name.replace("/", "--")
    if cached.is_dir():
        return _weights_on_disk(cached, _fp32_scale(cached))
    gguf = base.gguf_path
    # Dequantised to fp32: a 4-5 bit GGUF grows about 7x; measured exactly once loaded.
    return gguf.stat().st_size * 7 if gguf is not None and gguf.is_file() else 0


def measured_bytes(engine: Engine) -> int | None:
    """Bytes of the loaded model's parameters and buffers (tied weights once), or None while loading. Copies
    kept outside them (q4 decode weights' opaque oneDNN tensors) report themselves as `unregistered_bytes`."""
    model = engine.model
    if model is None:
        return None
    seen, total = set(), sum(getattr(module, "unregistered_bytes", 0) for module in model.modules())
    for tensor in [*model.parameters(), *model.buffers()]:
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


# --- the registry --------------------------------------------------------------------------------------


@dataclass
class _Entry:
    engine: Engine
    weights_bytes: int
    measured: bool = False
    last_routed: float = field(default_factory=time.monotonic)
    organization_id: str | None = None  # owner of a full fine-tune's engine

    def adapter_bytes(self) -> int:
        adapters = self.engine.adapters
        return adapters.loaded_bytes if adapters is not None else 0

    def total_bytes(self) -> int:
        return self.weights_bytes + self.adapter_bytes()

    def busy(self, now: float) -> bool:
        if now - self.last_routed < ROUTE_GRACE_SECONDS or self.engine.model is None:
            return True  # just routed, or still loading
        stats = self.engine.stats()
        return stats["running"] > 0 or stats["waiting"] > 0


def capacity_error(message: str) -> OpenAIError:
    return OpenAIError(503, message, type="server_error", code="engine_capacity")


class EngineRegistry:
    def __init__(self, max_batch_size: int = 16, max_queue: int = 64, limits: ServingLimits | None = None) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.limits = limits or ServingLimits.from_env()
        self.evictions = 0
        self.refusals = 0

    # -- accounting

    def _refresh(self) -> bool:
        """Replace estimates by exact sizes of engines that finished loading; True if any changed."""
        changed = False
        for entry in self._entries.values():
            if not entry.measured:
                size = measured_bytes(entry.engine)
                if size is not None:
                    changed = changed or size != entry.weights_bytes
                    entry.weights_bytes, entry.measured = size, True
        return changed

    def tracked_bytes(self) -> int:
        with self._lock:
            self._refresh()
            return sum(e.total_bytes() for e in self._entries.values())

    def _make_room(self, extra_engines: int, extra_bytes: int, *, partial: bool) -> list[Engine]:
        """Evict idle engines, least recently used first, until ``extra_engines`` more of ``extra_bytes`` fit.

        ``partial`` False: evict nothing unless that makes enough room (a refused request frees nothing).
        """
        cap, now = self.limits.bytes_cap, time.monotonic()
        count = len(self._entries) + extra_engines
        used = sum(e.total_bytes() for e in self._entries.values()) + extra_bytes
        chosen: list[str] = []
        for key, entry in self._entries.items():
            if count <= self.limits.max_engines and used <= cap:
                break
            if entry.busy(now):
                continue
            chosen.append(key)
            count -= 1
            used -= entry.total_bytes()
        if not partial and (count > self.limits.max_engines or used > cap):
            return []
        victims = []
        for key in chosen:
            victims.append(self._entries.pop(key).engine)
            self.evictions += 1
            log.info("unloading idle engine %s to stay under the serving memory cap", key)
        return victims

    @staticmethod
    def _close(engines: list[Engine]) -> None:
        if not engines:
            return

        def close() -> None:
            for engine in engines:
                engine.close()
                engine.model = engine.adapters = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

        threading.Thread(target=close, name="openft-engine-unload", daemon=True).start()

    def _engine(self, key: str, loader, model: ResolvedModel) -> Engine:
        victims: list[Engine] = []
        try:
            with self._lock:
                if self._refresh():  # an estimate was low: evict idle engines if that overshoots the cap
                    victims = self._make_room(0, 0, partial=True)
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    entry.last_routed = time.monotonic()
                    return entry.engine
                estimate = estimate_bytes(model)
                cap = self.limits.bytes_cap
                if estimate > cap:
                    self.refusals += 1
                    raise capacity_error(
                        f"The model `{model.name}` needs about {estimate / GIB:.2f} GiB, more than this server's "
                        f"serving memory cap of {cap / GIB:.2f} GiB (OPENFT_SERVING_MAX_BYTES)."
                    )
                victims += self._make_room(1, estimate, partial=False)
                used = sum(e.total_bytes() for e in self._entries.values())
                if len(self._entries) >= self.limits.max_engines or used + estimate > cap:
                    self.refusals += 1
                    raise capacity_error(
                        f"Cannot load `{model.name}` now: {len(self._entries)} loaded models are serving requests "
                        f"({used / GIB:.2f} GiB of the {cap / GIB:.2f} GiB cap, at most {self.limits.max_engines} "
                        "models; OPENFT_SERVING_MAX_BYTES / OPENFT_SERVING_MAX_ENGINES). Retry shortly."
                    )
                from openft.serving.engine import DEFAULT_MAX_PREFILL_TOKENS, Engine

                engine = Engine(
                    loader,
                    _adapter_folder,
                    max_batch_size=self.max_batch_size,
                    max_queue=self.max_queue,
                    max_loaded_adapters=self.limits.max_adapters,
                    max_prefill_tokens=self.limits.max_prefill_tokens or DEFAULT_MAX_PREFILL_TOKENS,
                    name=key.replace("/", "_")[-40:],
                )
                engine.start()
                self._entries[key] = _Entry(engine, estimate, organization_id=model.organization_id)
                return engine
        finally:
            self._close(victims)

    def route(self, model: ResolvedModel) -> ModelRoute:
        if model.full_model_path is not None:
            path = model.full_model_path

            def load_full():
                from transformers import AutoModelForCausalLM

                full = AutoModelForCausalLM.from_pretrained(path).eval()
                return apply_decode_weights(full), load_tokenizer(model.base)

            return ModelRoute(self._engine("full:" + path, load_full, model), None)
        base = model.base
        engine = self._engine("base:" + base, lambda: (_base_model(base), load_tokenizer(base)), model)
        return ModelRoute(engine, model.adapter_path)

    def enforce_cap(self) -> None:
        """After engines finish loading their real size is known: evict idle ones if that overshoots."""
        with self._lock:
            self._refresh()
            victims = self._make_room(0, 0, partial=True)
        self._close(victims)

    def unload(self, *, full_model_path: str | None = None, adapter_path: str | None = None) -> bool:
        """Forget a deleted model: close its own engine, or drop its adapter from every base engine."""
        closed: list[Engine] = []
        found = False
        with self._lock:
            if full_model_path is not None:
                entry = self._entries.pop("full:" + full_model_path, None)
                if entry is not None:
                    closed.append(entry.engine)
                    found = True
            if adapter_path is not None:
                for entry in self._entries.values():
                    adapters = entry.engine.adapters
                    if adapters is not None and adapters.request_unload(adapter_path):
                        found = True
        # A deleted full fine-tune may still be answering: let those requests finish, then free it.
        for engine in closed:
            threading.Thread(target=_close_when_idle, args=(engine,), daemon=True).start()
        return found

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per engine: its batching counters, loaded adapters (folders) and memory; full fine-tunes name their
        owning organization so callers can filter what one organization may see."""
        self.enforce_cap()
        with self._lock:
            entries = dict(self._entries)
        out = {}
        for key, entry in entries.items():
            out[key] = {
                **entry.engine.stats(),
                "organization_id": entry.organization_id,
                "weights_bytes": entry.weights_bytes,
                "weights_measured": entry.measured,
                "adapter_bytes": entry.adapter_bytes(),
            }
        return out

    def memory(self) -> dict[str, int]:
        with self._lock:
            self._refresh()
            used = sum(e.total_bytes() for e in self._entries.values())
            return {"tracked_bytes": used, "max_bytes": self.limits.bytes_cap, "engines": len(self._entries),
                    "max_engines": self.limits.max_engines, "evictions": self.evictions, "refusals": self.refusals}

    def close(self) -> None:
        with self._lock:
            engines = [e.engine for e in self._entries.values()]
            self._entries.clear()
        for engine in engines:
            engine.close()


def _close_when_idle(engine: Engine, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["running"] == 0 and stats["waiting"] == 0:
            break
        time.sleep(0.5)
    engine.close()
    engine.model = engine.adapters = None
    gc.collect()


# --- choosing a backend --------------------------------------------------------------------------------


def backend_for(state: Any, model: ResolvedModel) -> ServingBackend:
    """vLLM when configured (falling back to the local engines, or refusing, for what it does not serve)."""
    vllm = getattr(state, "vllm", None)
    if vllm is not None:
        from openft.api.vllm_routing import VLLMRouted

        fallback = None
        if getattr(state, "vllm_fallback_local", False):

            def fallback() -> ServingBackend:
                return _local(state, model)

        return VLLMRouted(vllm, model, fallback)
    return _local(state, model)


def _local(state: Any, model: ResolvedModel) -> ServingBackend:
    route = state.engines.route(model)
    return LocalBackend(lambda _name: route)


def vllm_from_settings():
    """(VLLMBackend or None, serve what vLLM lacks on the local engines?) from OPENFT_VLLM_* settings."""
    from openft.config import get_settings

    settings = get_settings()
    if not settings.vllm_url:
        return None, False
    from openft.serving.vllm_backend import VLLMBackend

    fallback = os.environ.get("OPENFT_VLLM_FALLBACK", "none").strip().lower()
    if fallback not in ("none", "local"):
        raise ValueError(f"OPENFT_VLLM_FALLBACK must be 'none' or 'local', got {fallback!r}")
    backend = VLLMBackend(
        settings.vllm_url,
        settings.vllm_model or settings.validation_model,
        served_model_name=os.environ.get("OPENFT_VLLM_SERVED_NAME") or None,
        max_loaded_adapters=max(_env_int("OPENFT_VLLM_MAX_ADAPTERS", 8), 1),
        api_key=settings.vllm_api_key,
    )
    return backend, fallback == "local"
