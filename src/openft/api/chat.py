"""POST /v1/chat/completions and /v1/completions on the local engine (or a vLLM server).

Every parameter is checked here: what the engine cannot honour is a 400 naming the parameter, never a
silent ignore.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import StreamingResponse

from openft.api.auth import current_org
from openft.api.errors import OpenAIError, bad_request
from openft.api.serving_state import ResolvedModel, resolve_model
from openft.serving.backend import LocalBackend, ServingBackend
from openft.serving.types import AdapterNotFound, EngineOverloaded, RequestTooLarge
from openft.store.tables import Organization

router = APIRouter(prefix="/v1", tags=["inference"])
Org = Annotated[Organization, Depends(current_org)]

MAX_N = 8
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
ROLES = {"system", "developer", "user", "assistant", "tool"}
# Accepted and meaningless for a self-hosted engine (bookkeeping fields of OpenAI's platform).
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"}
CHAT_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n",
               "seed", "logprobs", "top_logprobs", "stream", "stream_options", "tools", "tool_choice",
               "response_format", "frequency_penalty", "presence_penalty"} | IGNORED
COMPLETION_FIELDS = {"model", "prompt", "temperature", "top_p", "max_tokens", "stop", "n", "seed", "logprobs",
                     "stream", "stream_options", "echo", "suffix", "best_of", "frequency_penalty",
                     "presence_penalty", "user"}


def _number(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"Invalid value for '{name}': expected a number between {low:g} and {high:g}.", param=name)


def _integer(body: dict, name: str, low: int, high: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"Invalid value for '{name}': expected an integer between {low} and {high}.", param=name)


def _unsupported_zero(body: dict, name: str) -> None:
    if body.get(name) not in (None, 0, 0.0):
        raise bad_request(f"'{name}' is not supported by openft's engine; leave it unset or 0.", param=name)


def _check_common(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("Missing required parameter: 'model'.", param="model")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _integer(body, "n", 1, MAX_N)
    _integer(body, "max_tokens", 1, 1 << 20)
    _integer(body, "seed", -(1 << 63), (1 << 63) - 1)
    _unsupported_zero(body, "frequency_penalty")
    _unsupported_zero(body, "presence_penalty")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
            raise bad_request(f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings.",
                              param="stop")
    if body.get("stream_options") is not None:
        if not body.get("stream"):
            raise bad_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
        if not isinstance(body["stream_options"], dict):
            raise bad_request("'stream_options' must be an object.", param="stream_options")
    if body.get("stream") and (body.get("n") or 1) > 1:
        raise bad_request("Streaming with n > 1 is not supported by openft; use n=1 or stream=false.", param="n")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list.", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"'{where}' must be an object.", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"Invalid value for '{where}.role': {role!r}. Expected one of {sorted(ROLES)}.",
                              param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(f"'{where}.content' must be a string or a list of parts.", param=f"{where}.content")
        if isinstance(content, list):
            for part_index, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise bad_request(f"'{where}.content[{part_index}]': only text parts are supported by this "
                                      "model.", param=f"{where}.content[{part_index}]")
        if role == "tool" and not message.get("tool_call_id"):
            raise bad_request(f"'{where}.tool_call_id' is required for tool messages.", param=f"{where}.tool_call_id")
        if content is None and not (role == "assistant" and message.get("tool_calls")):
            raise bad_request(f"'{where}.content' is required.", param=f"{where}.content")


def _check_tools(body: dict) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be a list.", param="tools")
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            valid = isinstance(tool, dict) and tool.get("type") == "function" and isinstance(function, dict)
            if not valid or not isinstance(function.get("name"), str):
                raise bad_request(f"'tools[{index}]' must be a function tool with a 'function.name'.",
                                  param=f"tools[{index}]")
    choice = body.get("tool_choice")
    if choice in (None, "auto", "none"):
        return
    raise bad_request("openft's engine supports tool_choice 'auto' and 'none' only; it cannot force a tool call.",
                      param="tool_choice")


def _check_chat(body: dict) -> None:
    _check_common(body, CHAT_FIELDS)
    _check_messages(body.get("messages"))
    _integer(body, "max_completion_tokens", 1, 1 << 20)
    _check_tools(body)
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise bad_request("'logprobs' must be a boolean.", param="logprobs")
    _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if body.get("top_logprobs") and not body.get("logprobs"):
        raise bad_request("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object"):
            raise bad_request("response_format.type must be 'text' or 'json_object' (json_schema is not supported "
                              "by openft's engine).", param="response_format.type")


def _check_completion(body: dict) -> None:
    _check_common(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) and not (isinstance(prompt, list) and len(prompt) == 1
                                            and isinstance(prompt[0], str)):
        raise bad_request("'prompt' must be a string (lists of several prompts are not supported).", param="prompt")
    _integer(body, "logprobs", 0, 5)
    for name in ("echo", "suffix"):
        if body.get(name):
            raise bad_request(f"'{name}' is not supported by openft's engine.", param=name)
    if (body.get("best_of") or 1) != 1:
        raise bad_request("'best_of' is not supported by openft's engine; use n.", param="best_of")


def _backend(request: Request, model: ResolvedModel) -> ServingBackend:
    state = request.app.state
    if getattr(state, "vllm", None) is not None:
        state.vllm_adapters[model.name] = model.adapter_path
        return state.vllm
    route = state.engines.route(model)
    return LocalBackend(lambda _name: route)


def _engine_error(error: Exception) -> OpenAIError:
    if isinstance(error, EngineOverloaded):
        return OpenAIError(429, str(error), type="rate_limit_exceeded", code="rate_limit_exceeded")
    if isinstance(error, AdapterNotFound):
        return OpenAIError(404, str(error), param="model", code="model_not_found")
    return bad_request(str(error), param=error.param if isinstance(error, RequestTooLarge) else None)


async def _sse(stream: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    except (EngineOverloaded, AdapterNotFound, ValueError) as error:
        yield b"data: " + json.dumps(_engine_error(error).body()).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _serve(request: Request, org: Organization, body: dict, whole, streamed):
    model = resolve_model(org.id, body["model"])
    backend = _backend(request, model)
    if body.get("stream"):
        stream = streamed(backend)(body)
        try:
            first = await anext(stream)  # errors before the first chunk still get a proper status code
        except StopAsyncIteration:
            first = None
        except (EngineOverloaded, AdapterNotFound, ValueError) as error:
            raise _engine_error(error) from None

        async def chained() -> AsyncIterator[dict]:
            if first is not None:
                yield first
            async for chunk in stream:
                yield chunk

        return StreamingResponse(_sse(chained()), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        return await whole(backend)(body)
    except (EngineOverloaded, AdapterNotFound, ValueError) as error:
        raise _engine_error(error) from None


@router.post("/chat/completions")
async def chat_completions(request: Request, org: Org, body: Annotated[dict[str, Any], Body()]):
    _check_chat(body)
    if body.get("tool_choice") == "none":
        body = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
    return await _serve(request, org, body, lambda b: b.chat_completion, lambda b: b.chat_completion_stream)


@router.post("/completions")
async def completions(request: Request, org: Org, body: Annotated[dict[str, Any], Body()]):
    _check_completion(body)
    if isinstance(body["prompt"], list):
        body = {**body, "prompt": body["prompt"][0]}
    return await _serve(request, org, body, lambda b: b.completion, lambda b: b.completion_stream)


@router.get("/serving/stats")
def serving_stats(request: Request, _org: Org) -> dict[str, Any]:
    """openft extension: batching counters of every loaded engine (forward steps, batch sizes, adapter mixing)."""
    engines = getattr(request.app.state, "engines", None)
    return {"object": "serving.stats", "engines": engines.stats() if engines is not None else {}}
