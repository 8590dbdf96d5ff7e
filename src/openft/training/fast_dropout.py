"""LoRA dropout that draws its random numbers four at a time, for CPU training.

PEFT applies ``nn.Dropout`` to the input of every LoRA layer: 210 calls a forward pass for the bundled model,
each over every token of the batch. On a CPU, PyTorch's dropout draws one number per element from the
sequential Mersenne Twister (``bernoulli_``, ~4 ns an element on one core): 5 ms for one 8 x 160-token batch
at width 576, against 0.1 ms for the LoRA product it feeds, about a quarter of a training step.
``FastLoraDropout`` draws 64-bit numbers and splits each into four 16-bit ones, then keeps an element when its
16-bit number is at or above ``p`` x 65536: the same independent Bernoulli mask, with ``p`` rounded to a
multiple of 1/65536 (0.05 becomes 0.0500031), at about a fifth of the cost. Backward multiplies by the same
mask, kept as 1.0 / 0.0 in the input's dtype (PyTorch's own dropout keeps booleans, but multiplying a bf16
tensor by booleans converts them first, forward and backward: for a 1,189 x 576 input 263 us a conversion,
against 67 us for writing the comparison's result as bf16 directly; twice the bytes of booleans while it
waits for the backward pass). The seed still fixes every mask.
"""

from __future__ import annotations

import torch
from torch import nn

from openft.models.cpu import runs_on_cpu

_SPAN = 1 << 16  # values a 16-bit draw takes


class _KeepAndScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


class FastLoraDropout(nn.Module):
    """``nn.Dropout(p)`` in distribution (p to 1/65536), with a quarter of the generator calls."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        # A 16-bit draw is uniform on [-32768, 32767]; keep it when it is at or above this.
        self.threshold = round(p * _SPAN) - _SPAN // 2
        self.scale = 1.0 / (1.0 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.numel() == 0:
            return x
        count = x.numel()
        draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((count + 3) // 4,), dtype=torch.int64, device=x.device)
        # The mask as 1.0 / 0.0 in x's dtype, written by the comparison itself: multiplying by booleans made
        # PyTorch convert them first, forward and backward, which cost more than drawing the mask.
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        torch.ge(draws.view(torch.int16)[:count].view(x.shape), self.threshold, out=keep)
        return _KeepAndScale.apply(x, keep, self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_lora_dropout(model: nn.Module) -> int:
    """Swap the ``nn.Dropout`` modules of a CPU model's LoRA layers for FastLoraDropout; returns how many.

    Only on the CPU: CUDA's dropout uses a counter-based generator that is already fast.
    """
    if not runs_on_cpu(model):
        return 0
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout and dropout.p > 0:
                replacement = FastLoraDropout(dropout.p)
                replacement.train(dropout.training)
                dropouts[name] = replacement
                swapped += 1
    return swapped
