"""score_model and label_model: a judge model reads the rendered messages and answers with a score or a label.

The judge is a callable, so the same grader runs against a model openft serves locally or against an
OpenAI-compatible endpoint. The judge is asked for JSON (`{"result": ...}`, what OpenAI's structured output
returns); a plain number or a bare label is accepted too, anything else is a `model_grader_parse_error`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openft.graders.templates import render

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class JudgeReply:
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    refusal: str | None = None


Judge = Callable[[str, list[dict[str, Any]], dict[str, Any]], JudgeReply]  # (model, messages, sampling) -> reply


class JudgeParseError(ValueError):
    pass


def _text(content: Any, namespaces: dict[str, Any]) -> str:
    parts = content if isinstance(content, list) else [content]
    return "".join(render(p if isinstance(p, str) else p["text"], namespaces) for p in parts)


def judge_messages(spec: dict[str, Any], namespaces: dict[str, Any]) -> list[dict[str, Any]]:
    messages = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": _text(m["content"], namespaces)}
        for m in spec["input"]
    ]
    if spec["type"] == "score_model":
        low, high = spec.get("range") or [0, 1]
        rule = f'Reply with JSON only: {{"result": <a number from {low:g} to {high:g}>}}.'
    else:
        rule = f'Reply with JSON only: {{"result": "<one of: {", ".join(spec["labels"])}>"}}.'
    return [*messages, {"role": "system", "content": rule}]


def _result_field(text: str) -> Any:
    try:
        parsed = json.loads(text.strip())
    except ValueError:
        match = re.search(r"\{.*\}", text, re.S)
        try:
            parsed = json.loads(match.group(0)) if match else None
        except ValueError:
            parsed = None
    return parsed.get("result") if isinstance(parsed, dict) else None


def parse_score(text: str, bounds: list[float]) -> float:
    value = _result_field(text)
    if not isinstance(value, int | float) or isinstance(value, bool):
        match = NUMBER.search(text)
        if match is None:
            raise JudgeParseError(f"The judge's reply has no score: {text[:200]!r}")
        value = float(match.group(0))
    if not bounds[0] <= value <= bounds[1]:
        raise JudgeParseError(f"The judge's score {value:g} is outside the range [{bounds[0]:g}, {bounds[1]:g}].")
    return float(value)


def parse_label(text: str, labels: list[str]) -> str:
    value = _result_field(text)
    candidate = (value if isinstance(value, str) else text).strip().strip('"').strip()
    for label in labels:
        if candidate.lower() == label.lower():
            return label
    found = [label for label in labels if re.search(rf"\b{re.escape(label)}\b", text, re.I)]
    if len(found) == 1:
        return found[0]
    raise JudgeParseError(f"The judge's reply is not one of the labels {labels}: {text[:200]!r}")


def sampling(spec: dict[str, Any]) -> dict[str, Any]:
    params = spec.get("sampling_params") or {}
    chosen = {"temperature": params.get("temperature"), "top_p": params.get("top_p"), "seed": params.get("seed"),
              "max_tokens": params.get("max_completions_tokens") or 256}  # fmt: skip
    return {k: v for k, v in chosen.items() if v is not None}
