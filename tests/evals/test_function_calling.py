"""Function calling as an evaluation strategy: tool-call accuracy scored by hand-checked rules, the example's
tools sent to the strategies that call tools, and the function-calling row beside the fine-tuned model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openft.evals.chat import ChatReply
from openft.evals.examples import EvalDataError, parse_example
from openft.evals.runner import EvalSettings, run_evaluation
from openft.evals.tool_calls import render_calls, score_tool_calls

FT = "ft:base:acme::tools123"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def call(name: str, arguments: Any) -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": raw}}


def scores(predicted, expected) -> dict[str, float]:
    names = ("tool_call_exact", "tool_name_match", "tool_args_valid", "tool_args_match")
    return {n: round(score_tool_calls(n, predicted, expected), 3) for n in names}


EXPECTED = [call("get_weather", {"city": "Paris", "unit": "c"})]


@pytest.mark.parametrize(
    ("predicted", "expected_scores"),
    [
        # the same call, arguments in another order and written with spaces: everything right
        ([call("get_weather", '{ "unit": "c", "city": "Paris" }')], (1, 1, 1, 1)),
        # right function, one of two arguments wrong: per argument 1/2
        ([call("get_weather", {"city": "Lyon", "unit": "c"})], (0, 1, 1, 0.5)),
        # right function, an argument missing and an extra one given: 1 of 3 argument names agree
        ([call("get_weather", {"city": "Paris", "days": 3})], (0, 1, 1, 0.333)),
        # wrong function with the right arguments: the arguments of a wrong call count for nothing
        ([call("get_time", {"city": "Paris", "unit": "c"})], (0, 0, 1, 0)),
        # arguments that are not JSON
        ([call("get_weather", "{city: Paris}")], (0, 1, 0, 0)),
        # no call at all
        ([], (0, 0, 0, 0)),
        # the right call plus an extra one: exact fails, the argument share is halved
        ([*EXPECTED, call("get_time", {"city": "Paris"})], (0, 0, 1, 0.5)),
    ],
)
def test_tool_call_accuracy_by_hand(predicted, expected_scores):
    names = ("tool_call_exact", "tool_name_match", "tool_args_valid", "tool_args_match")
    assert scores(predicted, EXPECTED) == dict(zip(names, map(float, expected_scores), strict=True))


def test_json_equality_keeps_types_apart_and_no_call_when_none_is_expected_is_right():
    expected = [call("set_alarm", {"hour": 7, "repeat": True})]
    assert scores([call("set_alarm", {"hour": 7.0, "repeat": True})], expected)["tool_call_exact"] == 1.0
    assert scores([call("set_alarm", {"hour": "7", "repeat": True})], expected)["tool_args_match"] == 0.5
    assert scores([call("set_alarm", {"hour": 7, "repeat": 1})], expected)["tool_call_exact"] == 0.0
    assert set(scores([], []).values()) == {1.0}  # the example expects a text answer and gets one
    assert scores([call("get_time", {})], [])["tool_call_exact"] == 0.0


def line(tools, last: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Weather in Paris, celsius?"}, last], "tools": tools}


def test_a_held_out_line_with_tools_and_an_expected_call_loads_as_a_tool_example():
    example = parse_example(line([WEATHER], {"role": "assistant", "tool_calls": EXPECTED}), 1)
    assert example.tools == [WEATHER] and example.tool_calls == EXPECTED
    assert example.reference == 'get_weather({"city": "Paris", "unit": "c"})' == render_calls(EXPECTED)
    with pytest.raises(EvalDataError, match="line 3: 'tools' must be a list"):
        parse_example(line({"oops": 1}, {"role": "assistant", "tool_calls": EXPECTED}), 3)
    with pytest.raises(EvalDataError, match="line 4: .*'tool_calls' is not a list of calls"):
        parse_example(line([WEATHER], {"role": "assistant", "tool_calls": [{"type": "function"}]}), 4)


class ToolModel:
    """Given tools, the fine-tuned model calls the right one with the user's city; the base model calls the first
    tool with no arguments. Without tools, both write text."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatReply:
        self.requests.append((model, params))
        tools = params.get("tools")
        usage = {"prompt_tokens": 10 + 40 * bool(tools), "completion_tokens": 12}
        if not tools:
            return ChatReply("I cannot look that up.", usage, 0.01)
        question = messages[-1]["content"]
        if model.startswith("ft:"):
            name = "get_time" if "time" in question else "get_weather"
            arguments = {"city": question.split()[-1].rstrip("?")}
        else:
            name, arguments = tools[0]["function"]["name"], {}
        return ChatReply("", usage, 0.02, [call(name, arguments)])


