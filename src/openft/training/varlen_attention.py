"""Attention for padding-free batches that costs what its examples cost, not what their concatenation costs.

A padding-free batch is one row holding several examples back to back. transformers' SDPA path attends
over it with a dense block-diagonal mask, so attention work grows with the square of the *packed*
length: eight 150-token examples cost as much as one 1200-token example (eight times their own cost),
and CPU SDPA kernels skip nothing for masked blocks. FlashAttention's varlen kernel avoids that on
CUDA, but it is a separate install and does not run on CPU. This implementation reads the sequence
boundaries TRL's padding-free collator already puts in the batch (`cu_seq_lens_q`) and runs SDPA
causally on each example's slice, the same result with no cross-example work. Batches without
boundaries (padded eval batches, DPO, generation) take transformers' own SDPA path unchanged.

On a CPU, bf16 examples of at most ``CPU_SHORT_ATTENTION_MAX_TOKENS`` tokens attend through
short_attention.ShortCausalAttention (batched products, transformers' eager numbers) instead of PyTorch's CPU
flash-attention kernel, which is slow at these lengths (SmolLM2's 9 heads of 64, 2 cores, forward plus backward:
150 tokens 0.6 against 1.7 ms for flash in fp32 and 2.2 in bf16; 512 tokens 7.5 against 14.0 in bf16; about
even at 768). Longer examples keep flash attention, whose memory does not grow with the square of the length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from openft.training.short_attention import short_causal_attention

VARLEN_ATTENTION = "openft_varlen_sdpa"
CPU_SHORT_ATTENTION_MAX_TOKENS = 512


def varlen_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    boundaries = kwargs.get("cu_seq_lens_q")
    packed = boundaries is not None and query.shape[0] == 1 and key.shape[2] == query.shape[2]
    if not packed:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # The block-diagonal mask built for this batch says exactly what per-example causal attention does,
    # so it is not needed here.
    groups = query.shape[1] // key.shape[1]
    starts_ends = _boundaries_list(boundaries)
    short_on_cpu = query.device.type == "cpu" and query.dtype == torch.bfloat16 and not dropout
    outputs = []
    for start, end in zip(starts_ends[:-1], starts_ends[1:], strict=False):
        if end <= start:
            continue
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        if short_on_cpu and end - start <= CPU_SHORT_ATTENTION_MAX_TOKENS:
            outputs.append(short_causal_attention(q, k, v, scaling))
        else:
            outputs.append(_causal_attention(q, k, v, dropout, scaling, groups))
    attn_output = torch.cat(outputs, dim=2)
    return attn_output.transpose(1, 2).contiguous(), None


def _causal_attention(q, k, v, dropout: float, scaling: float | None, groups: int) -> torch.Tensor:
    return F.scaled_dot_product_attention(
        q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=groups > 1
    )


_last_boundaries: tuple[torch.Tensor | None, list[int]] = (None, [])


def _boundaries_list(boundaries: torch.Tensor) -> list[int]:
    """The boundaries as Python ints, read once per forward pass: every layer gets the same tensor, and on a
    GPU each `.tolist()` would wait for the device."""
    global _last_boundaries
    if _last_boundaries[0] is not boundaries:
        _last_boundaries = (boundaries, boundaries.tolist())
    return _last_boundaries[1]


def register_varlen_attention() -> str:
    """Make `attn_implementation=VARLEN_ATTENTION` loadable; idempotent. Returns the name."""
    AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention_forward)
    AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)
    return VARLEN_ATTENTION
