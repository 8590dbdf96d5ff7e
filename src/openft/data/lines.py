"""Reading a JSONL stream line by line with a bound on line size, and decoding each line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024  # far above any model's context; keeps one bad line from eating RAM
_SKIP_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawLine:
    data: bytes | None  # None when the line was longer than the limit and skipped
    size: int


def read_lines(stream: BinaryIO, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[RawLine]:
    """Yield each line of a binary stream; an over-long line is read past in chunks, never held whole."""
    while True:
        chunk = stream.readline(max_line_bytes + 1)
        if not chunk:
            return
        if len(chunk) <= max_line_bytes or chunk.endswith(b"\n"):
            yield RawLine(chunk, len(chunk))
            continue
        size = len(chunk)
        while not chunk.endswith(b"\n"):
            chunk = stream.readline(_SKIP_CHUNK)
            if not chunk:
                break
            size += len(chunk)
        yield RawLine(None, size)


def strip_line_end(data: bytes, first: bool) -> bytes:
    if first and data.startswith(_BOM):
        data = data[len(_BOM) :]  # editors on Windows add a byte-order mark; it is not part of the JSON
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null or a number)")


def parse_json(text: str) -> Any:
    """json.loads, but strict: NaN/Infinity are rejected as OpenAI's parser rejects them."""
    return json.loads(text, parse_constant=_reject_constant)


def canonical_json(value: Any) -> bytes:
    """Key-order-independent bytes of a JSON value; raises UnicodeEncodeError on lone surrogate escapes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
