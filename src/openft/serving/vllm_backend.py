"""A vLLM OpenAI server as a serving backend (GPU serving), with LoRA adapters loaded at run time under an LRU.

vLLM must run with ``--enable-lora`` (plus ``--max-lora-rank`` >= the adapters' rank) and the environment
variable ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` so ``/v1/load_lora_adapter`` accepts adapters by path.

What vLLM may answer, and under which name (``target``):
- a name vLLM itself lists in ``/v1/models`` (its base model, a full fine-tune it was started with under that
  ``--served-model-name``, a static ``--lora-modules`` entry) goes to vLLM as is;
- openft's base model that vLLM serves goes to vLLM's served model name;
- a LoRA fine-tune of that base model has its adapter loaded (``/v1/load_lora_adapter``) under the fine-tuned
  model's name; at most ``max_loaded_adapters`` are kept, the least recently used idle one is unloaded
  (``/v1/unload_lora_adapter``) to make room;
- anything else (another base model, a full fine-tune vLLM was not started with) is ``None``: the caller
  routes it elsewhere or refuses it. It is never sent to vLLM's base model under another name.

Request bodies are forwarded unchanged apart from ``model``, so ``response_format`` (json_object / json_schema),
``tools`` and ``tool_choice`` reach vLLM's own structured-output and tool-calling support as the client sent them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from openft.serving.types import EngineOverloaded


class VLLMError(RuntimeError):
    """vLLM answered with an error; ``status``, ``message`` and ``param`` come from its error body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(f"vLLM answered {status}: {message}")
        self.status = status
        self.message = message
        self.param = param


@dataclass(frozen=True)
class VLLMModel:
    """A model openft resolved for a request: what vLLM needs to know to decide if it can serve it."""

    name: str
    base: str
    adapter_path: str | None = None
    full_model_path: str | None = None


