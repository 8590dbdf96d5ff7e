"""Turning one row of logits into a token: greedy or temperature + top-p, per-request RNG, logprobs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from openft.serving.types import TopLogprob


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (always at least the best one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_row(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    greedy_token: int | None = None,
) -> tuple[int, torch.Tensor]:
    """Pick a token; return it with the processed logits it was drawn from (for logprobs)."""
    if temperature == 0:
        token = greedy_token if greedy_token is not None else int(torch.argmax(logits))
        return token, logits
    processed = top_p_filter(logits / temperature, top_p)
    probs = torch.softmax(processed, dim=-1)
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, processed


def logprobs_for(
    processed: torch.Tensor, token: int, top_n: int, token_text: Callable[[int], str]
) -> tuple[float, list[TopLogprob] | None]:
    logprobs = torch.log_softmax(processed, dim=-1)
    chosen = float(logprobs[token])
    if top_n <= 0:
        return chosen, None
    values, ids = torch.topk(logprobs, top_n)
    tops = [
        TopLogprob(token_id=int(i), token=token_text(int(i)), logprob=float(v))
        for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        if v != float("-inf")
    ]
    return chosen, tops
