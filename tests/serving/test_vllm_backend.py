"""The vLLM path against a fake that follows vLLM's documented OpenAI server API, error bodies included.

Endpoints and messages follow vLLM's `OpenAIServingModels` (entrypoints/openai/models/serving.py) and its
`ErrorResponse` ({"error": {"message", "type", "param", "code": <HTTP status>}}): `/v1/models`,
`/v1/load_lora_adapter` (200 text "Success: LoRA adapter '<name>' added successfully."; 400 InvalidUserInput
"has already been loaded"), `/v1/unload_lora_adapter` (404 NotFoundError "cannot be found"), and chat
completions answering 404 NotFoundError "The model `x` does not exist." for a name it does not serve.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from openft.api.errors import OpenAIError
from openft.api.serving_state import ResolvedModel
from openft.api.vllm_routing import VLLMRouted
from openft.serving.types import EngineOverloaded
from openft.serving.vllm_backend import VLLMBackend, VLLMModel

BASE = "smollm2-135m-instruct"
SERVED = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _error(status: int, message: str, err_type: str, param: str | None = None) -> httpx.Response:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return httpx.Response(status, json=body)


class FakeVLLM:
    """vLLM's OpenAI server with runtime LoRA updating enabled, serving ``SERVED`` (plus ``extra_models``)."""

    def __init__(self, extra_models: tuple[str, ...] = ()) -> None:
        self.adapters: dict[str, str] = {}
        self.extra_models = list(extra_models)
        self.calls: list[tuple[str, dict]] = []
        self.overloaded = False

    def models(self) -> list[str]:
        return [SERVED, *self.extra_models, *self.adapters]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content or b"{}")
        self.calls.append((path, body))
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "vllm", "root": m, "parent": None} for m in self.models()]
            return httpx.Response(200, json={"object": "list", "data": data})
        if path == "/v1/load_lora_adapter":
            name = body["lora_name"]
            if name in self.adapters:
                return _error(400, f"The lora adapter '{name}' has already been loaded. If you want to load the "
                                   "adapter in place, set 'load_inplace' to True.", "InvalidUserInput")
            if "missing" in body["lora_path"]:
                return _error(404, f"Loading lora {name} failed: No adapter found for {body['lora_path']}",
                              "NotFoundError")
            self.adapters[name] = body["lora_path"]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' added successfully.")
        if path == "/v1/unload_lora_adapter":
            name = body["lora_name"]
            if name not in self.adapters:
                return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            del self.adapters[name]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' removed successfully.")
        if self.overloaded:
            return _error(503, "The engine is overloaded", "ServiceUnavailableError")
        model = body["model"]
        if model not in self.models():
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if body.get("temperature", 1) > 2:
            return _error(400, "temperature must be at most 2", "BadRequestError", "temperature")
        answered_by = "base" if model == SERVED else model
        if body.get("stream"):
            chunks = [{"object": "chat.completion.chunk", "model": model,
                       "choices": [{"index": 0, "delta": {"content": t}}]} for t in ("Hel", "lo")]
            lines = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=lines, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={
            "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answered_by}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            "echo": {k: body.get(k) for k in ("response_format", "tools", "tool_choice")},
        })


@pytest.fixture
def fake():
    return FakeVLLM(extra_models=("ft:smol:acme:full:99999999",))


@pytest.fixture
def vllm(fake):
    return VLLMBackend("http://vllm:8000", BASE, served_model_name=SERVED, max_loaded_adapters=2,
                       transport=httpx.MockTransport(fake))


def lora(name: str, path: str = "/artifacts/x/final", base: str = BASE) -> ResolvedModel:
    return ResolvedModel(name, base, path, None, "org-1")


