"""Structured outputs and forced tool calls through a live server and the openai SDK (tiny model)."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.fixtures.server import register_model, start_server, stop_server

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "color": {"type": "string", "enum": ["red", "green"]}},
    "required": ["ok", "color"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "set_mode", "strict": True, "parameters": {
        "type": "object", "properties": {"mode": {"enum": ["on", "off"]}}, "required": ["mode"],
        "additionalProperties": False}}},
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-grammar")
    register_model(home, "tiny-llama", tiny_model_dir)
    live = start_server(home)
    yield live.client(live.create_key("grammar-org"), timeout=120)
    stop_server(live)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_json_schema_answer_validates_or_ends_with_length(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    for max_tokens in (3, 24):
        reply = client.chat.completions.create(model="tiny-llama", messages=ask("Verdict?"), max_tokens=max_tokens,
                                               temperature=1.0, seed=3, n=2, response_format=response_format)
        for choice in reply.choices:
            if choice.finish_reason == "stop":
                jsonschema.validate(json.loads(choice.message.content), SCHEMA)
            else:  # 3 tokens cannot hold the object; 24 always can (only the values are the model's choice)
                assert choice.finish_reason == "length" and max_tokens == 3


def test_unsupported_schema_keyword_is_a_400_naming_it(client):
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "note": {"type": "string", "minLength": 3}},
              "required": ["ok", "color", "note"]}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny-llama", messages=ask("x"), max_tokens=4, response_format={
            "type": "json_schema", "json_schema": {"name": "v", "schema": schema, "strict": True}})
    assert error.value.status_code == 400
    assert error.value.body["param"] == "response_format.json_schema.schema"
    assert "'minLength'" in error.value.body["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_gives_a_call_to_that_function(client, stream):
    kwargs = dict(model="tiny-llama", messages=ask("Turn it on"), tools=TOOLS, max_tokens=40, temperature=0,
                  tool_choice={"type": "function", "function": {"name": "set_mode"}})
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason][0]
        calls = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
        name, arguments = (calls[0].function.name, calls[0].function.arguments) if calls else (None, None)
    else:
        reply = client.chat.completions.create(**kwargs)
        finish = reply.choices[0].finish_reason
        calls = reply.choices[0].message.tool_calls or []
        name, arguments = (calls[0].function.name, calls[0].function.arguments) if calls else (None, None)
    # the call is ~25 tokens: everything but the enum value is forced, and the grammar ends after one call
    assert finish == "tool_calls" and len(calls) == 1 and name == "set_mode"
    assert json.loads(arguments)["mode"] in ("on", "off")


def test_required_with_parallel_tool_calls_false_gives_one_call(client):
    reply = client.chat.completions.create(model="tiny-llama", messages=ask("Do something"), tools=TOOLS,
                                           tool_choice="required", parallel_tool_calls=False, max_tokens=40,
                                           temperature=1.0, seed=5, n=3)
    for choice in reply.choices:
        calls = choice.message.tool_calls or []
        assert len(calls) <= 1
        if choice.finish_reason != "length":
            assert choice.finish_reason == "tool_calls" and calls[0].function.name in ("set_mode", "ping")


def test_auto_and_none_still_work(client):
    for choice in ("auto", "none"):
        reply = client.chat.completions.create(model="tiny-llama", messages=ask("Hi"), tools=TOOLS,
                                               tool_choice=choice, max_tokens=6, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
