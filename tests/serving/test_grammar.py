"""Constrained decoding on the tiny model: what a user of response_format / tool_choice would notice.

The tiny model is random, so it wanders; the grammar must still make every answer that ends with "stop"
valid, and an answer the budget cuts must say "length" instead of pretending to be complete.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from openft.models.chat_template import encode_prompt, parse_assistant_output
from openft.serving.grammar import GrammarVocabulary, json_object_grammar, json_schema_grammar
from openft.serving.grammar_request import GrammarRequestError, chat_grammar
from openft.serving.types import GenerationRequest

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
VERDICT = {  # short to complete, so the random model finishes some answers
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]},
                   "score": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}]}},
    "required": ["ok", "color", "score"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"$ref": "#/$defs/item"}},
                   "when": {"type": "string", "format": "date"}},
    "required": ["items", "when"],
    "additionalProperties": False,
    "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"}, "done": {"type": "boolean"}},
                       "required": ["id", "done"], "additionalProperties": False}},
}
SCHEMAS = [PERSON, VERDICT, NESTED]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "strict": True,
    "parameters": {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer"}},
                   "required": ["unit", "days"], "additionalProperties": False}}}
LOOKUP = {"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}


def response_format(schema: dict, strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": strict}}


def _prompt(engine, text: str) -> list[int]:
    return encode_prompt(engine.tokenizer, [{"role": "user", "content": text}])


def _run(engine, requests: list[GenerationRequest]):
    async def run():
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    return asyncio.run(run())


def test_json_schema_answers_validate_or_end_with_length_at_every_budget(engine):
    cases = [(schema, budget, seed) for schema in SCHEMAS for budget in (1, 3, 8, 16, 40) for seed in (0,)]
    prompt = _prompt(engine, "Answer in JSON")
    requests = [
        GenerationRequest(prompt_ids=prompt, max_new_tokens=budget, temperature=1.0, seed=seed,
                          grammar=chat_grammar({"response_format": response_format(schema)}))
        for schema, budget, seed in cases
    ]
    completed = 0
    for (schema, budget, _), result in zip(cases, _run(engine, requests), strict=True):
        if result.finish_reason == "stop":
            jsonschema.validate(json.loads(result.text), schema)
            completed += 1
        else:
            assert result.finish_reason == "length", result
            assert result.usage.completion_tokens == budget
    assert completed > 0  # the short schema does complete within 40 tokens


def test_json_object_never_closes_early_when_the_budget_is_tiny(engine):
    prompt = _prompt(engine, "JSON please")
    requests = [GenerationRequest(prompt_ids=prompt, max_new_tokens=n, temperature=1.0, seed=s, json_mode=True)
                for n in (1, 2, 4) for s in range(2)]
    for result in _run(engine, requests):
        if result.finish_reason == "stop":
            assert isinstance(json.loads(result.text), dict)
        else:
            assert result.finish_reason == "length"
            assert result.text != '{"": null}'


def test_free_rows_are_unchanged_by_constrained_rows_in_the_same_batch(engine):
    prompts = [_prompt(engine, f"Tell me about number {i}") for i in range(3)]
    free = [GenerationRequest(prompt_ids=p, max_new_tokens=10, temperature=0) for p in prompts]
    constrained = [GenerationRequest(prompt_ids=p, max_new_tokens=10, temperature=0,
                                     grammar=json_schema_grammar(VERDICT)) for p in prompts]
    alone = _run(engine, free)
    mixed = _run(engine, [x for pair in zip(free, constrained, strict=True) for x in pair])
    assert [r.token_ids for r in mixed[0::2]] == [r.token_ids for r in alone]
    assert engine.stats()["multi_request_steps"] > 0
    for result in mixed[1::2]:
        assert result.finish_reason == "length" or jsonschema.validate(json.loads(result.text), VERDICT) is None


def _calls(result) -> list[dict]:
    return parse_assistant_output(result.text)[1]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_is_a_parseable_call_to_the_function(engine, tool_choice):
    body = {"tools": [WEATHER, LOOKUP], "tool_choice": tool_choice}
    prompt = encode_prompt(engine.tokenizer, [{"role": "user", "content": "Weather?"}], body["tools"])
    requests = [GenerationRequest(prompt_ids=prompt, max_new_tokens=48, temperature=1.0, seed=s,
                                  grammar=chat_grammar(body)) for s in range(4)]
    names = {"get_weather"} if isinstance(tool_choice, dict) else {"get_weather", "lookup"}
    parsed = 0
    for result in _run(engine, requests):
        assert result.text.startswith("<tool_call>\n{\"name\": ")
        if result.finish_reason == "length":
            continue
        calls = _calls(result)
        assert calls and {c["function"]["name"] for c in calls} <= names
        if isinstance(tool_choice, dict):
            assert len(calls) == 1
        for call in calls:
            if call["function"]["name"] == "get_weather":
                jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])
        parsed += 1
    assert parsed > 0


def test_parallel_tool_calls_false_allows_at_most_one_call(engine):
    tools = [LOOKUP]
    prompt = encode_prompt(engine.tokenizer, [{"role": "user", "content": "Check"}], tools)
    for choice in ("required", "auto"):
        body = {"tools": tools, "tool_choice": choice, "parallel_tool_calls": False}
        requests = [GenerationRequest(prompt_ids=prompt, max_new_tokens=32, temperature=1.0, seed=s,
                                      grammar=chat_grammar(body)) for s in range(4)]
        for result in _run(engine, requests):
            assert result.text.count("<tool_call>") <= 1
            assert len(_calls(result)) <= 1


def test_auto_with_a_strict_tool_constrains_the_calls_it_makes(smollm2_tokenizer):
    grammar = chat_grammar({"tools": [WEATHER], "tool_choice": "auto"})
    vocab = GrammarVocabulary(smollm2_tokenizer, len(smollm2_tokenizer))

    def accepts(text: str) -> bool:
        matcher = vocab.matcher(grammar)
        ids = smollm2_tokenizer.encode(text, add_special_tokens=False)
        return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()

    assert accepts("Sure, it is sunny.")
    assert accepts('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"unit": "c", "days": 2}}'
                   "\n</tool_call>")
    assert not accepts('<tool_call>\n{"name": "get_weather", "arguments": {"unit": "kelvin", "days": 2}}')
    assert not accepts('<tool_call>\n{"name": "other", "arguments": {}}')


@pytest.mark.parametrize("document", ['{"a": [1, -2.5e3, true, null, "x\\u00e9\\n"], "b": {"c": {}}}', "{}"])
def test_json_object_grammar_accepts_objects(smollm2_tokenizer, document):
    matcher = GrammarVocabulary(smollm2_tokenizer, len(smollm2_tokenizer)).matcher(json_object_grammar())
    ids = smollm2_tokenizer.encode(document, add_special_tokens=False)
    assert matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()


@pytest.mark.parametrize("document", ["[1]", '{"a" 1}', '{"a": tru}', '{"a": 01}', '{"a": 1,}', "{} x"])
def test_json_object_grammar_rejects_invalid_text(smollm2_tokenizer, document):
    matcher = GrammarVocabulary(smollm2_tokenizer, len(smollm2_tokenizer)).matcher(json_object_grammar())
    ids = smollm2_tokenizer.encode(document, add_special_tokens=False)
    assert matcher.try_consume_tokens(ids) < len(ids) or not matcher.is_accepting()


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"response_format": response_format({"type": "object", "properties": {"a": {"not": {}}}}, False)},
         "response_format.json_schema.schema", "'not'"),
        ({"response_format": response_format({**PERSON, "allOf": [{"type": "object"}]})},
         "response_format.json_schema.schema", "'allOf'"),
        ({"response_format": response_format({"type": "object", "properties": {"a": {"type": "string",
                                                                                    "minLength": 2}}})},
         "response_format.json_schema.schema", "'minLength'"),
        ({"response_format": response_format({"type": "object", "properties": {"a": {"type": "string"}}})},
         "response_format.json_schema.schema", "additionalProperties"),
        ({"response_format": response_format({**PERSON, "required": ["name"]})},
         "response_format.json_schema.schema", "'age'"),
        ({"response_format": response_format({"type": "object", "properties": {
            "a": {"type": "string", "format": "color"}}, "required": ["a"], "additionalProperties": False})},
         "response_format.json_schema.schema", "format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": PERSON}}},
         "response_format.json_schema.name", "name"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
        ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
            "type": "object", "properties": {"x": {"type": "string", "pattern": "a+", "maxLength": 3}},
            "required": ["x"], "additionalProperties": False}}}]},
         "tools[0].function.parameters", "'maxLength'"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name", "nope"),
        ({"tool_choice": "required"}, "tool_choice", "tool"),
        ({"tools": [WEATHER], "parallel_tool_calls": "no"}, "parallel_tool_calls", "boolean"),
    ],
)
def test_unsupported_or_invalid_structured_output_requests_name_the_problem(body, param, words):
    with pytest.raises(GrammarRequestError) as error:
        chat_grammar(body)
    assert error.value.param == param
    assert words in str(error.value)


def test_supported_schemas_and_choices_compile():
    assert chat_grammar({}) is None
    assert chat_grammar({"response_format": {"type": "text"}}) is None
    assert chat_grammar({"tools": [LOOKUP]}) is None  # auto, no strict tool, parallel allowed: free text
    for schema in SCHEMAS:
        assert chat_grammar({"response_format": response_format(schema)})
    recursive = {"type": "object", "properties": {"name": {"type": "string"}, "kids": {
        "type": "array", "items": {"$ref": "#"}}}, "required": ["name", "kids"], "additionalProperties": False}
    assert chat_grammar({"response_format": response_format(recursive)})
    non_strict = {"type": "object", "properties": {"a": {"type": "string", "minLength": 1, "description": "x"}}}
    assert chat_grammar({"tools": [{"type": "function", "function": {"name": "f", "parameters": non_strict}}],
                         "tool_choice": "required"})  # non-strict tools: best effort, no 400
    assert chat_grammar({"tools": [WEATHER], "parallel_tool_calls": False})
    assert chat_grammar({"tools": [WEATHER], "response_format": response_format(VERDICT)})
