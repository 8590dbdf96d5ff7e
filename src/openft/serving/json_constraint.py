"""JSON-object constrained decoding (``response_format={"type": "json_object"}``).

A character-level pushdown automaton accepts exactly the prefixes of a JSON object. For each decoding step we
mask every vocabulary token whose text would take the output out of that language. Token strings are decoded
once per tokenizer; the allowed-token mask depends only on the automaton state near the top of the stack, so
it is cached per state. Termination is guaranteed: a token may only be chosen if the shortest text that closes
the object afterwards still fits in the remaining token budget, so the output always parses.
"""

from __future__ import annotations

import json

import torch
from transformers import PreTrainedTokenizerBase

# A state is (stack, mode, aux). stack: tuple of "o"/"a" containers. aux: mode-specific detail.
State = tuple[tuple[str, ...], str, object]

_WS = " \t\n\r"
_MAX_WS_RUN = 8  # insignificant whitespace allowed in a row (keeps a weak model from looping on spaces)
_MAX_CLOSING_GROWTH_PER_CHAR = 8  # one character can lengthen the shortest closing text by at most 7
_DIGITS = "0123456789"

INITIAL_STATE: State = ((), "value", 0)


def _after_value(stack: tuple[str, ...]) -> State:
    return (stack, "after", 0) if stack else (stack, "done", 0)


def _ws(state: State, ch: str) -> State | None:
    stack, mode, aux = state
    if isinstance(aux, int) and aux < _MAX_WS_RUN:
        return (stack, mode, aux + 1)
    return None


def _start_value(stack: tuple[str, ...], ch: str) -> State | None:
    if ch == "{":
        return (stack + ("o",), "key_or_close", 0)
    if not stack:
        return None  # json_object: the root must be an object
    if ch == "[":
        return (stack + ("a",), "value_or_close", 0)
    if ch == '"':
        return (stack, "string", False)
    if ch == "-":
        return (stack, "num_minus", 0)
    if ch == "0":
        return (stack, "num_zero", 0)
    if ch in "123456789":
        return (stack, "num_int", 0)
    for literal in ("true", "false", "null"):
        if ch == literal[0]:
            return (stack, "literal", literal[1:])
    return None


_NUMBER_NEXT = {
    "num_minus": {"digit0": "num_zero", "digit": "num_int"},
    "num_zero": {".": "num_dot", "e": "num_e"},
    "num_int": {"digit0": "num_int", "digit": "num_int", ".": "num_dot", "e": "num_e"},
    "num_dot": {"digit0": "num_frac", "digit": "num_frac"},
    "num_frac": {"digit0": "num_frac", "digit": "num_frac", "e": "num_e"},
    "num_e": {"sign": "num_esign", "digit0": "num_exp", "digit": "num_exp"},
    "num_esign": {"digit0": "num_exp", "digit": "num_exp"},
    "num_exp": {"digit0": "num_exp", "digit": "num_exp"},
}
_NUMBER_COMPLETE = {"num_zero", "num_int", "num_frac", "num_exp"}


def _number_class(ch: str) -> str | None:
    if ch == "0":
        return "digit0"
    if ch in _DIGITS:
        return "digit"
    if ch in "eE":
        return "e"
    if ch in "+-":
        return "sign"
    if ch == ".":
        return "."
    return None


def step(state: State, ch: str) -> State | None:
    """The state after ``ch``, or None when ``ch`` cannot continue a JSON object here."""
    stack, mode, aux = state
    if mode == "string":
        if ch == '"':
            return (stack, "colon", 0) if aux else _after_value(stack)
        if ch == "\\":
            return (stack, "escape", aux)
        return None if ord(ch) < 0x20 else state
    if mode == "escape":
        if ch in '"\\/bfnrt':
            return (stack, "string", aux)
        return (stack, "unicode", (aux, 0)) if ch == "u" else None
    if mode == "unicode":
        is_key, count = aux
        if ch not in "0123456789abcdefABCDEF":
            return None
        return (stack, "string", is_key) if count == 3 else (stack, "unicode", (is_key, count + 1))
    if mode == "literal":
        if ch != aux[0]:
            return None
        return _after_value(stack) if len(aux) == 1 else (stack, "literal", aux[1:])
    if mode in _NUMBER_NEXT:
        kind = _number_class(ch)
        nxt = _NUMBER_NEXT[mode].get(kind) if kind else None
        if nxt:
            return (stack, nxt, 0)
        if mode not in _NUMBER_COMPLETE:
            return None
        return step(_after_value(stack), ch)  # the number ended; ch belongs to what follows
    if mode == "done":
        return None
    if ch in _WS:
        return _ws(state, ch)
    if mode == "value":
        return _start_value(stack, ch)
    if mode == "value_or_close":
        return _after_value(stack[:-1]) if ch == "]" else _start_value(stack, ch)
    if mode == "key_or_close":
        if ch == "}":
            return _after_value(stack[:-1])
        return (stack, "string", True) if ch == '"' else None
    if mode == "key":
        return (stack, "string", True) if ch == '"' else None
    if mode == "colon":
        return (stack, "value", 0) if ch == ":" else None
    if mode == "after":
        top = stack[-1]
        if ch == ",":
            return (stack, "key", 0) if top == "o" else (stack, "value", 0)
        if (ch == "}" and top == "o") or (ch == "]" and top == "a"):
            return _after_value(stack[:-1])
        return None
    raise AssertionError(f"unknown JSON automaton mode {mode}")


