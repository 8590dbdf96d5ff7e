"""Structured outputs on the real bundled SmolLM2-135M: every answer validates against its schema or says
"length", at every budget from 8 tokens up; forced tool calls always parse and name the forced function.

All requests go through one engine at once (batched), so the whole file takes a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from openft.models.chat_template import encode_prompt, parse_assistant_output, stop_token_ids
from openft.serving.engine import Engine
from openft.serving.grammar_request import chat_grammar
from openft.serving.types import GenerationRequest
from tests.serving.conftest import make_loader

pytestmark = pytest.mark.real_model


def _object(properties: dict, **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False,
            **extra}


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number", "boolean"))
CASES = [
    ("Describe a fictional person.", _object({"name": STRING, "age": INTEGER})),
    ("What's the weather like in Paris today?", _object({"city": STRING, "temperature_c": NUMBER,
                                                         "sky": {"enum": ["sunny", "cloudy", "rainy"]}})),
    ("List three ingredients for pancakes.", _object({"ingredients": {"type": "array", "items": STRING,
                                                                       "minItems": 1, "maxItems": 3}})),
    ("Is this review positive? 'I loved the film.'", _object({"sentiment": {"enum": ["positive", "negative"]},
                                                             "confidence": {"type": "number", "minimum": 0,
                                                                            "maximum": 1}})),
    ("What is 12 times 7?", _object({"answer": INTEGER})),
    ("Plan a meeting next Monday.", _object({"title": STRING, "date": {"type": "string", "format": "date"}})),
    ("Is the sky green?", _object({"yes": BOOLEAN, "reason": STRING})),
    ("Give me the address of a museum.", _object({"museum": STRING, "address": _object({"street": STRING,
                                                                                        "city": STRING})})),
    ("Name a product and its price if known.", _object({"product": STRING,
                                                        "price": {"anyOf": [NUMBER, {"type": "null"}]}})),
    ("Write a short to-do list.", _object({"todos": {"type": "array", "items": {"$ref": "#/$defs/todo"},
                                                     "maxItems": 2}},
                                          **{"$defs": {"todo": _object({"task": STRING, "done": BOOLEAN})}})),
    ("Pick a color as RGB.", _object({"r": {"type": "integer", "minimum": 0, "maximum": 255},
                                      "g": {"type": "integer", "minimum": 0, "maximum": 255},
                                      "b": {"type": "integer", "minimum": 0, "maximum": 255}})),
    ("Recommend a book.", _object({"title": STRING, "author": STRING, "year": INTEGER})),
    ("Rate the movie Inception from 0 to 10.", _object({"movie": STRING, "rating": NUMBER})),
    ("Translate 'hello' into French.", _object({"source": STRING, "target": STRING, "text": STRING})),
]
BUDGETS = (8, 16, 32, 64)
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
                                      "strict": True, "parameters": _object(
                                          {"city": STRING, "unit": {"enum": ["celsius", "fahrenheit"]}})}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers",
                                      "parameters": _object({"a": INTEGER, "b": INTEGER})}},
    {"type": "function", "function": {"name": "send_email", "description": "Send an email", "strict": True,
                                      "parameters": _object({"to": STRING, "subject": STRING})}},
]
TOOL_PROMPTS = [
    ("What's the weather in Tokyo?", "get_weather"),
    ("How warm is it in Lima right now?", "get_weather"),
    ("What is 2 plus 40?", "add"),
    ("Add 17 and 25 for me.", "add"),
    ("Email bob@example.com about lunch.", "send_email"),
    ("Tell Alice the meeting moved.", "send_email"),
    ("Hi there!", "get_weather"),  # forced even when the prompt does not call for it
    ("Add numbers please", "required"),
]


@pytest.fixture(scope="module")
def real_engine(real_model_dir):
    engine = Engine(make_loader(real_model_dir), max_batch_size=32)
    engine.wait_ready(timeout=300)
    yield engine
    engine.close()


def _gather(engine: Engine, requests: list[GenerationRequest]):
    async def run():
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    return asyncio.run(run())


def test_json_schema_answers_validate_or_end_with_length(real_engine):
    tokenizer = real_engine.tokenizer
    stops = stop_token_ids(tokenizer)
    cases, requests = [], []
    for index, (prompt, schema) in enumerate(CASES):
        body = {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": f"case{index}", "schema": schema, "strict": True}}}
        prompt_ids = encode_prompt(tokenizer, [{"role": "user", "content": prompt + " Answer in JSON."}])
        for budget in BUDGETS:
            cases.append((schema, budget))
            requests.append(GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=budget, temperature=0.7,
                                              seed=index * 10 + budget, stop_token_ids=stops,
                                              grammar=chat_grammar(body)))
    assert len(requests) >= 50
    results = _gather(real_engine, requests)
    completed_at_64 = 0
    for (schema, budget), result in zip(cases, results, strict=True):
        if result.finish_reason == "stop":
            jsonschema.validate(json.loads(result.text), schema)
            completed_at_64 += budget == 64
        else:
            assert result.finish_reason == "length", result
            assert result.usage.completion_tokens == budget
    assert completed_at_64 >= len(CASES) // 2  # the answers are useful, not merely cut


def test_forced_tool_calls_always_parse_and_name_the_function(real_engine):
    tokenizer = real_engine.tokenizer
    stops = stop_token_ids(tokenizer)
    requests, expected = [], []
    for prompt, name in TOOL_PROMPTS:
        choice = "required" if name == "required" else {"type": "function", "function": {"name": name}}
        body = {"tools": TOOLS, "tool_choice": choice}
        prompt_ids = encode_prompt(tokenizer, [{"role": "user", "content": prompt}], TOOLS)
        requests.append(GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=64, temperature=0,
                                          stop_token_ids=stops, grammar=chat_grammar(body)))
        expected.append(name)
    for name, result in zip(expected, _gather(real_engine, requests), strict=True):
        content, calls = parse_assistant_output(result.text)
        assert result.finish_reason == "stop" and calls and content is None, result.text
        names = {t["function"]["name"] for t in TOOLS} if name == "required" else {name}
        for call in calls:
            assert call["function"]["name"] in names
            tool = next(t for t in TOOLS if t["function"]["name"] == call["function"]["name"])
            jsonschema.validate(json.loads(call["function"]["arguments"]), tool["function"]["parameters"])
