"""``ServingBackend`` over a vLLM OpenAI server (GPU serving) with dynamic LoRA loading.

vLLM must run with ``--enable-lora`` (plus ``--max-lora-rank`` >= the adapters' rank) and the environment
variable ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` so ``/v1/load_lora_adapter`` accepts adapters by path.
Requests for a fine-tuned model load its adapter once (under the fine-tuned model's name) and are then
forwarded as-is with ``model`` set to that name; base-model requests go to vLLM's served model name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from openft.serving.types import EngineOverloaded


class VLLMError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"vLLM answered {status}: {message}")
        self.status = status


AdapterPathResolver = Callable[[str], Path | None]
"""Model name -> adapter folder, or None when the name is the base model vLLM serves."""


class VLLMBackend:
    def __init__(
        self,
        base_url: str,
        served_model: str,
        adapter_path: AdapterPathResolver,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self._served_model = served_model
        self._adapter_path = adapter_path
        self._loaded: set[str] = set()
        self._load_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _target_model(self, model: str) -> str:
        path = self._adapter_path(model)
        if path is None:
            return self._served_model
        if model not in self._loaded:
            async with self._load_lock:
                if model not in self._loaded:
                    await self._load_adapter(model, path)
        return model

    async def _load_adapter(self, name: str, path: Path) -> None:
        response = await self._client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
        # vLLM answers 400 "already loaded" after its own restart-free reloads; that is success for us.
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise VLLMError(response.status_code, f"loading adapter {name!r} from {path}: {response.text}")
        self._loaded.add(name)

    async def _body_for_vllm(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": await self._target_model(body["model"])}

    def _restore_model(self, payload: dict[str, Any], model: str) -> dict[str, Any]:
        if "model" in payload:
            payload["model"] = model
        return payload

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._client.post(path, json=await self._body_for_vllm(body))
        self._raise_for_status(response.status_code, response.text)
        return self._restore_model(response.json(), body["model"])

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        payload = {**await self._body_for_vllm(body), "stream": True}
        async with self._client.stream("POST", path, json=payload) as response:
            if response.status_code >= 400:
                self._raise_for_status(response.status_code, (await response.aread()).decode())
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                yield self._restore_model(json.loads(data), body["model"])

    @staticmethod
    def _raise_for_status(status: int, text: str) -> None:
        if status == 429 or status == 503:
            raise EngineOverloaded(f"vLLM is overloaded ({status}): {text}")
        if status >= 400:
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise VLLMError(status, message)

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/v1/chat/completions", body)

    def chat_completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/v1/chat/completions", body)

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/v1/completions", body)

    def completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/v1/completions", body)
