"""Incremental detokenization and text-level stop strings for streaming.

Decoding token by token is wrong for byte-level BPE: a multi-byte character can span tokens, and some
tokenizers change how a token renders depending on its neighbour. ``IncrementalDetokenizer`` decodes a small
window of recent tokens and emits only text that is settled (no trailing U+FFFD replacement character).
``StopStringFilter`` holds back any tail that could be the start of a stop string until it is resolved.
``token_bytes`` gives a token's raw bytes (for logprobs, where one token can be half of a character).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPLACEMENT = "\ufffd"
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: each printable stand-in character -> the byte it encodes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def token_bytes(tokenizer: PreTrainedTokenizerBase, token_id: int) -> bytes:
    """The bytes one token stands for, even when they are only part of a UTF-8 character."""
    if token_id in tokenizer.all_special_ids:
        return tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8")
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(piece, str) and _is_byte_level(tokenizer):
        table = _byte_level_decoder()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
    if isinstance(piece, str) and (match := _BYTE_FALLBACK.fullmatch(piece)):  # SentencePiece byte fallback
        return bytes([int(match.group(1), 16)])
    return tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8")


class IncrementalDetokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_tail: list[int]) -> None:
        self._tokenizer = tokenizer
        # A few prompt tokens give the decoder left context (leading-space handling), without being emitted.
        self._ids: list[int] = list(prompt_tail[-4:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the newly settled text (may be empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text still pending at the end. A character cut short (max_tokens ended it mid-way) is dropped rather than
        shown as U+FFFD: its remaining bytes were never generated. ``push`` emits nothing that ends in U+FFFD, so a
        trailing U+FFFD here is such an unfinished character."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        pending = new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
        return pending.rstrip(REPLACEMENT)


class StopStringFilter:
    """Feeds text through, cutting at the first stop string and holding back possible stop-string prefixes."""

    def __init__(self, stop_strings: list[str]) -> None:
        self._stops = [s for s in stop_strings if s]
        self._pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Return the text that is safe to emit now; sets ``stopped`` when a stop string completed."""
        if self.stopped:
            return ""
        self._pending += text
        if not self._stops:
            out, self._pending = self._pending, ""
            return out
        first = min(
            (i for i in (self._pending.find(s) for s in self._stops) if i >= 0),
            default=-1,
        )
        if first >= 0:
            self.stopped = True
            out, self._pending = self._pending[:first], ""
            return out
        hold = self._longest_stop_prefix_suffix(self._pending)
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """At the end of generation nothing can complete a stop string: release what was held back."""
        if self.stopped:
            return ""
        out, self._pending = self._pending, ""
        return out

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best
