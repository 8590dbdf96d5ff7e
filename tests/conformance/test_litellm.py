"""litellm, unchanged, pointed at a live server as an OpenAI-compatible provider (`openai/<model>`)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conformance.conftest import MODEL

litellm = pytest.importorskip("litellm", reason="litellm is not installed (pip install -e '.[dev]')")

ASK = [{"role": "user", "content": "Is the sky blue?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                   "required": ["city"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def route(base_url, api_key) -> dict:
    return {"model": f"openai/{MODEL}", "api_base": base_url, "api_key": api_key, "max_retries": 0,
            "timeout": 120}


def test_completion_and_usage(route):
    response = litellm.completion(messages=ASK, max_tokens=6, temperature=0, **route)
    assert isinstance(response.choices[0].message.content, str)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_matches_whole(route):
    whole = litellm.completion(messages=ASK, max_tokens=6, temperature=0, **route)
    chunks = litellm.completion(messages=ASK, max_tokens=6, temperature=0, stream=True, **route)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_async_completion(route):
    response = asyncio.run(litellm.acompletion(messages=ASK, max_tokens=4, **route))
    assert response.choices[0].finish_reason in ("stop", "length")


def test_text_completion_with_n_and_logprobs(route):
    response = litellm.text_completion(prompt="Once upon a time", max_tokens=4, n=2, logprobs=1, **route)
    assert len(response.choices) == 2
    assert response.choices[0].logprobs is not None


def test_errors_map_to_litellm_exceptions(route):
    with pytest.raises(litellm.BadRequestError):
        litellm.completion(messages=ASK, temperature=9, **route)
    with pytest.raises(litellm.NotFoundError):
        litellm.completion(messages=ASK, **{**route, "model": "openai/no-such-model"})


def test_forced_tool_call(route):
    response = litellm.completion(messages=ASK, max_tokens=48, tools=[WEATHER],
                                  tool_choice={"type": "function", "function": {"name": "get_weather"}}, **route)
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")


def test_json_schema_response_format(route):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    response = litellm.completion(messages=ASK, max_tokens=32, **route, response_format={
        "type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": schema}})
    assert json.loads(response.choices[0].message.content)["answer"] in ("yes", "no")
