"""Retrieval-augmented generation as an evaluation strategy: the passages of the user's documents nearest to
each question (all-MiniLM-L6-v2 embeddings, cosine similarity) go into the prompt.

The index is an exact search: one matrix product of the question's unit vector with every passage's. For the
document sets an evaluation uses (thousands of passages) that takes about a millisecond, needs nothing beyond
numpy and never returns an approximate neighbour, so an approximate index library (FAISS, hnswlib) would add a
compiled dependency without changing a result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openft.evals.chunking import Chunk
from openft.evals.examples import EvalExample, content_text

Embedder = Callable[[Sequence[str]], list[list[float]]]
DEFAULT_RAG_K = 3
PASSAGES_INTRO = "Passages from the reference documents (use them if they answer the question):"


@dataclass(frozen=True)
class Retrieved:
    passages: list[Chunk]  # best first
    scores: list[float]
    seconds: float  # embedding the question and searching


class PassageIndex:
    """Exact cosine search over chunk embeddings."""

    def __init__(self, chunks: Sequence[Chunk], embed: Embedder) -> None:
        if not chunks:
            raise ValueError("RAG needs at least one passage: the documents hold no text")
        self.chunks = list(chunks)
        self.embed = embed
        self.vectors = _unit_rows(np.asarray(embed([c.text for c in self.chunks]), dtype=np.float32))

    def search(self, query: str, k: int) -> Retrieved:
        """The k passages nearest to `query`, nearest first (ties: document order)."""
        start = time.perf_counter()
        vector = _unit_rows(np.asarray(self.embed([query]), dtype=np.float32))[0]
        scores = self.vectors @ vector
        order = sorted(range(len(self.chunks)), key=lambda i: (-float(scores[i]), i))[: max(0, k)]
        return Retrieved([self.chunks[i] for i in order], [float(scores[i]) for i in order],
                         time.perf_counter() - start)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def passages_block(passages: Sequence[Chunk]) -> str:
    """The passages as numbered text, the nearest last (closest to the question, where small models attend)."""
    lines = [PASSAGES_INTRO, ""]
    for number, chunk in enumerate(reversed(passages), start=1):
        lines += [f"[{number}] {chunk.text}", ""]
    return "\n".join(lines)


def with_passages(example: EvalExample, passages: Sequence[Chunk]) -> list[dict[str, Any]]:
    """The example's own prompt with the passages put before the text of its last user message."""
    messages = [dict(m) for m in example.prompt]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[last_user].get("content")
    block = passages_block(passages)
    if isinstance(content, list):  # content parts: the passages become a text part in front
        messages[last_user]["content"] = [{"type": "text", "text": block + "\n"}, *content]
    else:
        messages[last_user]["content"] = f"{block}\n{content_text(content)}"
    return messages
