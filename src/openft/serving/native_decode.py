"""A single row's decode step as one native call (``OPENFT_SERVING_NATIVE_DECODE``, on by default).

One user's decode step reads every weight once for one row of arithmetic. In PyTorch it is also ~40 small
operators a layer (norms, casts, the rotation, cache writes, the activation, residual adds), each a few
microseconds of dispatch for a few hundred numbers of work, and the Python between them: with ``q4`` weights
on the bundled 135M model that was ~4 of a ~12 ms step. And for fp32 weights MKL's one-row product streams
them at about half the memory speed this machine reaches (16 against 34 GB/s on the 2-core AMD EPYC bench
machine). llama.cpp runs such a step as one compiled graph. ``native/decode_step.cpp`` does the same for the
decoder layers: the element-wise work as plain loops over the row, fp32 products as its own
matrix-vector loop split over the threads (the output layer too), and 4-bit products and attention through
the same ATen kernels the Python step calls (``_weight_int4pack_mm_for_cpu``, which takes bf16 inputs, and
``scaled_dot_product_attention``). The numbers match the Python step to float rounding (sums in another
order; SiLU's exponential from the C library): fp32 logits to ~1e-4, and with ``q4`` a last-bit difference
can round a bf16 input the other way, which moves logits by up to ~0.4 (q4 itself moves them by up to ~0.5
from fp32); tests/serving/test_native_decode.py holds them to it. The bundled model, one user, 2 cores:
fp32 39.5 -> 16.6 ms a step, ``q4`` 8.0 -> 5.1 ms, the same greedy tokens (docs/performance.md).

The same extension has ``lora_rows`` for decode steps of several rows on LoRA adapters (lora_batch.BatchedLora
calls it when the engine hands it this module): each adapter's rows times that adapter's own A and B, which
are read once a step, where PyTorch's masked product multiplies every row by every adapter in two MKL calls
whose fixed cost is most of their time at these sizes. 16 rows on 4 rank-16 adapters, ``q4``: the step's
adapter work 10-14 -> ~4 ms (1.57-1.67x -> 1.20-1.28x the base step), and ~3 ms since decode steps multiply q4
engines' bf16 copies with AVX512-BF16's vdpbf16ps where the CPU has it, as prefill passes on two or more
adapters do (lora_batch.BatchedLora._prefill_kernel_takes): 16 rows x 37 tokens on 4 adapters, 72-169 -> 36-52
ms. fp32 engines' prefill passes on two or more adapters take its fp32 loops (63-129 -> 36-72 ms).
It is built with OpenMP so that ``at::parallel_for`` really splits work over PyTorch's threads (compiled
without it, it runs on one).

PyTorch's C++ extension loader compiles it (a C++ compiler and ninja are needed; 35-40 s on an idle 2-core
machine) into its cache (``TORCH_EXTENSIONS_DIR``, by default ~/.cache/torch_extensions) the first time a
machine starts an engine, before the engine is ready; later starts load the cached build in well under a
second. Where it cannot be built (no compiler), the engine logs why and serves through the Python step.
``OPENFT_SERVING_NATIVE_DECODE=off`` keeps the Python step always.

It covers the single-row case that per-operator cost and MKL's one-row product dominate: one row, no
padding, the base weights or one LoRA adapter (``register_adapter`` hands the native decoder views into
lora_batch.BatchedLora's stacks once per adapter, and each LoRA layer's ``scale * (x @ A) @ B`` is added to its
projection's output as the Python step's ``add_delta`` does), every decoder
layer's projections either plain fp32 ``nn.Linear`` without biases or ``q4``'s stacks (q4_linear.Q4Siblings
for q/k/v and gate/up, 4-bit o/down), SiLU, one RMSNorm epsilon, the cache's layers GrowingLayers. Anything
else, and every batch of more rows, runs the Python step (decode_step.py), which then takes its fp32 products
from the extension's ``linear_rows`` (each weight read once for all rows, where MKL's sgemm for few rows ran at
under half the speed) and its rows' adapter updates from ``lora_rows`` (below).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from openft.models.cpu import cpu_flags
from openft.serving.kv_batch import GrowingLayer
from openft.serving.q4_linear import GROUP_SIZE, Q4DecodeLinear

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "native" / "decode_step.cpp"
# -ffp-contract=off: a * b + c stays two roundings, as PyTorch's element-wise kernels compute it.
# -fopenmp: at::parallel_for splits work over PyTorch's OpenMP threads only in code compiled with OpenMP
# (without it, it runs on one thread); the extension then uses the libgomp PyTorch has loaded.
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_module = None
_error: str | None = None


def _build_name() -> str:
    """The cached build's name, from what makes a build differ: -march=native code is only valid on this kind
    of CPU (and a shared cache directory may serve several), and two openft versions on one machine must not
    rebuild over each other's copy."""
    identity = "\n".join([cpu_flags(), torch.__version__, " ".join(CFLAGS + LDFLAGS), SOURCE.read_text()])
    return f"openft_decode_step_{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def load_extension():
    """The compiled module, building it on first use; raises RuntimeError with the reason when it cannot be."""
    global _module, _error
    with _lock:
        if _module is None and _error is None:
            try:
                from torch.utils.cpp_extension import load

                log.info("building or loading the native decode step (the first build takes about a minute)")

                _module = load(
                    name=_build_name(), sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=LDFLAGS, verbose=False
                )
            except Exception as exc:  # no compiler, no ninja, a failed build: the Python step serves instead
                _error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        if _module is None:
            raise RuntimeError(f"the native decode step could not be built ({_error})")
        return _module


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)  # PEFT's LoraLinear keeps the original layer as base_layer


