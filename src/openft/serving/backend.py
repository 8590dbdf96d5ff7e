"""What the HTTP routers call: OpenAI-shaped chat/completions, whole or streamed, from some backend.

Bodies in and out are plain dicts in the OpenAI wire shape (the routers validate them with pydantic first),
so the local engine and a remote vLLM server are interchangeable behind ``ServingBackend``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from openft import __version__
from openft.models.chat_template import encode_prompt, parse_assistant_output, stop_token_ids
from openft.serving import completions
from openft.serving.completions import CompletionPlan
from openft.serving.detokenize import token_bytes
from openft.serving.grammar_request import chat_grammar
from openft.serving.types import GenerationRequest, TokenEvent

if TYPE_CHECKING:  # torch loads with the first engine, not with the API server
    from openft.serving.engine import Engine


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
        grammar=chat_grammar(body),  # response_format / tools / tool_choice / parallel_tool_calls
    )


def _seeded(request: GenerationRequest, index: int) -> GenerationRequest:
    if request.seed is None:
        return request
    return GenerationRequest(**{**vars(request), "seed": request.seed + index})


def _token_logprob(event: TokenEvent, text_of: Callable[[int], str],
                   bytes_of: Callable[[int], bytes] | None = None) -> dict[str, Any]:
    """Chat's logprobs entry; ``bytes`` are the token's own bytes (part of a character for some tokens)."""
    def entry(token_id: int, token: str, logprob: float) -> dict[str, Any]:
        raw = bytes_of(token_id) if bytes_of is not None else token.encode("utf-8")
        return {"token": token, "logprob": logprob, "bytes": list(raw)}

    out = entry(event.token_id, text_of(event.token_id), event.logprob)
    out["top_logprobs"] = [entry(t.token_id, t.token, t.logprob) for t in (event.top_logprobs or [])]
    return out


def _bytes_of(route: ModelRoute) -> Callable[[int], bytes]:
    tokenizer = route.engine.tokenizer
    return lambda token_id: token_bytes(tokenizer, token_id)


def system_fingerprint(route: ModelRoute) -> str:
    """OpenAI's ``system_fingerprint``: changes when what serves the request changes (openft's version, the base
    model's engine, the adapter), so a seeded result can be compared across calls."""
    what = f"{__version__}|{getattr(route.engine, '_name', '')}|{route.adapter or ''}"
    return "fp_" + hashlib.sha256(what.encode()).hexdigest()[:10]


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
        # Off the event loop: a megabytes-long prompt takes seconds to render and tokenize.
        prompt_ids = await asyncio.to_thread(encode_prompt, tokenizer, body["messages"], body.get("tools"))
        return route, request_from_body(body, prompt_ids, route.adapter, stop_token_ids(tokenizer))

    async def _plan_completion(self, body: dict[str, Any]) -> tuple[ModelRoute, CompletionPlan]:
        route = self._router(body["model"])
        await asyncio.to_thread(route.engine.wait_ready)
        tokenizer = route.engine.tokenizer
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        sized = {**body, "max_tokens": body.get("max_tokens") or completions.DEFAULT_MAX_TOKENS}
        base = request_from_body(sized, [], route.adapter, eos)
        # Off the event loop: the plan tokenizes (and decodes) every prompt.
        return route, await asyncio.to_thread(completions.CompletionPlan, body, tokenizer, base)

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
                bytes_of = _bytes_of(route)
                choice["logprobs"] = {"content": [_token_logprob(e, text_of, bytes_of) for e in events],
                                      "refusal": None}
            choices.append(choice)
        return {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": _usage(results[0].usage.prompt_tokens, sum(r.usage.completion_tokens for r in results)),
            "system_fingerprint": system_fingerprint(route),
        }

    async def chat_completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks as in OpenAI streaming; with ``tools`` the text is held until the end (a tool call is only
        recognisable once complete). A usage chunk follows when stream_options.include_usage is set."""
        route, request = await self._prepare_chat(body)
        chunk_id, created = _new_id("chatcmpl-"), int(time.time())
        with_tools = bool(body.get("tools"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        fingerprint = system_fingerprint(route)

        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs=None) -> dict[str, Any]:
            out = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
            }
            if include_usage:  # OpenAI: every chunk but the last carries "usage": null
                out["usage"] = None
            return out

        yield chunk({"role": "assistant", "content": ""})
        held: list[str] = []
        async for event in route.engine.generate(request):
            if event.finish_reason is None:
                logprobs = None
                if request.logprobs:
                    entry = _token_logprob(event, route.engine.token_text, _bytes_of(route))
                    logprobs = {"content": [entry], "refusal": None}
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
        route, plan = await self._plan_completion(body)
        choices, generated = await completions.whole(plan, route.engine.generate)
        return {
            "id": _new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": system_fingerprint(route),
            "choices": choices,
            "usage": _usage(plan.prompt_tokens, generated),
        }

    async def completion_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks of the completion object, one choice delta each (choices interleave when n or prompts > 1).
        With stream_options.include_usage a last chunk with no choices carries the usage. The other chunks leave
        `usage` out: OpenAI's schema for completion chunks has no null `usage` (chat chunks do)."""
        route, plan = await self._plan_completion(body)
        chunk_id, created = _new_id("cmpl-"), int(time.time())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {"id": chunk_id, "object": "text_completion", "created": created, "model": body["model"],
                "system_fingerprint": system_fingerprint(route)}
        async for delta, generated in completions.streamed(plan, route.engine.generate):
            if delta is not None:
                yield {**head, "choices": [delta]}
            elif include_usage:
                yield {**head, "choices": [], "usage": _usage(plan.prompt_tokens, generated)}
