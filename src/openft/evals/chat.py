"""How evaluations call models: `ChatFn(model, messages, **params) -> ChatReply(text, usage, latency_s)`.

`LocalChat` wraps an in-process serving backend (openft.serving.backend.LocalBackend); `OpenAIChat` wraps any
OpenAI-compatible endpoint through the `openai` SDK. Both decode greedily (temperature 0) so that strategies
are compared on the same footing and reruns give the same predictions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple, Protocol


class ChatReply(NamedTuple):
    text: str
    usage: dict[str, int]  # prompt_tokens, completion_tokens as the model's server counted them
    latency_s: float
    tool_calls: list[dict[str, Any]] | None = None  # the message's tool calls, OpenAI-shaped, when it made any


class ChatFn(Protocol):
    def __call__(self, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatReply: ...


def reply_from_completion(completion: dict[str, Any], latency_s: float) -> ChatReply:
    """A ChatReply from an OpenAI chat.completion dict."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    usage = completion.get("usage") or {}
    return ChatReply(
        text,
        {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        },
        latency_s,
        message.get("tool_calls") or None,
    )


class LocalChat:
    """Calls a ServingBackend in this process, one request at a time so each latency is the request's own."""

    def __init__(self, backend: Any, max_tokens: int = 256) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self._loop = asyncio.new_event_loop()

    def __call__(self, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatReply:
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens, **params}
        start = time.perf_counter()
        completion = self._loop.run_until_complete(self.backend.chat_completion(body))
        return reply_from_completion(completion, time.perf_counter() - start)

    def close(self) -> None:
        self._loop.close()


class OpenAIChat:
    """Calls an OpenAI-compatible endpoint (a hosted model used as a reference, or an LLM judge)."""

    def __init__(self, base_url: str | None, api_key: str, max_tokens: int = 256, timeout_s: float = 120.0) -> None:
        from openai import OpenAI

        from openft.outbound import guarded_http_client

        # The endpoint is user-supplied: every connection is checked against OPENFT_OUTBOUND_ALLOW (no SSRF).
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2,
                             http_client=guarded_http_client())
        self.max_tokens = max_tokens

    def __call__(self, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatReply:
        start = time.perf_counter()
        completion = self.client.chat.completions.create(
            model=model, messages=messages, **{"temperature": 0, "max_tokens": self.max_tokens, **params}
        )
        return reply_from_completion(completion.model_dump(), time.perf_counter() - start)

    def close(self) -> None:
        self.client.close()
