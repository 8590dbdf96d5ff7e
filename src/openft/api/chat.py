"""POST /v1/chat/completions and /v1/completions on the local engine (or a vLLM server).

Every parameter is checked here: what the engine cannot honour is a 400 naming the parameter, never a
silent ignore.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response, StreamingResponse

from openft.api.auth import current_org
from openft.api.completion_checks import check_completion_request
from openft.api.errors import OpenAIError, bad_request
from openft.api.rate_limits import refund_request_tokens, reserve_request_tokens, settle_request_tokens
from openft.api.serving_state import ResolvedModel, backend_for, resolve_model
from openft.api.serving_visibility import visible_stats
from openft.data.codes import Severity
from openft.data.issues import Issues
from openft.data.messages import check_messages
from openft.serving.backend import ServingBackend
from openft.serving.grammar_request import GrammarRequestError, chat_grammar
from openft.serving.types import AdapterNotFound, EngineOverloaded
from openft.store.tables import Organization

router = APIRouter(prefix="/v1", tags=["inference"])
Org = Annotated[Organization, Depends(current_org)]

MAX_N = 8
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
ROLES = {"system", "developer", "user", "assistant", "tool"}
# Accepted and meaningless for a self-hosted engine (bookkeeping fields of OpenAI's platform).
IGNORED = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
CHAT_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n",
               "seed", "logprobs", "top_logprobs", "stream", "stream_options", "tools", "tool_choice",
               "response_format", "parallel_tool_calls", "frequency_penalty", "presence_penalty"} | IGNORED
REQUEST_TOLERATED_CODES = {"tool_call_arguments_invalid_json"}
# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"
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


def _check_messages(messages: Any) -> None:
    """The shape rules training data follows (data/messages.py), in request mode: every nested value the chat
    template will read (content parts, tool calls, their functions) is checked before it reaches it."""
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
    issues = Issues()
    check_messages(messages, issues, "messages", request=True)
    for issue in issues.items:
        # Arguments a model produced may be invalid JSON; the template renders them verbatim, as OpenAI accepts.
        if issue.severity is Severity.ERROR and issue.code not in REQUEST_TOLERATED_CODES:
            param = issue.field or "messages"
            raise bad_request(f"Invalid value for '{param}': {issue.message}.", param=param, code=issue.code)


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


def _check_structured_output(body: dict) -> None:
    """response_format, tool_choice, parallel_tool_calls and strict tool schemas: compiled to a grammar here
    so that an unsupported schema keyword is a 400 naming it (serving/grammar_request.py)."""
    tools_dropped = body.get("tool_choice") == "none"  # the router drops the tools; only the format remains
    checked = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")} if tools_dropped else body
    try:
        chat_grammar(checked)
    except GrammarRequestError as error:
        raise bad_request(str(error), param=error.param) from None


def _check_chat(body: dict) -> None:
    _check_common(body, CHAT_FIELDS)
    if body.get("stream") and (body.get("n") or 1) > 1:
        raise bad_request("Streaming with n > 1 is not supported by openft's chat; use n=1 or stream=false.",
                          param="n")
    _check_messages(body.get("messages"))
    _integer(body, "max_completion_tokens", 1, 1 << 20)
    _check_tools(body)
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise bad_request("'logprobs' must be a boolean.", param="logprobs")
    _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if body.get("top_logprobs") and not body.get("logprobs"):
        raise bad_request("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    _check_structured_output(body)


def _check_completion(body: dict) -> None:
    _check_common(body, COMPLETION_FIELDS)
    check_completion_request(body)


def _backend(request: Request, model: ResolvedModel) -> ServingBackend:
    return backend_for(request.app.state, model)  # local engines under their memory cap, or vLLM


def _engine_error(error: Exception) -> OpenAIError:
    if isinstance(error, EngineOverloaded):
        return OpenAIError(429, str(error), type="rate_limit_exceeded", code="rate_limit_exceeded")
    if isinstance(error, AdapterNotFound):
        return OpenAIError(404, str(error), param="model", code="model_not_found")
    return bad_request(str(error), param=getattr(error, "param", None))  # RequestTooLarge, PromptError


async def _sse(stream: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    except (EngineOverloaded, AdapterNotFound, ValueError) as error:
        yield b"data: " + json.dumps(_engine_error(error).body()).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _unless_disconnected(request: Request, work: Awaitable[dict]) -> dict | None:
    """Await a whole answer, cancelling it (the engine drops the request from its batch) as soon as the client
    is gone; None then. Streams need no such watch: a closed stream stops its generator."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()


async def _serve(request: Request, org: Organization, body: dict, whole, streamed):
    model = resolve_model(org.id, body["model"])
    reserved = reserve_request_tokens(request, body)
    backend = _backend(request, model)
    if body.get("stream"):
        stream = streamed(backend)(body)
        try:
            first = await anext(stream)  # errors before the first chunk still get a proper status code
        except StopAsyncIteration:
            first = None
        except (EngineOverloaded, AdapterNotFound, ValueError) as error:
            refund_request_tokens(request, reserved)
            raise _engine_error(error) from None

        async def chained() -> AsyncIterator[dict]:
            if first is not None:
                yield first
            async for chunk in stream:
                yield chunk

        return StreamingResponse(_sse(chained()), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        answer = await _unless_disconnected(request, whole(backend)(body))
    except (EngineOverloaded, AdapterNotFound, ValueError) as error:
        refund_request_tokens(request, reserved)
        raise _engine_error(error) from None
    if answer is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it; logs show why it stopped
    settle_request_tokens(request, reserved, answer)
    return answer


@router.post("/chat/completions")
async def chat_completions(request: Request, org: Org, body: Annotated[dict[str, Any], Body()]):
    _check_chat(body)
    if body.get("tool_choice") == "none":
        body = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
    return await _serve(request, org, body, lambda b: b.chat_completion, lambda b: b.chat_completion_stream)


@router.post("/completions")
async def completions(request: Request, org: Org, body: Annotated[dict[str, Any], Body()]):
    _check_completion(body)
    return await _serve(request, org, body, lambda b: b.completion, lambda b: b.completion_stream)


@router.get("/serving/stats")
def serving_stats(request: Request, org: Org) -> dict[str, Any]:
    """openft extension: batching counters of every loaded engine (forward steps, batch sizes, adapter mixing).
    Only the caller's own adapters and full fine-tunes are listed (serving_visibility.py)."""
    engines = getattr(request.app.state, "engines", None)
    return {"object": "serving.stats", "engines": visible_stats(org.id, engines.stats()) if engines is not None else {}}
