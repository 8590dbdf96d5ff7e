"""The job event that says what OpenAI's auto batch size costs, and how to trade fidelity for speed.

OpenAI's rule gives batch_size 1 below ~750 examples: one example per forward pass and one optimizer step per
example. A forward pass over 8 examples costs far less per token than 8 passes over 1 (the weights are read once,
the matrix products are wider), on a CPU as on a GPU; bench/train_throughput.py measures the curve.
"""

from __future__ import annotations

import math
from typing import Any

from openft.training.hyperparameters import (
    AUTO,
    THROUGHPUT_BATCH_SIZE,
    ResolvedHyperparameters,
    throughput_batch_size,
)


def batch_size_advice(
    method_type: str, given: dict[str, Any], resolved: ResolvedHyperparameters, n_examples: int
) -> str | None:
    """One info event when the auto batch size is below a full micro-batch; None when there is nothing to say."""
    if method_type not in ("supervised", "dpo") or given.get("batch_size") not in (None, AUTO):
        return None
    if resolved.batch_size_policy == "throughput":
        steps = math.ceil(n_examples / resolved.batch_size)
        return (
            f'batch_size_policy "throughput": batch_size {resolved.batch_size} ({steps} optimizer steps per epoch) '
            f"and learning rate {resolved.learning_rate:.3g}, instead of OpenAI's auto batch size; "
            "the updates differ from what OpenAI's fine-tuning would make."
        )
    faster = throughput_batch_size(n_examples)
    if resolved.batch_size >= min(THROUGHPUT_BATCH_SIZE, faster):
        return None
    steps, fewer_steps = math.ceil(n_examples / resolved.batch_size), math.ceil(n_examples / faster)
    scale = math.sqrt(faster / resolved.batch_size)
    return (
        f"Auto batch_size is {resolved.batch_size} (OpenAI's rule: about 0.2% of {n_examples} examples): "
        f"{steps} optimizer steps per epoch, {resolved.batch_size} example(s) per forward pass, which uses this "
        f"hardware poorly (a batch of {faster} costs far less per token). For speed, set the openft "
        f'hyperparameter batch_size_policy to "throughput" (batch_size {faster}, {fewer_steps} steps per epoch, '
        f"learning rate x{scale:.2f}) or set batch_size yourself; either makes fewer, larger updates than "
        "OpenAI's fine-tuning would."
    )