def body(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hey"}], **extra}


def run(coro):
    return asyncio.run(coro)


def test_base_model_goes_to_vllms_served_name_and_the_reply_keeps_the_requested_name(vllm, fake):
    answer = run(VLLMRouted(vllm, ResolvedModel(BASE, BASE, None, None)).chat_completion(body(BASE)))
    assert answer["model"] == BASE and answer["choices"][0]["message"]["content"] == "base"
    assert [c[1]["model"] for c in fake.calls if c[0] == "/v1/chat/completions"] == [SERVED]


def test_a_fine_tune_loads_its_adapter_once_and_is_answered_by_it(vllm, fake):
    async def go():
        routed = VLLMRouted(vllm, lora("ft:smol:acme:a:11111111", "/art/ftjob-a/final"))
        return [await routed.chat_completion(body("ft:smol:acme:a:11111111")) for _ in range(2)]

    first, second = run(go())
    loads = [c for c in fake.calls if c[0] == "/v1/load_lora_adapter"]
    assert loads == [("/v1/load_lora_adapter", {"lora_name": "ft:smol:acme:a:11111111",
                                                 "lora_path": "/art/ftjob-a/final"})]
    assert first["choices"][0]["message"]["content"] == "ft:smol:acme:a:11111111"  # the adapter, not the base
    assert second["model"] == "ft:smol:acme:a:11111111"


def test_adapters_beyond_the_cap_unload_the_least_recently_used(vllm, fake):
    async def go():
        for name in ("ft:a", "ft:b", "ft:a", "ft:c"):
            await VLLMRouted(vllm, lora(name, f"/art/{name}")).chat_completion(body(name))

    run(go())
    assert set(fake.adapters) == {"ft:a", "ft:c"}  # ft:b was least recently used
    assert [c[1]["lora_name"] for c in fake.calls if c[0] == "/v1/unload_lora_adapter"] == ["ft:b"]
    assert vllm.stats()["loaded_adapters"] == ["ft:a", "ft:c"]


def test_an_adapter_in_use_is_never_unloaded_a_full_house_is_a_429(vllm, fake):
    async def go():
        await vllm.acquire(VLLMModel("ft:a", BASE, "/art/a"))  # two requests in flight, never released
        await vllm.acquire(VLLMModel("ft:b", BASE, "/art/b"))
        with pytest.raises(EngineOverloaded, match="adapter slots"):
            await VLLMRouted(vllm, lora("ft:c", "/art/c")).chat_completion(body("ft:c"))
        await vllm.release("ft:a")
        return await VLLMRouted(vllm, lora("ft:c", "/art/c")).chat_completion(body("ft:c"))

    answer = run(go())
    assert answer["model"] == "ft:c" and set(fake.adapters) == {"ft:b", "ft:c"}


def test_another_base_model_is_refused_never_answered_by_vllms_base(vllm, fake):
    with pytest.raises(OpenAIError) as refused:
        run(VLLMRouted(vllm, lora("ft:qwen:acme:x:12345678", base="qwen-0.5b")).chat_completion(body("ft:q")))
    assert refused.value.status == 400 and refused.value.param == "model"
    assert refused.value.code == "model_not_available" and "qwen-0.5b" in refused.value.message
    assert not [c for c in fake.calls if c[0] in ("/v1/chat/completions", "/v1/load_lora_adapter")]


def test_a_full_fine_tune_not_loaded_in_vllm_is_refused_streaming_too(vllm, fake):
    full = ResolvedModel("ft:smol:acme:other:12345678", BASE, None, "/art/ftjob-f/final", "org-1")

    async def first_chunk():
        return await anext(VLLMRouted(vllm, full).chat_completion_stream(body(full.name, stream=True)))

    for call in (lambda: run(VLLMRouted(vllm, full).chat_completion(body(full.name))), lambda: run(first_chunk())):
        with pytest.raises(OpenAIError) as refused:
            call()
        assert refused.value.status == 400 and "full fine-tune" in refused.value.message
    assert not [c for c in fake.calls if c[0] == "/v1/chat/completions"]


def test_a_full_fine_tune_vllm_was_started_with_is_served_there(vllm, fake):
    full = ResolvedModel("ft:smol:acme:full:99999999", BASE, None, "/art/ftjob-f/final", "org-1")
    answer = run(VLLMRouted(vllm, full).chat_completion(body(full.name)))
    assert answer["choices"][0]["message"]["content"] == full.name


def test_what_vllm_lacks_goes_to_the_fallback_engine_when_configured(vllm, fake):
    class LocalStandIn:
        async def chat_completion(self, b):
            return {"model": b["model"], "answered_by": "local"}

    routed = VLLMRouted(vllm, lora("ft:qwen:x", base="qwen-0.5b"), fallback=LocalStandIn)
    assert run(routed.chat_completion(body("ft:qwen:x"))) == {"model": "ft:qwen:x", "answered_by": "local"}


def test_structured_output_and_tools_pass_through_unchanged(vllm, fake):
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    tool_choice = {"type": "function", "function": {"name": "f"}}
    extra = {"response_format": response_format, "tools": tools, "tool_choice": tool_choice}
    answer = run(VLLMRouted(vllm, ResolvedModel(BASE, BASE, None, None)).chat_completion(body(BASE, **extra)))
    assert answer["echo"] == extra


def test_streaming_passes_chunks_through_under_the_requested_name(vllm):
    async def go():
        routed = VLLMRouted(vllm, lora("ft:a", "/art/a"))
        return [c async for c in routed.chat_completion_stream(body("ft:a", stream=True))]

    chunks = run(go())
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Hello"
    assert all(c["model"] == "ft:a" for c in chunks)
    assert vllm._in_use == {}  # released when the stream ended


def test_vllm_errors_keep_their_status_message_and_param(vllm, fake):
    with pytest.raises(OpenAIError) as bad:
        run(VLLMRouted(vllm, ResolvedModel(BASE, BASE, None, None)).chat_completion(body(BASE, temperature=3)))
    assert (bad.value.status, bad.value.param) == (400, "temperature")
    with pytest.raises(OpenAIError) as missing:
        run(VLLMRouted(vllm, lora("ft:gone", "/art/missing")).chat_completion(body("ft:gone")))
    assert missing.value.status == 404 and "No adapter found" in missing.value.message
    fake.overloaded = True
    with pytest.raises(EngineOverloaded):
        run(VLLMRouted(vllm, ResolvedModel(BASE, BASE, None, None)).chat_completion(body(BASE)))


def test_already_loaded_elsewhere_counts_as_loaded_and_delete_unloads(vllm, fake):
    fake.adapters["ft:a"] = "/art/a"  # loaded by another openft replica

    async def go():
        await VLLMRouted(vllm, lora("ft:a", "/art/a")).chat_completion(body("ft:a"))
        return await vllm.unload("ft:a")

    assert run(go()) is True
    assert "ft:a" not in fake.adapters and vllm.stats()["loaded_adapters"] == []


def test_deleting_a_model_that_is_answering_unloads_it_when_the_request_ends(vllm, fake):
    async def go():
        target = await vllm.acquire(VLLMModel("ft:a", BASE, "/art/a"))
        assert await vllm.unload("ft:a") is True
        still_there = "ft:a" in fake.adapters
        await vllm.release(target)
        return still_there

    assert run(go()) is True
    assert "ft:a" not in fake.adapters