def tool_examples():
    rows = [("What is the weather in Oslo?", "get_weather", "Oslo"), ("What time is it in Lima?", "get_time", "Lima"),
            ("Weather now in Rome?", "get_weather", "Rome")]  # fmt: skip
    return [
        parse_example({"messages": [{"role": "user", "content": q},
                                    {"role": "assistant", "tool_calls": [call(name, {"city": city})]}],
                       "tools": [WEATHER, TIME]}, i)
        for i, (q, name, city) in enumerate(rows, start=1)
    ]


def test_function_calling_is_compared_with_the_fine_tuned_model_on_tool_call_accuracy():
    chat = ToolModel()
    settings = EvalSettings(base_model="base", strategies=["zero-shot", "function-calling", "fine-tuned"],
                            fine_tuned_models=[FT], tool_choice="required")
    results = run_evaluation(settings, tool_examples(), [], chat)
    assert results["metrics"] == ["tool_call_exact", "tool_name_match", "tool_args_valid", "tool_args_match"]
    assert results["n_tool_examples"] == 3
    quality = {s["name"]: {m: q["mean"] for m, q in s["quality"].items()} for s in results["strategies"]}
    assert quality[FT] == {"tool_call_exact": 1.0, "tool_name_match": 1.0, "tool_args_valid": 1.0,
                           "tool_args_match": 1.0}  # fmt: skip
    # the base model calls get_weather with no arguments: right name on 2 of 3, never the city
    assert quality["function-calling"]["tool_name_match"] == pytest.approx(2 / 3)
    assert quality["function-calling"]["tool_call_exact"] == 0.0 == quality["function-calling"]["tool_args_match"]
    assert quality["zero-shot"]["tool_call_exact"] == 0.0  # no tool definitions, so a text answer
    assert results["ranking"][0] == FT
    sent = {(model, bool(params.get("tools")), params.get("tool_choice")) for model, params in chat.requests}
    assert sent == {("base", False, None), ("base", True, "required"), (FT, True, "required")}
    prediction = results["samples"][1]["predictions"][FT]
    assert prediction["text"] == 'get_time({"city": "Lima"})' and prediction["tool_calls"][0]["type"] == "function"
    by_name = {s["name"]: s for s in results["strategies"]}
    assert by_name["function-calling"]["prompt_tokens"]["mean"] > by_name["zero-shot"]["prompt_tokens"]["mean"]


def test_a_tool_call_written_as_text_counts_and_function_calling_needs_tool_examples():
    def writes_calls(model, messages, **params):
        return ChatReply('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
                         {"prompt_tokens": 5, "completion_tokens": 9}, 0.01)

    settings = EvalSettings(base_model="base", strategies=["zero-shot"], metrics=["tool_call_exact"])
    results = run_evaluation(settings, tool_examples()[:1], [], writes_calls)
    assert results["strategies"][0]["quality"]["tool_call_exact"]["mean"] == 1.0
    plain = parse_example({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, 1)
    with pytest.raises(ValueError, match="needs held-out examples that carry 'tools'"):
        run_evaluation(EvalSettings(base_model="base", strategies=["function-calling"]), [plain], [], writes_calls)
