"""LocalBackend: OpenAI-shaped chat completions from the engine, whole and streamed."""

from __future__ import annotations

import asyncio
import json

from openft.serving.backend import LocalBackend, ModelRoute


def test_chat_completion_has_openai_shape_and_usage(engine):
    backend = LocalBackend(lambda name: ModelRoute(engine, None if name == "base" else name))
    body = {"model": "ft:a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0}
    response = asyncio.run(backend.chat_completion({**body, "logprobs": True, "top_logprobs": 2}))
    choice = response["choices"][0]
    assert response["object"] == "chat.completion" and response["id"].startswith("chatcmpl-")
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert response["usage"]["completion_tokens"] <= 6
    assert len(choice["logprobs"]["content"]) == response["usage"]["completion_tokens"]

    async def stream():
        return [c async for c in backend.chat_completion_stream({**body, "stream_options": {"include_usage": True}})]

    chunks = asyncio.run(stream())
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == (choice["message"]["content"] or "")
    assert chunks[-1]["usage"]["completion_tokens"] == response["usage"]["completion_tokens"]


def test_json_object_response_format_parses(engine):
    backend = LocalBackend(lambda name: ModelRoute(engine, None))
    body = {
        "model": "base",
        "messages": [{"role": "user", "content": "Give JSON"}],
        "max_tokens": 20,
        "seed": 3,
        "response_format": {"type": "json_object"},
    }
    response = asyncio.run(backend.chat_completion(body))
    assert isinstance(json.loads(response["choices"][0]["message"]["content"]), dict)