def walk(state: State, text: str) -> State | None:
    for ch in text:
        state = step(state, ch)
        if state is None:
            return None
    return state


def _closing_char(state: State) -> str:
    stack, mode, aux = state
    if mode == "string":
        return '"'
    if mode == "escape":
        return "n"
    if mode == "unicode":
        return "0"
    if mode == "literal":
        return aux[0]
    if mode in ("num_minus", "num_dot", "num_e", "num_esign"):
        return "0"
    if mode == "colon":
        return ":"
    if mode == "key":
        return '"'
    if mode == "key_or_close":
        return "}"
    if mode == "value_or_close":
        return "]"
    if mode == "value":
        return "{" if not stack else "n"
    return "}" if stack[-1] == "o" else "]"  # after a value, or a complete number


def closing_text(state: State) -> str:
    """The shortest text that completes the object from ``state``."""
    out = []
    while state[1] != "done":
        ch = _closing_char(state)
        out.append(ch)
        state = step(state, ch)
        assert state is not None, "closing text must always be accepted"
    return "".join(out)


def is_complete(state: State) -> bool:
    return state[1] == "done"


class JsonVocabulary:
    """Token strings and a trie of them for one tokenizer, plus cached per-state allowed masks."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
        special = set(tokenizer.all_special_ids)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
        self.vocab_size = vocab_size
        self.texts: list[str] = ["" if i in special else t for i, t in enumerate(texts)] + [""] * max(
            0, vocab_size - len(texts)
        )
        self.text_lengths = torch.tensor([len(t) for t in self.texts[:vocab_size]], dtype=torch.long)
        self._trie: dict = {}
        self._by_text: dict[str, list[int]] = {}
        plain = torch.zeros(vocab_size, dtype=torch.bool)
        self._string_special: list[int] = []
        for token_id, text in enumerate(self.texts[:vocab_size]):
            if not text:
                continue
            self._by_text.setdefault(text, []).append(token_id)
            node = self._trie
            for ch in text:
                node = node.setdefault(ch, {})
            node.setdefault(None, []).append(token_id)
            if any(c in '"\\' or ord(c) < 0x20 for c in text):
                self._string_special.append(token_id)
            else:
                plain[token_id] = True
        self._plain_string_content = plain
        max_closers = max((t.count("}") + t.count("]") for t in self.texts), default=0)
        self._stack_window = max_closers + 1
        self._cache: dict[tuple, torch.Tensor] = {}

    def allowed(self, state: State, remaining_tokens: int) -> torch.Tensor:
        """Bool mask over the vocabulary of tokens that keep the output a JSON-object prefix that can still be
        closed within ``remaining_tokens`` (this token included)."""
        closing = closing_text(state)
        mask = self._valid(state).clone()
        slack = remaining_tokens - 1 - len(closing)
        max_len = max(slack, 0) // _MAX_CLOSING_GROWTH_PER_CHAR
        mask &= self.text_lengths <= max_len
        for end in range(1, len(closing) + 1):  # closing prefixes always make progress
            for token_id in self._by_text.get(closing[:end], ()):
                mask[token_id] = True
        return mask

    def _valid(self, state: State) -> torch.Tensor:
        stack, mode, aux = state
        window = self._stack_window
        key = (stack[-window:], len(stack) > window, mode, aux)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if mode == "string":
            mask = self._plain_string_content.clone()
            for token_id in self._string_special:
                if walk(state, self.texts[token_id]) is not None:
                    mask[token_id] = True
        else:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            ids: list[int] = []
            self._collect(self._trie, state, ids)
            if ids:
                mask[torch.tensor(ids)] = True
        self._cache[key] = mask
        return mask

    def _collect(self, node: dict, state: State, out: list[int]) -> None:
        for ch, child in node.items():
            if ch is None:
                out.extend(child)
                continue
            nxt = step(state, ch)
            if nxt is None:
                continue
            self._collect(child, nxt, out)


def advance(state: State, text: str) -> State:
    new_state = walk(state, text)
    if new_state is None:
        raise ValueError(f"token text {text!r} is not allowed in JSON state {state}")
    return new_state


def parses(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