def _projections(layer: nn.Module) -> list[nn.Module]:
    attention, mlp = layer.self_attn, layer.mlp
    names = [(attention, "q_proj"), (attention, "k_proj"), (attention, "v_proj"), (attention, "o_proj")]
    names += [(mlp, "gate_proj"), (mlp, "up_proj"), (mlp, "down_proj")]
    return [_unwrap(getattr(parent, name)) for parent, name in names]


def _plain_fp32(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module) is nn.Linear and module.bias is None and weight.device.type == "cpu"
        and weight.dtype == torch.float32 and weight.is_contiguous()
    )  # fmt: skip


def _q4_layer(q, k, v, o, gate, up, down) -> bool:
    for members in ([q, k, v], [gate, up]):
        stack = getattr(members[0], "siblings", None)
        if type(members[0]) is not Q4DecodeLinear or stack is None or not stack.bias_free or stack.members != members:
            return False
    return all(type(m) is Q4DecodeLinear and m.bias is None and m.q4_weight is not None for m in (o, down))


def weights_kind(model: nn.Module) -> str | None:
    """ "fp32" or "q4" where every decoder layer's projections are what the native step reads (see the module
    docstring), else None."""
    layers = [_projections(layer) for layer in model.model.layers]
    if layers and all(all(_plain_fp32(m) for m in projections) for projections in layers):
        return "fp32"
    if layers and all(_q4_layer(*projections) for projections in layers):
        return "q4"
    return None


def build_decoder(model: nn.Module, heads: int, kv_heads: int, head_dim: int, scaling: float):
    """A native decoder over ``model``'s weights (shared, not copied), or raise RuntimeError."""
    kind = weights_kind(model)
    if kind is None:
        raise RuntimeError("the decoder layers' weights are neither plain fp32 nor 4-bit stacks")
    norm = model.model.norm
    epsilons = {norm.variance_epsilon}
    for layer in model.model.layers:
        epsilons |= {layer.input_layernorm.variance_epsilon, layer.post_attention_layernorm.variance_epsilon}
    if len(epsilons) != 1:
        raise RuntimeError("the native decode step needs one RMSNorm epsilon for the whole model")
    head = model.get_output_embeddings()
    # fp32: the output layer too (its product is the biggest of the step); q4 keeps its bf16 copy in Python.
    head_weight = head.weight.detach() if kind == "fp32" and _plain_fp32(head) else None
    module = load_extension()
    decoder = module.Decoder(norm.weight.detach(), head_weight, float(epsilons.pop()), heads, kv_heads, head_dim,
                             scaling, GROUP_SIZE)  # fmt: skip
    for layer in model.model.layers:
        norms = (layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach())
        q, k, v, o, gate, up, down = _projections(layer)
        if kind == "fp32":
            decoder.add_fp32_layer(*norms, [m.weight.detach() for m in (q, k, v, o, gate, up, down)])
        else:
            qkv, gate_up = q.siblings, gate.siblings
            packed = [qkv.packed, qkv.scales_and_zeros, o.q4_weight, o.q4_scales_and_zeros]
            packed += [gate_up.packed, gate_up.scales_and_zeros, down.q4_weight, down.q4_scales_and_zeros]
            widths = [sum(qkv.widths), o.out_features, sum(gate_up.widths), down.out_features]
            decoder.add_q4_layer(*norms, packed, widths)
    return decoder, head_weight is not None


# Each native projection (q/k/v, o, gate/up, down) and the modules whose outputs it holds side by side.
_PROJECTIONS = ((0, "self_attn", ("q_proj", "k_proj", "v_proj")), (1, "self_attn", ("o_proj",)),
                (2, "mlp", ("gate_proj", "up_proj")), (3, "mlp", ("down_proj",)))  # fmt: skip


def register_adapter(decoder, inner: nn.Module, lora, slot: int) -> bool:
    """Give ``decoder`` adapter ``slot``'s LoRA updates (views into ``lora``'s stacks) under the key ``slot``;
    False (nothing registered) where a LoRA layer is not in ``lora``'s batched state."""
    updates = []
    for index, layer in enumerate(inner._modules["layers"]._modules.values()):
        for projection, parent, names in _PROJECTIONS:
            modules, offset = layer._modules[parent]._modules, 0
            for name in names:
                module = modules[name]
                if isinstance(module, LoraLinear):
                    if not lora.direct(module):
                        return False
                    update = lora.slot_update(module, slot)
                    if update is not None:
                        updates.append((index, projection, *update, offset))
                offset += _unwrap(module).out_features
    if any(a.dtype != torch.float32 or b.dtype != torch.float32 for _, _, a, b, _, _ in updates):
        return False
    decoder.begin_adapter(slot)
    for index, projection, a, b, scale, offset in updates:
        decoder.add_adapter_delta(slot, index, projection, a, b, scale, offset)
    return True


def cache_room(cache_layers: list) -> tuple[list[torch.Tensor], list[torch.Tensor], int] | None:
    """Each layer's key and value buffer with room for one more position, and the length they hold; None
    where a layer is not a GrowingLayer or the layers disagree on the length."""
    keys, values, lengths = [], [], set()
    for layer in cache_layers:
        if type(layer) is not GrowingLayer or layer.keys is None or layer.keys.dim() != 4:
            return None  # not one of ours, or nothing prefilled yet
        lengths.add(layer.make_room(1))
        keys.append(layer._key_buffer)
        values.append(layer._value_buffer)
    if len(lengths) != 1:
        return None
    return keys, values, lengths.pop()
