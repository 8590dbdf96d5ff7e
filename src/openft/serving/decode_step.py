"""The engine's decode step for Llama models, without transformers' generic forward around the same operators.

A decode step feeds one token per row. transformers' forward spends much of such a step on work that does not
depend on it: building masks, looking up attention functions, output records, keyword plumbing, a module call
per projection. On the bundled 135M model with 4-bit weights that was 3.5 of 16 ms a token at one row.

``LlamaDecodeStep`` runs the same computation in the same order: embeddings, the model's own rotary
embedding, RMSNorm (``F.rms_norm``, which gives HF's LlamaRMSNorm's numbers for fp32), each projection through
its module, SDPA, residual adds, the final norm and the output layer. A LoRA layer in
lora_batch.BatchedLora's care runs as PEFT's wrapper and the hook would: its base layer, then
``BatchedLora.add_delta``, without the wrapper's ~10 us; other LoRA layers run their own forward.
Projections whose base layers share an input and are one q4_linear.Q4Siblings stack run as one product,
4-bit or bf16, each adapter delta added in place to its part. The rotation ``x * cos + rotate_half(x) * sin``
runs for queries and keys together as ``x * cos + roll(x, half) * sin'``, with rotate_half's sign folded
into ``sin'`` (``-a * b == a * -b`` exactly). Attention packs each key/value head's group of query heads as
that head's queries, as transformers does for one token with a mask; without a mask transformers asks SDPA
for ``enable_gqa`` instead, which on the CPU is slower (16 rows of 300 tokens: 360 against 233 us a layer)
and sums in another order. So base logits equal transformers' bit for bit for padded batches and to float
rounding (1e-7) otherwise, with or without adapters (tests/serving/test_decode_step.py).

Built with ``native=True`` (and the extension built), a step of one unpadded row runs as one native call
(native_decode.py), and other steps take their plain fp32 products from the extension's ``linear_rows``.

Only plain ``LlamaForCausalLM`` models with fp32 activations take this path; anything else (another
architecture, a subclass, bf16 activations, PEFT's own ``adapter_names`` batches) runs transformers' forward.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaRMSNorm,
)

from openft.serving import native_decode
from openft.serving.lora_batch import BatchedLora
from openft.serving.q4_linear import GROUP_SIZE, MAX_Q4_ROWS, Q4DecodeLinear

# Decode steps of up to this many rows run their fp32 products through the native ``linear_rows`` (built with
# the native step): each weight read once for all rows. The bundled model's 210 products and output layer, 2
# cores: 4 rows 18 against MKL's 48 ms, 16 rows 32 against 59, 64 rows 83 against 125.
MAX_NATIVE_ROWS = 64

log = logging.getLogger(__name__)


class LlamaDecodeStep:
    """Callable: (input_ids [B, 1], attention_mask [B, L], position_ids [B, 1], cache) -> logits [B, vocab]."""

    @staticmethod
    def supports(model: nn.Module) -> bool:
        if type(model) is not LlamaForCausalLM:
            return False
        parts = [(LlamaRMSNorm, model.model.norm)]
        for layer in model.model.layers:
            parts += [(LlamaDecoderLayer, layer), (LlamaAttention, layer.self_attn), (LlamaMLP, layer.mlp)]
            parts += [(LlamaRMSNorm, layer.input_layernorm), (LlamaRMSNorm, layer.post_attention_layernorm)]
        return model.get_input_embeddings().weight.dtype == torch.float32 and all(
            type(module) is kind for kind, module in parts
        )

    def __init__(self, model: LlamaForCausalLM, native: bool = False) -> None:
        if not self.supports(model):
            raise ValueError(f"{type(model).__name__} is not a plain fp32 LlamaForCausalLM")
        config = model.config
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = model.model.layers[0].self_attn.scaling if len(model.model.layers) else 1.0
        # SiLU (Llama's activation) as a function call rather than a module call; any other one stays the module.
        self.silu = all(type(layer.mlp.act_fn) in (nn.SiLU, SiLUActivation) for layer in model.model.layers)
        # Single-row steps as one native call (serving/native_decode.py), where asked for and the weights allow.
        self.native = None
        self.native_has_head = False  # the native call returns logits (fp32 output layer), not the hidden state
        self.native_steps = 0
        self._native_lora: int | None = None  # the BatchedLora generation the registered adapters are from
        self._native_refused: set[int] = set()  # adapter slots the native step cannot run (then Python does)
        # The native extension (where it was built): its ``linear_rows`` serves this step's fp32 products for
        # batches of rows, and BatchedLora (given it by the engine) its ``lora_rows`` for rows on adapters.
        self.extension = None
        if native and self.silu and native_decode.weights_kind(model) is not None:
            try:
                built = native_decode.build_decoder(model, self.heads, self.kv_heads, self.head_dim, self.scaling)
                self.native, self.native_has_head = built
                self.extension = native_decode.load_extension()
            except RuntimeError as exc:
                log.warning("single-row decode steps stay in Python: %s", exc)

    def _native_adapter(self, inner: nn.Module, lora: BatchedLora | None) -> int | None:
        """What the native step runs for this one-row pass: -1 for the base weights (no adapters loaded, or
        ``BatchedLora.base_only`` has PEFT's wrappers out of the way), the key it knows the row's adapter by, or
        None where the Python step must run (the wrappers are PEFT's own, or several adapters share the pass)."""
        if lora is None or lora.bypassed:
            first = inner._modules["layers"]._modules.get("0")
            plain = first is None or type(first._modules["self_attn"]._modules["o_proj"]) in (Q4DecodeLinear, nn.Linear)
            return -1 if plain else None
        slot = lora.single_row_slot()
        if slot is None:
            return None
        if self._native_lora != lora.generation:  # adapters loaded or dropped: the stacks were rebuilt
            self.native.drop_adapters()
            self._native_lora, self._native_refused = lora.generation, set()
        if slot in self._native_refused:
            return None
        if not self.native.has_adapter(slot) and not native_decode.register_adapter(self.native, inner, lora, slot):
            self._native_refused.add(slot)
            return None
        return slot

    def __call__(self, input_ids, attention_mask, position_ids, cache, lora: BatchedLora | None = None) -> torch.Tensor:
        # Children are read from ``_modules`` / ``_parameters``, not as attributes: nn.Module.__getattr__ takes
        # ~1 us and a step makes ~600 such lookups. The dicts are what PEFT and BatchedLora.base_only change,
        # so each step sees the modules as they are now.
        inner = self.model._modules["model"]
        batch, heads, kv_heads, head_dim = input_ids.shape[0], self.heads, self.kv_heads, self.head_dim
        hidden = inner.embed_tokens(input_ids)  # [B, 1, D]
        cos, sin = inner.rotary_emb(hidden, position_ids)  # [B, 1, head_dim]
        cos = cos.view(batch, 1, 1, head_dim)
        half = head_dim // 2
        sin = sin.view(batch, 1, 1, head_dim)
        # No padding anywhere: no mask, as transformers passes none then either.
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        native = self.native
        adapter = self._native_adapter(inner, lora) if native is not None and batch == 1 and mask is None else None
        if adapter is not None:
            room = native_decode.cache_room(cache.layers)
            if room is not None:
                keys, values, length = room
                sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
                out = native.step(hidden.view(-1), cos.view(-1), sin.view(-1), keys, values, length, adapter)
                for layer in cache.layers:
                    layer.grow_views(length + 1)
                self.native_steps += 1
                return out.view(1, -1) if self.native_has_head else self.model.lm_head(out.view(1, 1, -1))[:, -1, :]
        sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        # fp32 products of a few rows through the extension's linear_rows (where it was built), else MKL.
        kernel = self.extension if batch <= MAX_NATIVE_ROWS else None
        query_width, key_width = heads * head_dim, kv_heads * head_dim
        groups = heads // kv_heads
        cache_layers = cache.layers
        for index, layer in enumerate(inner._modules["layers"]._modules.values()):
            parts = layer._modules
            attention, mlp = parts["self_attn"]._modules, parts["mlp"]._modules
            x = _rms_norm(hidden, parts["input_layernorm"])
            qkv = _stacked(x, lora, kernel, attention["q_proj"], attention["k_proj"], attention["v_proj"])
            # One token per row, so [B, 1, heads * head_dim] is already [B, heads, 1, head_dim] in memory.
            qk = qkv[..., : query_width + key_width].view(batch, heads + kv_heads, 1, head_dim)
            qk = qk * cos + qk.roll(half, dims=-1) * sin
            keys, values = cache_layers[index].update(
                qk[:, heads:], qkv[..., query_width + key_width :].view(batch, kv_heads, 1, head_dim)
            )
            # Each key/value head's group of query heads as that head's queries, as transformers packs them
            # for one token with a mask: no copy of the cache, and faster than SDPA's enable_gqa here.
            queries = qk[:, :heads].reshape(batch, kv_heads, groups, head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=self.scaling)
            hidden = hidden + _linear(attention["o_proj"], attended.view(batch, 1, query_width), lora, kernel)
            x = _rms_norm(hidden, parts["post_attention_layernorm"])
            gate_up = _stacked(x, lora, kernel, mlp["gate_proj"], mlp["up_proj"])
            width = gate_up.shape[-1] // 2
            gate = gate_up[..., :width]
            activated = F.silu(gate) if self.silu else mlp["act_fn"](gate)
            hidden = hidden + _linear(mlp["down_proj"], activated * gate_up[..., width:], lora, kernel)
        hidden = _rms_norm(hidden, inner.norm)
        head = self.model.lm_head
        if kernel is not None and _plain_fp32(head):
            return _native_linear(kernel, head, hidden)[:, -1, :]
        return head(hidden)[:, -1, :]


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), norm._parameters["weight"], norm.variance_epsilon)


