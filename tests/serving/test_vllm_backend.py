"""VLLMBackend against a fake vLLM server: adapters load once by path, bodies map, streams pass through."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from openft.serving.types import EngineOverloaded
from openft.serving.vllm_backend import VLLMBackend, VLLMError


class FakeVLLM:
    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.load_calls = 0
        self.seen_models: list[str] = []
        self.overloaded = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if request.url.path == "/v1/load_lora_adapter":
            self.load_calls += 1
            self.loaded[body["lora_name"]] = body["lora_path"]
            return httpx.Response(200, text=f"Success: LoRA adapter '{body['lora_name']}' added successfully.")
        if self.overloaded:
            return httpx.Response(429, json={"error": {"message": "busy"}})
        model = body["model"]
        self.seen_models.append(model)
        if model != "base-model" and model not in self.loaded:
            return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist."}})
        if body.get("stream"):
            chunks = [
                {"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": t}}]}
                for t in ["Hel", "lo"]
            ]
            lines = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=lines, headers={"content-type": "text/event-stream"})
        return httpx.Response(
            200,
            json={
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                "temperature_seen": body.get("temperature"),
            },
        )


@pytest.fixture
def fake():
    return FakeVLLM()


@pytest.fixture
def backend(fake, tmp_path):
    adapters = {"ft:smol:org:x:abcd1234": tmp_path / "adapter"}
    return VLLMBackend(
        "http://vllm:8000", "base-model", lambda name: adapters.get(name), transport=httpx.MockTransport(fake)
    )


def chat_body(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hey"}], **extra}


def test_fine_tuned_model_loads_its_adapter_once_then_forwards(backend, fake, tmp_path):
    async def run():
        first = await backend.chat_completion(chat_body("ft:smol:org:x:abcd1234", temperature=0.2))
        second = await backend.chat_completion(chat_body("ft:smol:org:x:abcd1234"))
        return first, second

    first, second = asyncio.run(run())
    assert fake.load_calls == 1
    assert fake.loaded == {"ft:smol:org:x:abcd1234": str(Path(tmp_path / "adapter"))}
    assert first["choices"][0]["message"]["content"] == "hi"
    assert first["model"] == "ft:smol:org:x:abcd1234" and first["temperature_seen"] == 0.2
    assert second["usage"]["total_tokens"] == 4


def test_base_model_goes_to_the_served_model(backend, fake):
    response = asyncio.run(backend.chat_completion(chat_body("smollm2-135m-instruct")))
    assert fake.seen_models == ["base-model"] and fake.load_calls == 0
    assert response["model"] == "smollm2-135m-instruct"


def test_streaming_passes_chunks_through(backend):
    async def run():
        return [c async for c in backend.chat_completion_stream(chat_body("ft:smol:org:x:abcd1234"))]

    chunks = asyncio.run(run())
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Hello"
    assert all(c["model"] == "ft:smol:org:x:abcd1234" for c in chunks)


def test_errors_map_to_overload_and_clear_messages(backend, fake):
    fake.overloaded = True
    with pytest.raises(EngineOverloaded):
        asyncio.run(backend.chat_completion(chat_body("smollm2-135m-instruct")))
    fake.overloaded = False
    backend._served_model = "missing"
    with pytest.raises(VLLMError, match="does not exist"):
        asyncio.run(backend.chat_completion(chat_body("smollm2-135m-instruct")))
