"""Requests, events and errors of the generation engine (plain data, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch

FinishReason = Literal["stop", "length", "cancelled"]


class EngineOverloaded(RuntimeError):
    """The engine's queue or token budget is full; the HTTP layer answers 429 with this message."""


class RequestTooLarge(ValueError):
    """The request cannot fit: ``param`` names what to reduce (the router answers 400 naming it)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class AdapterNotFound(KeyError):
    """The adapter key names no adapter the resolver knows."""

    def __init__(self, key: str, reason: str = "") -> None:
        super().__init__(key)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"adapter {self.key!r} not found" + (f": {self.reason}" if self.reason else "")


@dataclass
class GenerationRequest:
    """One completion to generate from token ids.

    ``adapter`` is the key the engine's adapter resolver understands (a fine-tuned model name); None is the
    base model. ``temperature == 0`` is greedy decoding. ``seed`` makes sampling reproducible regardless of
    what else shares the batch. ``grammar`` is an llguidance grammar (see serving/grammar.py) the output must
    follow; ``json_mode`` is shorthand for the grammar of one JSON object. ``ignore_eos``
    keeps generating past the model's end-of-sequence tokens (``stop_token_ids`` still stop), as vLLM's
    option of that name: benchmarks use it so every run generates the same number of tokens.
    """

    prompt_ids: list[int]
    adapter: str | None = None
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    json_mode: bool = False
    grammar: str | None = None
    ignore_eos: bool = False

    def validate(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be between 0 and 20, got {self.top_logprobs}")
        if any(not s for s in self.stop_strings):
            raise ValueError("stop strings must not be empty")
        if self.json_mode and self.grammar is not None:
            raise ValueError("set either json_mode or grammar, not both")


@dataclass
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class TokenEvent:
    """One generated token (``finish_reason`` None), or the last event (``finish_reason`` set, ``usage`` set).

    ``text`` is the text this event adds to the output. It can be empty (a partial UTF-8 character, or text held
    back because it may start a stop string) and the final event may carry text that was held back.
    ``logprob``/``top_logprobs`` are filled only when the request asked for them.
    """

    token_id: int | None
    text: str
    logprob: float | None = None
    top_logprobs: list[TopLogprob] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass
class Completion:
    """Everything ``Engine.complete`` collected."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    logprobs: list[float] | None = None
    top_logprobs: list[list[TopLogprob]] | None = None