def _error_body(text: str) -> tuple[str, str | None]:
    """vLLM's ErrorResponse: ``{"error": {"message", "type", "param", "code"}}`` (older: the same keys at top)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(data, dict):
        inner = data.get("error") if isinstance(data.get("error"), dict) else data
        if isinstance(inner.get("message"), str):
            return inner["message"], inner.get("param")
    return text, None


class VLLMBackend:
    def __init__(
        self,
        base_url: str,
        base_model: str,
        *,
        served_model_name: str | None = None,
        max_loaded_adapters: int = 8,
        api_key: str | None = None,
        timeout: float = 600.0,
        models_ttl: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.base_url = base_url
        self.base_model = base_model  # openft's name of the base model vLLM runs
        self.served_model_name = served_model_name or base_model  # the name vLLM serves it under
        self.max_loaded_adapters = max(1, max_loaded_adapters)
        self._models_ttl = models_ttl
        self._models: set[str] = set()
        self._models_at = -1e9
        self._loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> path, least recently used first
        self._in_use: dict[str, int] = {}
        self._doomed: set[str] = set()  # deleted models still answering a request
        self._lock: asyncio.Lock | None = None
        self.adapter_loads = 0
        self.adapter_unloads = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    def _state_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # --- which models vLLM has ---------------------------------------------------------------------------

    async def served_models(self) -> set[str]:
        """Model ids in vLLM's ``/v1/models`` (base, static LoRA modules, adapters loaded at run time)."""
        now = time.monotonic()
        if now - self._models_at > self._models_ttl:
            response = await self._client.get("/v1/models")
            self._raise_for_status(response.status_code, response.text)
            self._models = {item["id"] for item in response.json().get("data", []) if "id" in item}
            self._models_at = now
        return self._models

    async def acquire(self, model: VLLMModel) -> str | None:
        """The ``model`` to send vLLM for this request (pinned until ``release``), or None: vLLM does not
        serve it. LoRA adapters of vLLM's base model are loaded here when needed."""
        async with self._state_lock():
            if model.name in self._loaded:
                self._loaded.move_to_end(model.name)
                self._pin(model.name)
                return model.name
        ours = model.full_model_path is None and model.base == self.base_model
        if ours and model.adapter_path is None:
            return self.served_model_name
        if ours:
            async with self._state_lock():
                if model.name not in self._loaded:
                    await self._make_room()
                    await self._load_adapter(model.name, model.adapter_path)
                self._loaded.move_to_end(model.name)
                self._pin(model.name)
            return model.name
        if model.name in await self.served_models():
            return model.name  # vLLM was started with this exact model (a full fine-tune, another base)
        return None

    async def release(self, target: str) -> None:
        if target not in self._in_use:
            return
        count = self._in_use[target] - 1
        if count > 0:
            self._in_use[target] = count
            return
        del self._in_use[target]
        if target in self._doomed:  # deleted while answering: unload now that the last request is done
            self._doomed.discard(target)
            async with self._state_lock():
                await self._unload_adapter(target)

    def _pin(self, name: str) -> None:
        self._in_use[name] = self._in_use.get(name, 0) + 1

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.max_loaded_adapters:
            idle = next((name for name in self._loaded if name not in self._in_use), None)
            if idle is None:
                raise EngineOverloaded(
                    f"all {self.max_loaded_adapters} LoRA adapter slots of the vLLM server are answering requests "
                    "(OPENFT_VLLM_MAX_ADAPTERS); retry shortly"
                )
            await self._unload_adapter(idle)

    async def _load_adapter(self, name: str, path: str) -> None:
        response = await self._client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
        if response.status_code >= 400:
            message, _ = _error_body(response.text)
            # Another openft process (or a restart of this one) loaded it already: it is there, which is what we want.
            if not (response.status_code == 400 and "already been loaded" in message):
                raise VLLMError(response.status_code, f"loading adapter {name!r} from {path}: {message}")
        self._loaded[name] = str(path)
        self._models.add(name)
        self.adapter_loads += 1

    async def _unload_adapter(self, name: str) -> None:
        response = await self._client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        # 404 "cannot be found": vLLM restarted (or someone unloaded it): it is gone either way.
        if response.status_code >= 400 and response.status_code != 404:
            message, _ = _error_body(response.text)
            raise VLLMError(response.status_code, f"unloading adapter {name!r}: {message}")
        self._loaded.pop(name, None)
        self._models.discard(name)
        self.adapter_unloads += 1

    async def unload(self, name: str) -> bool:
        """A deleted model: unload its adapter from vLLM (once the requests running on it have finished)."""
        async with self._state_lock():
            if name in self._in_use:
                self._doomed.add(name)
                return True
            was_loaded = name in self._loaded
            response = await self._client.post("/v1/unload_lora_adapter", json={"lora_name": name})
            if response.status_code >= 400 and response.status_code != 404:
                message, _ = _error_body(response.text)
                raise VLLMError(response.status_code, f"unloading adapter {name!r}: {message}")
            self._loaded.pop(name, None)
            self._models.discard(name)
            return was_loaded or response.status_code < 400

    def stats(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "base_model": self.base_model,
            "loaded_adapters": list(self._loaded),
            "max_loaded_adapters": self.max_loaded_adapters,
            "adapter_loads": self.adapter_loads,
            "adapter_unloads": self.adapter_unloads,
        }

    # --- requests ------------------------------------------------------------------------------------------

    @staticmethod
    def _restore_model(payload: dict[str, Any], model: str) -> dict[str, Any]:
        if "model" in payload:
            payload["model"] = model
        return payload

    async def post(self, path: str, body: dict[str, Any], target: str) -> dict[str, Any]:
        response = await self._client.post(path, json={**body, "model": target})
        self._raise_for_status(response.status_code, response.text)
        return self._restore_model(response.json(), body["model"])

    async def stream(self, path: str, body: dict[str, Any], target: str) -> AsyncIterator[dict[str, Any]]:
        payload = {**body, "model": target, "stream": True}
        async with self._client.stream("POST", path, json=payload) as response:
            if response.status_code >= 400:
                self._raise_for_status(response.status_code, (await response.aread()).decode())
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                    # vLLM reports errors after the first chunk inside the stream
                    message, param = _error_body(data)
                    raise VLLMError(int(chunk["error"].get("code") or 500), message, param)
                yield self._restore_model(chunk, body["model"])

    @staticmethod
    def _raise_for_status(status: int, text: str) -> None:
        if status < 400:
            return
        message, param = _error_body(text)
        if status in (429, 503):
            raise EngineOverloaded(f"vLLM is overloaded ({status}): {message}")
        raise VLLMError(status, message, param)

