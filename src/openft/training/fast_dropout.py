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

Where a C compiler is at hand (it is wherever the serving engine's native step builds), the mask comes from
``native/dropout_mask.c`` instead: the same rule on 16-bit numbers, drawn by SplitMix64 over a counter (seeded
by one draw from PyTorch's generator a call, so ``torch.manual_seed`` still fixes every mask) and written
straight in the input's dtype: 46 us for a 1,136 x 576 input against 632 us for PyTorch's draws and
comparison, which had been ~8% of a LoRA step of the bundled model. PyTorch's CPU generator is the sequential
Mersenne Twister and numpy's fastest bit generators were only ~1.6x faster than it, hence the few lines of C.
It is compiled once a machine with ``cc`` (a fraction of a second) into PyTorch's extension cache; without a
compiler, the PyTorch draws above serve.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

from openft.models.cpu import cpu_flags, runs_on_cpu

log = logging.getLogger(__name__)

MASK_SOURCE = Path(__file__).parent / "native" / "dropout_mask.c"
MASK_CFLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]

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
        if not self.training or self.p == 0 or x.numel() == 0:
            return x
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        if not _fill_natively(keep, self.threshold):
            count = x.numel()
            draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((count + 3) // 4,), dtype=torch.int64, device=x.device)
            # The mask as 1.0 / 0.0 in x's dtype, written by the comparison itself: multiplying by booleans made
            # PyTorch convert them first, forward and backward, which cost more than drawing the mask.
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


_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00, torch.float32: 0x3F800000}  # 1.0's bit pattern


def _fill_natively(keep: torch.Tensor, threshold: int) -> bool:
    """Write ``keep``'s mask with native/dropout_mask.c; False where it is not built or takes no such tensor."""
    one = _ONE_BITS.get(keep.dtype)
    library = keep_mask_library() if one is not None and keep.device.type == "cpu" else None
    if library is None:
        return False
    # One draw from PyTorch's generator seeds the call, so torch.manual_seed still fixes every mask.
    seed = int(torch.randint(-(1 << 63), (1 << 63) - 1, (1,), dtype=torch.int64)) & ((1 << 64) - 1)
    fill = library.openft_keep_mask16 if keep.element_size() == 2 else library.openft_keep_mask32
    fill(keep.data_ptr(), keep.numel(), seed, threshold, one)
    return True


@functools.cache
def keep_mask_library() -> ctypes.CDLL | None:
    """``native/dropout_mask.c`` compiled for this CPU and loaded, or None where it cannot be (no compiler)."""
    identity = "\n".join([cpu_flags(), " ".join(MASK_CFLAGS), MASK_SOURCE.read_text()])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    built = _extensions_dir() / f"openft_dropout_mask_{digest}.so"
    try:
        if not built.is_file():
            compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            if compiler is None:
                raise RuntimeError("no C compiler (cc, gcc or $CC)")
            built.parent.mkdir(parents=True, exist_ok=True)
            # Built under a temporary name and renamed, so a concurrent job never loads a half-written file.
            with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
                partial = Path(scratch) / built.name
                subprocess.run([compiler, *MASK_CFLAGS, "-o", str(partial), str(MASK_SOURCE)],
                               check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
                os.replace(partial, built)
        library = ctypes.CDLL(str(built))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        reason = (getattr(exc, "stderr", None) or str(exc)).strip()  # a failed compile: the compiler's own words
        log.info("LoRA dropout draws its masks with PyTorch: the native mask could not be built (%s)", reason)
        return None
    for name, element in (("openft_keep_mask16", ctypes.c_uint16), ("openft_keep_mask32", ctypes.c_uint32)):
        function = getattr(library, name)
        function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int16, element]
        function.restype = None
    return library


def _extensions_dir() -> Path:
    """Where PyTorch's C++ extension loader keeps its builds on Linux (TORCH_EXTENSIONS_DIR, else the user's
    cache), as the serving engine's native step uses it; torch.utils.cpp_extension would tell, but importing it
    costs ~0.16 s, inside the first training step."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"
