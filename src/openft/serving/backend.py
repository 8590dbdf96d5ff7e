"""What the HTTP routers call: OpenAI-shaped chat/completions, whole or streamed, from some backend.

Bodies in and out are plain dicts in the OpenAI wire shape (the routers validate them with pydantic first),
so the local engine and a remote vLLM server are interchangeable behind ``ServingBackend``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from openft.models.chat_template import encode_prompt, parse_assistant_output, stop_token_ids
from openft.serving.engine import Engine
from openft.serving.types import GenerationRequest, TokenEvent


class ServingBackend(Protocol):
    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def chat_completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...
    async def completion(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...


@dataclass(frozen=True)
class ModelRoute:
    """Where a model name is served: an engine (one per base model) and the adapter key within it."""

    engine: Engine
    adapter: str | None


ModelRouter = Callable[[str], ModelRoute]
"""Maps an OpenAI ``model`` name to its route; raises openft.models.registry.ModelNotFound (404)."""


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def request_from_body(body: dict[str, Any], prompt_ids: list[int], adapter: str | None, stop_ids: list[int]):
    """Map OpenAI sampling parameters onto a GenerationRequest (OpenAI defaults: temperature 1, top_p 1)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    response_format = body.get("response_format") or {}
    logprobs = body.get("logprobs")
    top_logprobs = body.get("top_logprobs") or (logprobs if isinstance(logprobs, int) and logprobs > 1 else 0)
    return GenerationRequest(
        prompt_ids=prompt_ids,
        adapter=adapter,
        max_new_tokens=int(max_tokens),
        temperature=float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0),
        top_p=float(body.get("top_p") if body.get("top_p") is not None else 1.0),
        stop_token_ids=stop_ids,
        stop_strings=_stop_list(body.get("stop")),
        seed=body.get("seed"),
        logprobs=bool(logprobs),
        top_logprobs=int(top_logprobs or 0),
        json_mode=response_format.get("type") in ("json_object", "json_schema"),
    )


def _seeded(request: GenerationRequest, index: int) -> GenerationRequest:
    if request.seed is None:
        return request
    return GenerationRequest(**{**vars(request), "seed": request.seed + index})


def _token_logprob(event: TokenEvent, text_of: Callable[[int], str]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    out = entry(text_of(event.token_id), event.logprob)
    out["top_logprobs"] = [entry(t.token, t.logprob) for t in (event.top_logprobs or [])]
    return out


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class LocalBackend:
    """Serves OpenAI-shaped requests from in-process engines."""

    def __init__(self, router: ModelRouter) -> None:
        self._router = router

    async def _prepare_chat(self, body: dict[str, Any]) -> tuple[ModelRoute, GenerationRequest]:
        route = self._router(body["model"])
        await asyncio.to_thread(route.engine.wait_ready)
        tokenizer = route.engine.tokenizer
        prompt_ids = encode_prompt(tokenizer, body["messages"], body.get("tools"))
        return route, request_from_body(body, prompt_ids, route.adapter, stop_token_ids(tokenizer))

    async def _prepare_completion(self, body: dict[str, Any]) -> tuple[ModelRoute, GenerationRequest]:
        route = self._router(body["model"])
        await asyncio.to_thread(route.engine.wait_ready)
        tokenizer = route.engine.tokenizer
        prompt = body["prompt"]
        prompt_ids = tokenizer.encode(prompt if isinstance(prompt, str) else "".join(prompt))
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return route, request_from_body(body, prompt_ids, route.adapter, eos)

    async def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        route, request = await self._prepare_chat(body)
        n = int(body.get("n") or 1)
        results = await asyncio.gather(*(route.engine.complete(_seeded(request, i)) for i in range(n)))
        choices = []
        for index, result in enumerate(results):
            content, tool_calls = parse_assistant_output(result.text)
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            finish = result.finish_reason
            if tool_calls and body.get("tools"):
                message["tool_calls"] = tool_calls
                finish = "tool_calls"
            choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": finish, "logprobs": None}
            if request.logprobs:
                text_of = route.engine.token_text
                events = [
                    TokenEvent(token_id=t, text="", logprob=lp, top_logprobs=tops)
                    for t, lp, tops in zip(
                        result.token_ids,
                        result.logprobs or [],
                        result.top_logprobs or [[]] * len(result.token_ids),
                        strict=False,
                    )
                ]
                choice["logprobs"] = {"content": [_token_logprob(e, text_of) for e in events], "refusal": None}
            choices.append(choice)
        return {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": _usage(results[0].usage.prompt_tokens, sum(r.usage.completion_tokens for r in results)),
            "system_fingerprint": None,
        }

    async def chat_completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks as in OpenAI streaming; with ``tools`` the text is held until the end (a tool call is only
        recognisable once complete). A usage chunk follows when stream_options.include_usage is set."""
        route, request = await self._prepare_chat(body)
        chunk_id, created = _new_id("chatcmpl-"), int(time.time())
        with_tools = bool(body.get("tools"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs=None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
            }

        yield chunk({"role": "assistant", "content": ""})
        held: list[str] = []
        async for event in route.engine.generate(request):
            if event.finish_reason is None:
                logprobs = None
                if request.logprobs:
                    logprobs = {"content": [_token_logprob(event, route.engine.token_text)], "refusal": None}
                if with_tools:
                    held.append(event.text)
                elif event.text or logprobs:
                    yield chunk({"content": event.text}, logprobs=logprobs)
                continue
            finish = event.finish_reason
            if with_tools:
                content, tool_calls = parse_assistant_output("".join(held) + event.text)
                if tool_calls:
                    finish = "tool_calls"
                    calls = [{"index": i, **call} for i, call in enumerate(tool_calls)]
                    yield chunk({"content": content, "tool_calls": calls})
                elif content:
                    yield chunk({"content": content})
            elif event.text:
                yield chunk({"content": event.text})
            yield chunk({}, finish)
            if include_usage:
                usage = event.usage
                yield {**chunk({}), "choices": [], "usage": _usage(usage.prompt_tokens, usage.completion_tokens)}

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        route, request = await self._prepare_completion(body)
        result = await route.engine.complete(request)
        logprobs = None
        if request.logprobs:
            text_of = route.engine.token_text
            logprobs = {
                "tokens": [text_of(t) for t in result.token_ids],
                "token_logprobs": result.logprobs,
                "top_logprobs": [{t.token: t.logprob for t in tops} for tops in (result.top_logprobs or [])] or None,
            }
        return {
            "id": _new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": logprobs}],
            "usage": _usage(result.usage.prompt_tokens, result.usage.completion_tokens),
        }

    async def completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        route, request = await self._prepare_completion(body)
        chunk_id, created = _new_id("cmpl-"), int(time.time())
        async for event in route.engine.generate(request):
            if event.text or event.finish_reason:
                yield {
                    "id": chunk_id,
                    "object": "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "text": event.text, "finish_reason": event.finish_reason, "logprobs": None}
                    ],
                }
