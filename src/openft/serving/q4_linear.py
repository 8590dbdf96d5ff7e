"""4-bit decode weights (``OPENFT_SERVING_DECODE_WEIGHTS=q4``): decode steps read Q4_1 weights, not fp32.

A decode step at batch size 1 multiplies one row by every weight matrix, so it is bound by how many bytes of
weights it reads: 540 MB in fp32 for the bundled 135M model, about 22 ms a token on a 2-core machine before
any other work. ``OPENFT_SERVING_DECODE_WEIGHTS=q4`` gives every linear layer of the decoder blocks a second,
4-bit copy of its weights in llama.cpp's Q4_1 layout (groups of 32 along the input, each with a scale and a
minimum) and uses it when a forward pass has at most ``MAX_Q4_ROWS`` rows: decode steps of small batches.
The 4-bit kernel dequantises as it goes, so passes of more rows (bigger batches, prefill) are bound by
arithmetic there; where the CPU has native bf16 (AVX512-BF16 or AMX) they run on a second copy, oneDNN's
prepacked bf16 linear, 2.5x fp32's speed at 16 rows and more at prefill sizes (bf16 rounds each weight to 8
significant bits), and elsewhere on the fp32 weights. The fp32 weights stay (PEFT wraps these layers for LoRA
adapters and reads them, and training never uses the copies), so ``q4`` costs memory: about 1/8 of the fp32
size for the 4-bit copy and 1/2 for the bf16 one.

The bundled model's weights *are* Q4_1 (its GGUF file stores them so; openft dequantises them to fp32), so
for it the 4-bit copy is exact: ``quantization_error`` is 0, and the 4-bit path differs from fp32 only in that
the kernel (PyTorch's ``_weight_int4pack_mm_for_cpu``) takes bf16 activations and scales. For other models
it is a lossy quantisation, the same as llama.cpp's Q4_1. The output layer (tied to the embeddings, Q8_0 in the
bundled GGUF, 21% of the bundled model's weights) gets a bf16 copy instead (``BF16DecodeOutput``): it reads
half the bytes, at bf16's precision of about 3 significant digits. CPU only; docs/serving.md has the measured
speed and how often greedy outputs differ (which also depends on the batch: a request alone and the same
request in a batch of 12 take different paths, so they can part ways at a near-tie).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from openft.models.cpu import cpu_has_native_bf16

log = logging.getLogger(__name__)

GROUP_SIZE = 32  # Q4_1's block: one scale and one minimum per 32 weights along the input
# Up to this many rows the 4-bit kernel is the fastest; it dequantises as it goes, so beyond it oneDNN's
# prepacked bf16 linear wins (all 210 layers of the bundled model, 2 cores: 1 row 6.0 ms 4-bit / 14.8 bf16 /
# 16.3 fp32; 8 rows 12.7 / 14.4 / 30.3; 16 rows 22.7 / 15.5 / 38.2; 64 rows - / 18.8 / -).
MAX_Q4_ROWS = 8  # above this many rows the fp32 matmul is faster than the 4-bit kernel on a CPU
_INNER_K_TILES = 2  # the packing's tile parameter; 2 works for any input width that is a multiple of 32


def q4_1_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(packed 4-bit weight, bf16 scales and zeros, the fp32 weight the 4-bit copy stands for, max abs error).

    Each group of 32 weights becomes ``q * scale + minimum`` with q in 0..15, as in llama.cpp's Q4_1. The
    packed kernel computes ``(q - 8) * scale + zero``, so zero = minimum + 8 * scale.
    """
    out_features, in_features = weight.shape
    groups = weight.detach().float().reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE)
    minimum, maximum = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
    scale = ((maximum - minimum) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = ((groups - minimum) / scale).round().clamp(0, 15)
    represented = (q * scale + minimum).reshape(out_features, in_features)
    error = float((represented - weight.detach().float()).abs().max())
    zero = minimum + 8 * scale
    scales_and_zeros = torch.stack(
        [scale.reshape(out_features, -1).t(), zero.reshape(out_features, -1).t()], dim=-1
    ).contiguous()  # [in / 32, out, 2]
    packed = torch._convert_weight_to_int4pack_for_cpu(
        q.to(torch.int32).reshape(out_features, in_features), _INNER_K_TILES
    )
    return packed, scales_and_zeros.to(torch.bfloat16), represented, error


def bf16_batches_available() -> bool:
    """oneDNN's prepacked bf16 linear runs fast here: the CPU has native bf16 (AVX512-BF16 or AMX)."""
    fast = cpu_has_native_bf16() and torch.backends.mkldnn.is_available()
    return fast and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Q4DecodeLinear(nn.Linear):
    """An ``nn.Linear`` (same weight and bias parameters) whose inference passes read 4-bit or bf16 copies."""

    def __init__(self, linear: nn.Linear, bf16_batches: bool | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        packed, scales_and_zeros, _, error = q4_1_quantize(linear.weight)
        self.register_buffer("q4_weight", packed, persistent=False)
        self.register_buffer("q4_scales_and_zeros", scales_and_zeros, persistent=False)
        self.quantization_error = error
        # oneDNN's blocked bf16 copy for passes of more rows; an opaque tensor (no storage), so not a buffer:
        # `unregistered_bytes` tells the memory accounting about it.
        self.bf16_packed: torch.Tensor | None = None
        self.bf16_bias: torch.Tensor | None = None
        self.unregistered_bytes = 0
        if bf16_batches_available() if bf16_batches is None else bf16_batches:
            with torch.no_grad():
                bf16 = linear.weight.detach().to(torch.bfloat16)
                self.bf16_packed = torch.ops.mkldnn._reorder_linear_weight(bf16, 2 * MAX_Q4_ROWS)
                self.bf16_bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
            self.unregistered_bytes = bf16.numel() * bf16.element_size()
        self.siblings: Q4Siblings | None = None
        self.sibling_index = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if torch.is_grad_enabled() or rows == 0:
            return super().forward(x)
        if self.siblings is not None and self.siblings.serves(rows):
            y = self.siblings.take(self.sibling_index, x, rows)
            y = y if self.bias is None else y + self.bias
            return y.reshape(*x.shape[:-1], self.out_features)
        flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
        if rows <= MAX_Q4_ROWS:
            y = torch._weight_int4pack_mm_for_cpu(flat, self.q4_weight, GROUP_SIZE, self.q4_scales_and_zeros)
            y = y if self.bias is None else y + self.bias
        elif self.bf16_packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(flat, self.bf16_packed, self.bf16_bias, "none", [], "")
        else:
            return super().forward(x)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class Q4Siblings:
    """Projections that read the same input (q/k/v, gate/up) share one product over their stacked weights.

    The model still calls each projection on its own; the first call computes every member's output and keeps
    the others for the calls that follow with the same input tensor (the same object, held here so its identity
    cannot be reused). A call with any other input computes afresh, so the order of calls does not matter. At
    batch 1 the 4-bit kernel's fixed cost dominates these small products: three calls of 960 outputs' worth
    cost 40 us, one call 22 us. Quantising the stack is quantising each member (Q4_1's groups run along
    the input), so the numbers are the same as per member. Where the members have oneDNN bf16 copies for
    passes of more rows, the stack has one instead (the members' are dropped: same memory): 16 rows through
    q/k/v and gate/up of the bundled model take 125 us a layer stacked against 179 us one by one, the same
    numbers.
    """

    def __init__(self, members: list[Q4DecodeLinear]) -> None:
        self.widths = [member.out_features for member in members]
        self.members = list(members)
        self.bias_free = all(member.bias is None for member in members)
        stacked = torch.cat([member.weight.detach() for member in members], dim=0)
        self.packed, self.scales_and_zeros, _, _ = q4_1_quantize(stacked)
        self.bf16_packed: torch.Tensor | None = None
        if all(member.bf16_packed is not None for member in members):
            self.bf16_packed = torch.ops.mkldnn._reorder_linear_weight(stacked.to(torch.bfloat16), 2 * MAX_Q4_ROWS)
        self._input: torch.Tensor | None = None
        self._outputs: list[torch.Tensor | None] = []
        for index, member in enumerate(members):
            member.siblings, member.sibling_index = self, index
            # The stack replaces the members' own copies; the first member holds it, for memory accounting.
            member.q4_weight = self.packed if index == 0 else None
            member.q4_scales_and_zeros = self.scales_and_zeros if index == 0 else None
            if self.bf16_packed is not None:
                member.bf16_packed = member.bf16_bias = None
                member.unregistered_bytes = stacked.numel() * 2 if index == 0 else 0

    def serves(self, rows: int) -> bool:
        """Whether the stack computes passes of ``rows`` rows (else each member runs its fp32 weights)."""
        return rows <= MAX_Q4_ROWS or self.bf16_packed is not None

    def product(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Every member's output for ``x`` side by side, without biases, as [rows, sum of widths] in x's dtype."""
        flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)
        if rows <= MAX_Q4_ROWS:
            y = torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP_SIZE, self.scales_and_zeros)
        else:
            y = torch.ops.mkldnn._linear_pointwise(flat, self.bf16_packed, None, "none", [], "")
        return y.to(x.dtype)

    def take(self, index: int, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Member ``index``'s output for ``x`` as [rows, out_features] in x's dtype."""
        if self._input is not x or self._outputs[index] is None:
            self._input, self._outputs = x, list(self.product(x, rows).split(self.widths, dim=-1))
        output, self._outputs[index] = self._outputs[index], None
        if all(kept is None for kept in self._outputs):
            self._input = None  # nothing left to hand out: do not hold on to the input
        return output


# Children of one module that the model calls on the same input, by the names Llama-family models use.
SIBLING_NAMES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _group_siblings(model: nn.Module) -> int:
    groups = 0
    for parent in model.modules():
        for names in SIBLING_NAMES:
            members = [getattr(parent, name, None) for name in names]
            if all(isinstance(m, Q4DecodeLinear) for m in members) and len({m.in_features for m in members}) == 1:
                Q4Siblings(members)
                groups += 1
    return groups


class BF16DecodeOutput(nn.Linear):
    """The output layer (same parameters, ties kept) with a bf16 copy of its weight for inference passes.

    Where the CPU has native bf16 the copy is oneDNN's prepacked one and serves every pass: at 16 rows it
    takes 1.5 ms against fp32's 8-10 ms (MKL is slow for a few rows against 49k outputs), 1.3 ms at one row.
    Elsewhere a plain bf16 copy serves single-row steps as a matrix-vector product.
    """

    def __init__(self, linear: nn.Linear, bf16_batches: bool | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        bf16 = linear.weight.detach().to(torch.bfloat16)
        self.bf16_packed: torch.Tensor | None = None
        self.unregistered_bytes = 0
        if bf16_batches_available() if bf16_batches is None else bf16_batches:
            self.bf16_packed = torch.ops.mkldnn._reorder_linear_weight(bf16, 2 * MAX_Q4_ROWS)
            self.unregistered_bytes = bf16.numel() * bf16.element_size()
            bf16 = None
        self.register_buffer("bf16_weight", bf16, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if torch.is_grad_enabled() or rows == 0:
            return super().forward(x)
        if self.bf16_packed is not None:
            flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
            y = torch.ops.mkldnn._linear_pointwise(flat, self.bf16_packed, None, "none", [], "")
        elif rows == 1:
            y = torch.mv(self.bf16_weight, x.reshape(-1).to(torch.bfloat16))
        else:
            return super().forward(x)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def _cpu_fp32_linear(module: nn.Module | None) -> bool:
    return type(module) is nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32


def use_q4_decode_weights(model: nn.Module) -> dict[str, float]:
    """Swap the decoder blocks' linear layers for Q4DecodeLinear, in place, before any adapter is loaded.

    Returns {"layers": how many were swapped, "max_error": the largest weight change the 4-bit copy makes}.
    Layers whose input width is not a multiple of 32 keep fp32; the output layer gets a bf16 copy instead.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    bf16_batches = bf16_batches_available()  # probed once, not per layer
    swapped, max_error = 0, 0.0
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if child is output or not _cpu_fp32_linear(child) or child.in_features % GROUP_SIZE:
                    continue
                replacement = Q4DecodeLinear(child, bf16_batches)
                setattr(parent, name, replacement)
                swapped += 1
                max_error = max(max_error, replacement.quantization_error)
    groups = _group_siblings(model)
    if _cpu_fp32_linear(output):
        model.set_output_embeddings(BF16DecodeOutput(output, bf16_batches))
    log.info(
        "4-bit decode weights: %d linear layers (%d groups sharing an input), largest weight change %.3g",
        swapped, groups, max_error,
    )  # fmt: skip
    return {"layers": swapped, "sibling_groups": groups, "max_error": max_error}