def _unwrapped(module: nn.Module, lora: BatchedLora | None) -> tuple[nn.Module, nn.Module | None]:
    """(the layer to run, the LoRA layer whose delta ``lora`` adds afterwards, or None)."""
    if lora is not None and type(module) is LoraLinear and lora.direct(module):
        return module._modules["base_layer"], module
    return module, None


def _plain_fp32(module: nn.Module) -> bool:
    """A bias-free CPU fp32 ``nn.Linear`` with contiguous weights: what ``linear_rows`` reads."""
    if type(module) is not nn.Linear or module._parameters["bias"] is not None:
        return False
    weight = module._parameters["weight"]
    return weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.is_contiguous()


def _native_linear(kernel, module: nn.Linear, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``module(x)`` for a decode step's [rows, 1, in] through the extension's ``linear_rows``, into ``out``."""
    if out is None:
        out = x.new_empty(x.shape[0], 1, module.out_features)
    kernel.linear_rows(x if x.stride(-1) == 1 else x.contiguous(), module._parameters["weight"], out)
    return out


def _linear(module: nn.Module, x: torch.Tensor, lora: BatchedLora | None, kernel=None) -> torch.Tensor:
    """``module(x)``; a 4-bit layer's product directly, skipping its forward's checks; a plain fp32 layer's
    through ``kernel`` where given."""
    module, adapted = _unwrapped(module, lora)
    rows = x.shape[0]
    out = None
    if kernel is not None and _plain_fp32(module):
        out = _native_linear(kernel, module, x)
    elif type(module) is Q4DecodeLinear and rows <= MAX_Q4_ROWS and module._parameters.get("bias") is None:
        weight, scales = module._buffers["q4_weight"], module._buffers["q4_scales_and_zeros"]
        if weight is not None:  # None: a member of a Q4Siblings stack
            out = torch._weight_int4pack_mm_for_cpu(x.view(rows, -1).to(torch.bfloat16), weight, GROUP_SIZE, scales)
            out = out.to(x.dtype).view(rows, 1, -1)
    if out is None:
        out = module(x)
    return out if adapted is None else lora.add_delta(adapted, x, out)


def _stacked(x: torch.Tensor, lora: BatchedLora | None, kernel, *modules: nn.Module) -> torch.Tensor:
    """The modules' outputs for ``x`` side by side: one product when their base layers are one Q4Siblings
    stack, each product straight into its part through ``kernel`` where given, and each LoRA delta then added in
    place to its part."""
    pairs = [_unwrapped(module, lora) for module in modules]
    bases = [base for base, _ in pairs]
    rows, first = x.shape[0], bases[0]
    out = None
    if type(first) is Q4DecodeLinear:
        stack = first.siblings
        if stack is not None and stack.bias_free and stack.serves(rows) and bases == stack.members:
            out = stack.product(x, rows).view(rows, 1, -1)
    if out is None and kernel is not None and all(_plain_fp32(base) for base in bases):
        # Each product straight into its part of the side-by-side output: no concatenation.
        out = x.new_empty(rows, 1, sum(base.out_features for base in bases))
        start = 0
        for base in bases:
            _native_linear(kernel, base, x, out[..., start : start + base.out_features])
            start += base.out_features
    if out is None:
        out = torch.cat([base(x) for base in bases], dim=-1)
    adapted, offsets, start = [], [], 0
    for base, layer in pairs:
        if layer is not None:
            adapted.append(layer)
            offsets.append(start)
        start += base.out_features
    if adapted:
        lora.add_deltas(adapted, x, out, tuple(offsets))
    return out
