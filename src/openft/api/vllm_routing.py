"""Requests for a vLLM deployment: served there when vLLM has the model, else the local engines or a clear error.

A model vLLM does not serve (another base model, a full fine-tune vLLM was not started with) is never sent to
vLLM's base model under the requested name. With ``OPENFT_VLLM_FALLBACK=local`` it is served by openft's own
engines (within their memory cap); otherwise the request gets a 400 naming the model and the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from openft.api.errors import OpenAIError
from openft.serving.backend import ServingBackend
from openft.serving.vllm_backend import VLLMBackend, VLLMError, VLLMModel

if TYPE_CHECKING:
    from openft.api.serving_state import ResolvedModel

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


def _vllm_error(error: VLLMError) -> OpenAIError:
    if 400 <= error.status < 500:
        return OpenAIError(error.status, error.message, param=error.param)
    return OpenAIError(502, f"The vLLM server failed: {error.message}", type="server_error")


def not_served(model: ResolvedModel, vllm: VLLMBackend) -> OpenAIError:
    if model.full_model_path is not None:
        why = f"it is a full fine-tune and the vLLM server at {vllm.base_url} was not started with it"
    else:
        why = f"its base model is `{model.base}` and the vLLM server at {vllm.base_url} runs `{vllm.base_model}`"
    return OpenAIError(
        400,
        f"The model `{model.name}` cannot be served here: {why}. Start a vLLM server for it "
        "(`openft export` makes a folder vLLM loads) or set OPENFT_VLLM_FALLBACK=local to serve it on openft's "
        "own engine.",
        param="model",
        code="model_not_available",
    )


class VLLMRouted:
    """A ``ServingBackend`` for one resolved model on a vLLM deployment."""

    def __init__(self, vllm: VLLMBackend, model: ResolvedModel,
                 fallback: Callable[[], ServingBackend] | None = None) -> None:
        self._vllm = vllm
        self._model = model
        self._fallback = fallback
        self._wanted = VLLMModel(model.name, model.base, model.adapter_path, model.full_model_path)

    async def _target(self) -> str | None:
        try:
            target = await self._vllm.acquire(self._wanted)
        except VLLMError as error:
            raise _vllm_error(error) from None
        if target is None and self._fallback is None:
            raise not_served(self._model, self._vllm)
        return target

    async def _whole(self, path: str, body: dict[str, Any], local) -> dict[str, Any]:
        target = await self._target()
        if target is None:
            return await local(self._fallback())(body)
        try:
            return await self._vllm.post(path, body, target)
        except VLLMError as error:
            raise _vllm_error(error) from None
        finally:
            await self._vllm.release(target)

    async def _streamed(self, path: str, body: dict[str, Any], local) -> AsyncIterator[dict[str, Any]]:
        target = await self._target()
        if target is None:
            async for chunk in local(self._fallback())(body):
                yield chunk
            return
        try:
            async for chunk in self._vllm.stream(path, body, target):
                yield chunk
        except VLLMError as error:
            raise _vllm_error(error) from None
        finally:
            await self._vllm.release(target)

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._whole(CHAT, body, lambda b: b.chat_completion)

    def chat_completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._streamed(CHAT, body, lambda b: b.chat_completion_stream)

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._whole(COMPLETIONS, body, lambda b: b.completion)

    def completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._streamed(COMPLETIONS, body, lambda b: b.completion_stream)
