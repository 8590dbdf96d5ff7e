"""The supervised loss's cross-entropy straight from the LM head's bf16 logits, for CPU training.

PyTorch's path (``F.cross_entropy`` on an fp32 copy of the logits) makes ~8 passes over a kept-positions x
vocabulary tensor each step: the fp32 copy, log_softmax's three, the gradient's zero fill and scatter,
log_softmax's backward, the cast back to bf16, plus the argmax for the accuracy metric. For the bundled
model's 49,152 words and ~1,000 trained tokens a batch that is 50M elements per pass, ~7% of a LoRA step on
two cores. ``native/cross_entropy.c`` reads the bf16 logits twice forward (the maximum, whose first position
is also the prediction, then the sum of exponentials) and writes the gradient over them in one pass backward,
keeping nothing but the logits and a log-sum-exp a row; the rows are split between PyTorch's threads. The
logits can be spent: ``compute_loss``'s own are, so the gradient is written over them (backward then runs
once; a second raises).

The numbers are PyTorch's to rounding: the sums are fp32 in both, exp is a polynomial within an ulp or two
of PyTorch's, and the gradient rounds once to bf16 where PyTorch's rounds its fp32 gradient the same way.
Where the kernel cannot serve (no compiler, a GPU, other dtypes, targets out of range, whose error
PyTorch's path raises), ``cross_entropy_and_predictions`` does it PyTorch's way.
"""

from __future__ import annotations

import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from openft.training.native_build import build_native_library, declare

_WIDTHS = {torch.bfloat16: "16", torch.float32: "32"}
# Below this many logits a second thread's hand-off costs more than it saves.
_MIN_LOGITS_PER_THREAD = 1 << 20


def cross_entropy_and_predictions(
    logits: torch.Tensor, targets: torch.Tensor, *, spend_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of ``logits`` (rows x vocabulary) against ``targets``, and each row's argmax.

    With ``spend_logits`` the native backward writes the gradient over ``logits`` (the caller reads them no
    more) instead of into a new tensor.
    """
    library = cross_entropy_library() if _native_applies(logits, targets) else None
    if library is None:
        wide = logits.float()
        return F.cross_entropy(wide, targets, reduction="sum"), wide.detach().max(dim=-1).indices
    losses, predictions = _NativeCrossEntropy.apply(logits.contiguous(), targets.contiguous(), spend_logits)
    return losses.sum(), predictions


def _native_applies(logits: torch.Tensor, targets: torch.Tensor) -> bool:
    if logits.device.type != "cpu" or logits.dtype not in _WIDTHS or logits.dim() != 2 or logits.shape[0] == 0:
        return False
    return targets.dtype == torch.int64 and bool(((targets >= 0) & (targets < logits.shape[1])).all())


class _NativeCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, spend_logits: bool):
        rows, vocab = logits.shape
        lse = torch.empty(rows, dtype=torch.float32)
        losses = torch.empty(rows, dtype=torch.float32)
        predictions = torch.empty(rows, dtype=torch.int64)
        forward = getattr(cross_entropy_library(), f"openft_ce_forward{_WIDTHS[logits.dtype]}")
        pointers = (logits.data_ptr(), vocab, targets.data_ptr())
        outputs = (lse.data_ptr(), losses.data_ptr(), predictions.data_ptr())
        _over_rows(logits, lambda first, last: forward(*pointers, first, last, *outputs))
        ctx.save_for_backward(logits, targets, lse)
        ctx.spend_logits, ctx.spent = spend_logits, False
        ctx.mark_non_differentiable(predictions)
        return losses, predictions

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor, _grad_predictions):
        if ctx.spent:
            raise RuntimeError("the native cross-entropy's backward runs once: its logits hold the gradient now")
        logits, targets, lse = ctx.saved_tensors
        row_grads = grad_losses.to(torch.float32).contiguous()
        backward = getattr(cross_entropy_library(), f"openft_ce_backward{_WIDTHS[logits.dtype]}")
        pointers = (logits.data_ptr(), logits.shape[1], targets.data_ptr())
        # Spent logits take the gradient: a fresh 100 MB buffer each step would fault in its pages (measured
        # 60-170 ms the first time a step's size appears, against ~10 ms for the whole pass).
        grad = logits if ctx.spend_logits else torch.empty_like(logits)
        outputs = (lse.data_ptr(), row_grads.data_ptr(), grad.data_ptr())
        _over_rows(logits, lambda first, last: backward(*pointers, first, last, *outputs))
        ctx.spent = ctx.spend_logits
        return grad, None, None


def _over_rows(logits: torch.Tensor, run) -> None:
    """Run ``run(first, last)`` over the rows, split between PyTorch's threads (ctypes releases the GIL)."""
    rows = logits.shape[0]
    threads = max(1, min(torch.get_num_threads(), rows, logits.numel() // _MIN_LOGITS_PER_THREAD))
    if threads == 1:
        run(0, rows)
        return
    bounds = [rows * index // threads for index in range(threads + 1)]
    list(_pool(threads).map(run, bounds[:-1], bounds[1:]))


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="openft-cross-entropy")


@functools.cache
def cross_entropy_library() -> ctypes.CDLL | None:
    """``native/cross_entropy.c`` compiled for this CPU and loaded, or None where it cannot be (no compiler)."""
    library = build_native_library("cross_entropy")
    if library is None:
        return None
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    return declare(library, {
        **{f"openft_ce_forward{width}": [pointer, count, pointer, count, count, pointer, pointer, pointer]
           for width in _WIDTHS.values()},
        **{f"openft_ce_backward{width}": [pointer, count, pointer, count, count, pointer, pointer, pointer]
           for width in _WIDTHS.values()},
    })  # fmt: skip
