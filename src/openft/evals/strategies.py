"""The strategies an evaluation compares, and the prompt each one sends for an example.

- zero-shot: the base model with the example's own prompt (its system message included);
- few-shot: k fixed training examples as prior user/assistant turns, then the example;
- retrieval few-shot: the k training examples whose user input is nearest to the example's (MiniLM embeddings);
- fine-tuned (and checkpoints): the fine-tuned model with the plain prompt, like zero-shot;
- external: any OpenAI-compatible endpoint and model with the plain prompt, as a reference;
- rag: the base model with the passages of the user's documents nearest to the question (evals.rag);
- rag-fine-tuned: the same passages for each fine-tuned model, named "rag+<model>";
- function-calling: the base model given the example's tool definitions (`tools`, `tool_choice`);
- rival: another (typically bigger) base model of the registry with the plain prompt, named "rival:<model>":
  does the fine-tuned small model match it?
Fine-tuned models and the external endpoint also receive an example's tools: they are part of the example.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from openft.evals.chunking import Chunk
from openft.evals.examples import EvalExample
from openft.evals.metrics import cosine
from openft.evals.rag import with_passages

Kind = Literal[
    "zero-shot", "few-shot", "retrieval-few-shot", "rag", "function-calling", "fine-tuned", "rag-fine-tuned",
    "rival", "external",
]
KINDS: tuple[Kind, ...] = (
    "zero-shot", "few-shot", "retrieval-few-shot", "rag", "function-calling", "fine-tuned", "rag-fine-tuned",
    "rival", "external",
)
RAG_KINDS = ("rag", "rag-fine-tuned")
TOOL_KINDS = ("function-calling", "fine-tuned", "rag-fine-tuned", "rival", "external")  # send the example's tools
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

    @property
    def uses_documents(self) -> bool:
        return self.kind in RAG_KINDS


def plan_strategies(
    kinds: Sequence[str],
    base_model: str,
    fine_tuned_models: Sequence[str],
    external_model: str | None = None,
    rival_models: Sequence[str] = (),
) -> list[Strategy]:
    """The strategies to run, in a stable order; "fine-tuned" and "rival" expand to one per model."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(KINDS)}")
    plan: list[Strategy] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind in PROMPTED_KINDS or kind in ("rag", "function-calling"):
            plan.append(Strategy(kind, kind, base_model))
        elif kind == "rag-fine-tuned":
            if not fine_tuned_models:
                raise ValueError("the rag-fine-tuned strategy needs at least one fine-tuned model")
            plan.extend(Strategy(f"rag+{name}", kind, name, fine_tuned=True) for name in fine_tuned_models)
        elif kind == "fine-tuned":
            if not fine_tuned_models:
                raise ValueError("the fine-tuned strategy needs at least one fine-tuned model")
            plan.extend(Strategy(name, "fine-tuned", name, fine_tuned=True) for name in fine_tuned_models)
        elif kind == "rival":
            if not rival_models:
                raise ValueError("the rival strategy needs at least one rival model")
            plan.extend(Strategy(f"rival:{name}", "rival", name) for name in rival_models)
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
    passages: Sequence[Chunk] = (),
) -> list[dict[str, Any]]:
    """The messages `strategy` sends for `example` (`passages`: what RAG retrieved for it, nearest first)."""
    if strategy.kind in RAG_KINDS:
        return with_passages(example, passages)
    if strategy.kind == "few-shot":
        return with_shots(example, shots)
    if strategy.kind == "retrieval-few-shot":
        if retriever is None:
            raise ValueError("retrieval few-shot needs a retriever over the training examples")
        neighbours = retriever.nearest(example.user_input, k, exclude_text=example.user_input)
        # Nearest last: closest to the question, where small models attend most.
        return with_shots(example, list(reversed(neighbours)))
    return list(example.prompt)


def tool_params(strategy: Strategy, example: EvalExample, tool_choice: Any = "auto") -> dict[str, Any]:
    """The request parameters that give `strategy` the example's tool definitions, when it carries any."""
    if not example.tools or strategy.kind not in TOOL_KINDS:
        return {}
    return {"tools": example.tools, "tool_choice": tool_choice}
