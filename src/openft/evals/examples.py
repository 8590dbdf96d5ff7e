"""Eval examples from chat JSONL: everything before the last assistant message is the prompt, the last
assistant message is the reference answer. Training examples load the same way and serve as few-shot shots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openft.evals.tool_calls import render_calls

# Keys a chat message may carry to a model; openft's training-only keys (e.g. "weight") are dropped.
_WIRE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


class EvalDataError(ValueError):
    """A line of an eval or training file cannot be used; the message names the line."""


def content_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def wire_message(message: dict[str, Any]) -> dict[str, Any]:
    return {key: message[key] for key in _WIRE_KEYS if key in message}


@dataclass(frozen=True)
class EvalExample:
    prompt: list[dict[str, Any]]  # the conversation up to (not including) the reference answer
    reference: str  # the last assistant message's text (its tool calls as `name({...})` when it makes calls)
    tools: list[dict[str, Any]] | None = None  # the line's tool definitions, sent by tool-calling strategies
    tool_calls: list[dict[str, Any]] | None = None  # the calls the last assistant message makes (expected)

    @property
    def system(self) -> list[dict[str, Any]]:
        return [m for m in self.prompt if m["role"] in ("system", "developer")]

    @property
    def turns(self) -> list[dict[str, Any]]:
        """The prompt without its system messages."""
        return [m for m in self.prompt if m["role"] not in ("system", "developer")]

    @property
    def user_input(self) -> str:
        """The last user message: what retrieval matches on and what a judge is shown as the question."""
        for message in reversed(self.prompt):
            if message["role"] == "user":
                return content_text(message.get("content"))
        return ""


def parse_example(record: Any, line: int) -> EvalExample:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise EvalDataError(f"line {line}: expected an object with a 'messages' list (chat format)")
    messages = record["messages"]
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise EvalDataError(f"line {line}: every message needs a 'role'")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise EvalDataError(f"line {line}: no assistant message to use as the reference answer")
    reference = content_text(messages[last].get("content"))
    expected_calls = messages[last].get("tool_calls") or None
    if expected_calls is not None:
        if not isinstance(expected_calls, list) or not render_calls(expected_calls):
            raise EvalDataError(f"line {line}: the last assistant message's 'tool_calls' is not a list of calls")
        reference = render_calls(expected_calls)  # the calls are what is compared, not any text beside them
    if not reference.strip():
        raise EvalDataError(f"line {line}: the last assistant message has no text content to compare against")
    tools = record.get("tools") or None
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise EvalDataError(f"line {line}: 'tools' must be a list of tool definitions")
    prompt = [wire_message(m) for m in messages[:last]]
    if not any(m["role"] == "user" for m in prompt):
        raise EvalDataError(f"line {line}: no user message before the reference answer")
    return EvalExample(prompt=prompt, reference=reference, tools=tools, tool_calls=expected_calls)


def load_examples(path: Path, limit: int | None = None) -> list[EvalExample]:
    """Chat examples of a JSONL file in file order (blank lines skipped). Raises EvalDataError."""
    examples: list[EvalExample] = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"line {number}: not valid JSON ({exc.msg})") from None
            examples.append(parse_example(record, number))
            if limit is not None and len(examples) >= limit:
                break
    if not examples:
        raise EvalDataError(f"{path.name}: the file holds no examples")
    return examples
