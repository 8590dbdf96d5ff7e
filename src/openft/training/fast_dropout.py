"""LoRA dropout that draws its random numbers four at a time, for CPU training.

PEFT applies ``nn.Dropout`` to the input of every LoRA layer: 210 calls a forward pass for the bundled model,
each over every token of the batch. On a CPU, PyTorch's dropout draws one number per element from the
sequential Mersenne Twister (``bernoulli_``, ~4 ns an element on one core): 5 ms for one 8 x 160-token batch
at width 576, against 0.1 ms for the LoRA product it feeds, about a quarter of a training step.
``FastLoraDropout`` draws 64-bit numbers and splits each into four 16-bit ones, then keeps an element when its
16-bit number is at or above ``p`` x 65536: the same independent Bernoulli mask, with ``p`` rounded to a
multiple of 1/65536 (0.05 becomes 0.0500031). The seed still fixes every mask.

Where a C compiler is at hand (it is wherever the serving engine's native step builds), ``native/dropout.c``
draws the 16-bit numbers by SplitMix64 over a counter, seeded by one draw from PyTorch's generator a call
(so ``torch.manual_seed`` still fixes every mask), and copies or zeroes each element in one pass: 46 us for
a 1,136 x 576 mask against 632 us for PyTorch's draws and comparison (PyTorch's CPU generator is the
sequential Mersenne Twister; numpy's fastest bit generators were only ~1.6x faster, hence the few lines of
C). Being counter-based, the same seed gives the same mask again, so backward calls it on the gradient
instead of keeping a mask: no mask in memory between the passes (~290 MB a step for the bundled model at
1,200 tokens) and one pass each way. The fused LoRA forward (lora_fused.py) takes the dropped input without
the 1 / (1 - p) scale (``unscaled``) and folds the scale into its product's ``alpha``, saving an
input-sized multiply forward and backward; PEFT's own forward gets the scaled input from ``forward``.

Without a compiler, PyTorch draws the numbers and the mask is kept as 1.0 / 0.0 in the input's dtype,
written by the comparison itself (multiplying a bf16 tensor by booleans converts them first, forward and
backward: for a 1,189 x 576 input 263 us a conversion, against 67 us for writing the comparison as bf16).
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import nn

from openft.models.cpu import runs_on_cpu
from openft.training.native_build import build_native_library, declare

_SPAN = 1 << 16  # values a 16-bit draw takes


class _NativeDropout(torch.autograd.Function):
    """``native/dropout.c`` forward, and again with the same seed on the gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
        ctx.seed = _seed_from_torch()
        ctx.threshold, ctx.scale = threshold, scale
        return _apply_native(x.contiguous(), ctx.seed, threshold, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # The gradient has the output's shape; contiguous, its elements line up with the forward's.
        return _apply_native(grad.contiguous(), ctx.seed, ctx.threshold, ctx.scale), None, None


class _KeepAndScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _scaled(x.mul(keep), scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _scaled(grad.mul(keep), ctx.scale), None, None


class FastLoraDropout(nn.Module):
    """``nn.Dropout(p)`` in distribution (p to 1/65536), with cheaper random draws (the module docstring)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        # A 16-bit draw is uniform on [-32768, 32767]; keep it when it is at or above this.
        self.threshold = round(p * _SPAN) - _SPAN // 2
        self.scale = 1.0 / (1.0 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._drop(x, self.scale) if self._drops(x) else x

    def unscaled(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The input with dropped elements zeroed but kept ones unscaled, and the scale still owed them."""
        return (self._drop(x, 1.0), self.scale) if self._drops(x) else (x, 1.0)

    def _drops(self, x: torch.Tensor) -> bool:
        return self.training and self.p > 0 and x.numel() > 0

    def _drop(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        if x.dtype in _DROPOUT_FUNCTIONS and x.device.type == "cpu" and dropout_library() is not None:
            return _NativeDropout.apply(x, self.threshold, scale)
        count = x.numel()
        draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((count + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        # The mask as 1.0 / 0.0 in x's dtype, written by the comparison itself: multiplying by booleans made
        # PyTorch convert them first, forward and backward, which cost more than drawing the mask.
        torch.ge(draws.view(torch.int16)[:count].view(x.shape), self.threshold, out=keep)
        return _KeepAndScale.apply(x, keep, scale)

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


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x if scale == 1.0 else x.mul_(scale)


def _seed_from_torch() -> int:
    """One draw from PyTorch's generator seeds a native call, so torch.manual_seed still fixes every mask."""
    return int(torch.randint(-(1 << 63), (1 << 63) - 1, (1,), dtype=torch.int64)) & ((1 << 64) - 1)


_DROPOUT_FUNCTIONS = {
    torch.bfloat16: "openft_dropout16",
    torch.float16: "openft_dropout16",
    torch.float32: "openft_dropout32",
}


def _apply_native(x: torch.Tensor, seed: int, threshold: int, scale: float) -> torch.Tensor:
    out = torch.empty_like(x)
    function = getattr(dropout_library(), _DROPOUT_FUNCTIONS[x.dtype])
    function(x.data_ptr(), out.data_ptr(), x.numel(), seed, threshold)
    return _scaled(out, scale)


@functools.cache
def dropout_library() -> ctypes.CDLL | None:
    """``native/dropout.c`` compiled for this CPU and loaded, or None where it cannot be (no compiler)."""
    library = build_native_library("dropout")
    if library is None:
        return None
    pointer = ctypes.c_void_p
    signature = [pointer, pointer, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int16]
    return declare(library, dict.fromkeys(set(_DROPOUT_FUNCTIONS.values()), signature))
