"""Tool-call accuracy: how well a model's tool calls match the held-out example's expected ones.

Calls are compared in order, as (function name, arguments). Arguments compare as parsed JSON (1 == 1.0,
"1" != 1, key order ignored). Per item, each metric is in [0, 1]:
- tool_call_exact: the same number of calls, each with the right name and exactly the expected arguments;
- tool_name_match: the right function names in the right order (arguments not looked at);
- tool_args_valid: every call's arguments parse as a JSON object (and a call was made when one was expected);
- tool_args_match: per argument: over the calls, the share of argument names (expected or given) whose values
  agree; a call to the wrong function, a missing or an extra call scores 0, so extra arguments cost too.
An example that expects no call scores 1 on all four when the model makes none (it answered in text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INVALID = object()  # arguments that did not parse as a JSON object


@dataclass(frozen=True)
class Call:
    name: str
    arguments: Any  # a dict, or INVALID


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return INVALID
        return parsed if isinstance(parsed, dict) else INVALID
    return INVALID


def normalize_calls(tool_calls: Sequence[dict[str, Any]] | None) -> list[Call]:
    """OpenAI-shaped tool calls ({"type": "function", "function": {"name", "arguments": "<json>"}}) as Calls."""
    calls = []
    for call in tool_calls or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        calls.append(Call(str(function.get("name") or ""), _arguments(function.get("arguments"))))
    return calls


def calls_from_text(text: str) -> list[dict[str, Any]]:
    """Tool calls a model wrote as <tool_call> blocks in its text (when the request carried no tools)."""
    if "<tool_call>" not in text:
        return []
    from openft.models.chat_template import parse_assistant_output  # pulls in transformers: only when needed

    return parse_assistant_output(text)[1]


def render_calls(tool_calls: Sequence[dict[str, Any]] | None) -> str:
    """Calls as readable text, `name({"arg": 1})`, arguments with sorted keys: what reports show."""
    parts = []
    for call in tool_calls or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = _arguments(function.get("arguments"))
        shown = (str(function.get("arguments")) if arguments is INVALID
                 else json.dumps(arguments, sort_keys=True, ensure_ascii=False))
        parts.append(f"{function.get('name')}({shown})")
    return "; ".join(parts)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0 but true != 1, at any depth."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def tool_call_exact(predicted: Sequence[Call], expected: Sequence[Call]) -> float:
    return float(
        len(predicted) == len(expected)
        and all(p.name == e.name and p.arguments is not INVALID and _same(p.arguments, e.arguments)
                for p, e in zip(predicted, expected, strict=True))
    )


def tool_name_match(predicted: Sequence[Call], expected: Sequence[Call]) -> float:
    return float([p.name for p in predicted] == [e.name for e in expected])


def tool_args_valid(predicted: Sequence[Call], expected: Sequence[Call]) -> float:
    if not predicted:
        return float(not expected)
    return float(all(p.arguments is not INVALID for p in predicted))


def _argument_share(p: Call, e: Call) -> float:
    if p.name != e.name or p.arguments is INVALID:
        return 0.0
    names = set(p.arguments) | set(e.arguments)
    if not names:
        return 1.0
    missing = object()
    return sum(_same(p.arguments.get(n, missing), e.arguments.get(n, missing)) for n in names) / len(names)


def tool_args_match(predicted: Sequence[Call], expected: Sequence[Call]) -> float:
    positions = max(len(predicted), len(expected))
    if positions == 0:
        return 1.0
    return sum(_argument_share(p, e) for p, e in zip(predicted, expected, strict=False)) / positions


TOOL_METRICS: dict[str, Callable[[Sequence[Call], Sequence[Call]], float]] = {
    "tool_call_exact": tool_call_exact,
    "tool_name_match": tool_name_match,
    "tool_args_valid": tool_args_valid,
    "tool_args_match": tool_args_match,
}
DEFAULT_TOOL_METRICS = list(TOOL_METRICS)


def score_tool_calls(name: str, predicted: Sequence[dict[str, Any]] | None, expected: Sequence[dict[str, Any]] | None):
    """Score OpenAI-shaped predicted calls against the expected ones with the metric called `name`."""
    return TOOL_METRICS[name](normalize_calls(predicted), normalize_calls(expected))
