"""LangChain's `ChatOpenAI`, unchanged, against a live server: plain calls, streaming, every
`with_structured_output` method, and `bind_tools` with a forced `tool_choice`."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from tests.conformance.conftest import MODEL

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="langchain-openai is not installed (pip install -e '.[dev]')")
openai = pytest.importorskip("openai")


class Verdict(BaseModel):
    """Whether the statement holds."""

    # No extra keys: the schema then says additionalProperties false, so a grammar-constrained answer closes
    # quickly even from the tiny random model (with extra keys allowed it may wander until max_tokens).
    model_config = ConfigDict(extra="forbid")

    answer: Literal["yes", "no"]
    confident: bool


class GetWeather(BaseModel):
    """Weather for a city."""

    model_config = ConfigDict(extra="forbid")

    city: Literal["Paris", "Oslo"]


@pytest.fixture(scope="module")
def chat(base_url, api_key):
    return langchain_openai.ChatOpenAI(model=MODEL, base_url=base_url, api_key=api_key, max_tokens=48,
                                       temperature=0, max_retries=0, timeout=120)


def test_invoke_stream_and_batch(chat):
    reply = chat.invoke("Is the sky blue?")
    assert isinstance(reply.content, str) and reply.usage_metadata["output_tokens"] >= 1
    streamed = "".join(chunk.content for chunk in chat.stream("Is the sky blue?"))
    assert streamed == reply.content
    assert len(chat.batch(["one", "two"])) == 2


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_with_structured_output_returns_the_pydantic_model(chat, method):
    result = chat.with_structured_output(Verdict, method=method).invoke("Is the sky blue?")
    assert isinstance(result, Verdict)


def test_with_structured_output_json_mode_gives_a_json_object_or_openai_length_error(chat):
    """json_mode promises JSON, not a schema or a length: a model that has not closed its object when max_tokens
    runs out gets finish_reason "length", which the SDK under LangChain raises as OpenAI's LengthFinishReasonError
    (the tiny random model rarely closes an open-ended object). Never a fake object."""
    schema = {"title": "Verdict", "type": "object", "properties": {"answer": {"type": "string"}}}
    runnable = chat.with_structured_output(schema, method="json_mode")
    try:
        result = runnable.invoke("Answer in JSON: is the sky blue?")
    except openai.LengthFinishReasonError as error:
        choice = error.completion.choices[0]
        assert choice.finish_reason == "length" and choice.message.content.lstrip().startswith("{")
    else:
        assert isinstance(result, dict)


def test_with_structured_output_default_method_and_include_raw(chat):
    result = chat.with_structured_output(Verdict, include_raw=True).invoke("Is the sky blue?")
    assert result["parsing_error"] is None and isinstance(result["parsed"], Verdict)


@pytest.mark.parametrize("tool_choice", ["GetWeather", "any", "required"])
def test_bind_tools_with_forced_tool_choice_calls_the_tool(chat, tool_choice):
    message = chat.bind_tools([GetWeather], tool_choice=tool_choice).invoke("Weather please")
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call["name"] == "GetWeather" and call["args"]["city"] in ("Paris", "Oslo")
