"""The strategies an evaluation compares, and the prompt each one sends for an example.

- zero-shot: the base model with the example's own prompt (its system message included);
- few-shot: k fixed training examples as prior user/assistant turns, then the example;
- retrieval few-shot: the k training examples whose user input is nearest to the example's (MiniLM embeddings);
- fine-tuned (and checkpoints): the fine-tuned model with the plain prompt, like zero-shot;
- external: any OpenAI-compatible endpoint and model with the plain prompt, as a reference.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from openft.evals.examples import EvalExample
from openft.evals.metrics import cosine

Kind = Literal["zero-shot", "few-shot", "retrieval-few-shot", "fine-tuned", "external"]
KINDS: tuple[Kind, ...] = ("zero-shot", "few-shot", "retrieval-few-shot", "fine-tuned", "external")
PROMPTED_KINDS = ("zero-shot", "few-shot", "retrieval-few-shot")  # strategies that run the base model
Embedder = Callable[[Sequence[str]], list[list[float]]]


@dataclass(frozen=True)
class Strategy:
    name: str  # unique within an evaluation: the kind, or the model name for fine-tuned models
    kind: Kind
    model: str
    fine_tuned: bool = False

    @property
    def needs_shots(self) -> bool:
        return self.kind in ("few-shot", "retrieval-few-shot")


def plan_strategies(
    kinds: Sequence[str], base_model: str, fine_tuned_models: Sequence[str], external_model: str | None = None
) -> list[Strategy]:
    """The strategies to run, in a stable order; "fine-tuned" expands to one per fine-tuned model."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(KINDS)}")
    plan: list[Strategy] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind in PROMPTED_KINDS:
            plan.append(Strategy(kind, kind, base_model))
        elif kind == "fine-tuned":
            if not fine_tuned_models:
                raise ValueError("the fine-tuned strategy needs at least one fine-tuned model")
            plan.extend(Strategy(name, "fine-tuned", name, fine_tuned=True) for name in fine_tuned_models)
        elif kind == "external":
            if not external_model:
                raise ValueError("the external strategy needs an endpoint model")
            plan.append(Strategy(f"external:{external_model}", "external", external_model))
    return plan


def shot_turns(shots: Sequence[EvalExample]) -> list[dict[str, Any]]:
    """Training examples as prior conversation turns (their system messages left out)."""
    turns: list[dict[str, Any]] = []
    for shot in shots:
        turns.extend(shot.turns)
        turns.append({"role": "assistant", "content": shot.reference})
    return turns


def with_shots(example: EvalExample, shots: Sequence[EvalExample]) -> list[dict[str, Any]]:
    """The example's system messages, then the shots as turns, then the example's own turns."""
    return [*example.system, *shot_turns(shots), *example.turns]


def fixed_shots(train: Sequence[EvalExample], k: int, seed: int = 0) -> list[EvalExample]:
    """k training examples drawn once (seeded) and used for every eval example."""
    if k <= 0 or not train:
        return []
    return random.Random(seed).sample(list(train), min(k, len(train)))


class NearestExamples:
    """Retrieval over the training examples by cosine similarity of their user inputs' embeddings."""

    def __init__(self, train: Sequence[EvalExample], embed: Embedder) -> None:
        self.train = list(train)
        self.embed = embed
        self.vectors = embed([t.user_input for t in self.train]) if self.train else []

    def nearest(self, text: str, k: int, exclude_text: str | None = None) -> list[EvalExample]:
        """The k nearest training examples, nearest first. A training example whose input equals
        `exclude_text` is skipped, so an eval example leaked into the training file cannot answer itself."""
        if k <= 0 or not self.train:
            return []
        query = self.embed([text])[0]
        ranked = sorted(range(len(self.train)), key=lambda i: (-cosine(query, self.vectors[i]), i))
        picked = [self.train[i] for i in ranked if exclude_text is None or self.train[i].user_input != exclude_text]
        return picked[:k]


def build_messages(
    strategy: Strategy,
    example: EvalExample,
    *,
    k: int,
    shots: Sequence[EvalExample] = (),
    retriever: NearestExamples | None = None,
) -> list[dict[str, Any]]:
    """The messages `strategy` sends for `example`."""
    if strategy.kind == "few-shot":
        return with_shots(example, shots)
    if strategy.kind == "retrieval-few-shot":
        if retriever is None:
            raise ValueError("retrieval few-shot needs a retriever over the training examples")
        neighbours = retriever.nearest(example.user_input, k, exclude_text=example.user_input)
        # Nearest last: closest to the question, where small models attend most.
        return with_shots(example, list(reversed(neighbours)))
    return list(example.prompt)
