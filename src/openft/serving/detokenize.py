"""Incremental detokenization and text-level stop strings for streaming.

Decoding token by token is wrong for byte-level BPE: a multi-byte character can span tokens, and some
tokenizers change how a token renders depending on its neighbour. ``IncrementalDetokenizer`` decodes a small
window of recent tokens and emits only text that is settled (no trailing U+FFFD replacement character).
``StopStringFilter`` holds back any tail that could be the start of a stop string until it is resolved.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


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
        """Text still pending at the end (an incomplete character is emitted as U+FFFD, like decode does)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""


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
