"""LoRA layers add their update to the base layer's output in one product, for CPU training.

PEFT computes ``result + lora_B(lora_A(dropout(x))) * scaling``. The ``lora_B`` product writes an
output-sized tensor, the scaling reads it and writes another, the sum reads both and writes a third, and
backward scales the output-sized gradient once more. On the CPU these passes run at memory speed, not at
the matrix unit's: for a gate or up projection of the bundled model at 1,190 tokens, 1.0 ms for the rank-16
product (0.13 ms when its output stays in cache), 0.65 ms for the scaling, 1.9 ms for the sum, every layer
and step. ``torch.addmm(result, h, lora_B^T, alpha=scaling)`` is the same sum as one product that reads
``result`` and writes its output once, and its backward folds the scaling into the rank-sized products.

The numbers differ from PEFT's only in rounding: addmm rounds the sum once, PEFT three times (in bf16 that
is the last of 8 significant bits; in fp32, at most an ulp). With openft's LoRA dropout, its 1 / (1 - p)
joins ``alpha`` too, instead of multiplying the layer's whole input forward and its gradient backward.
Layers this does not describe (DoRA and other variants, LoRA bias, several active adapters, merged or
disabled adapters, PEFT's ``adapter_names`` batches, mixed dtypes without autocast) run PEFT's forward
unchanged.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from openft.models.cpu import runs_on_cpu
from openft.training.fast_dropout import FastLoraDropout


def use_fused_lora_add(model: nn.Module) -> int:
    """Give each plain PEFT LoRA ``Linear`` of a CPU model the fused forward; returns how many (0 off the CPU)."""
    if not runs_on_cpu(model):
        return 0
    count = 0
    for module in model.modules():
        if type(module) is LoraLinear and not module.fan_in_fan_out:
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


def _plain_adapter(layer: LoraLinear, args: tuple, kwargs: dict[str, Any]) -> str | None:
    """The one active adapter when PEFT's forward would be ``result + lora_B(lora_A(dropout(x))) * scaling``."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or layer.lora_B[name].bias is not None:
        return None
    return name


def _fused_forward(self: LoraLinear, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = _plain_adapter(self, args, kwargs)
    if name is None:
        return LoraLinear.forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    dropout, lora_input = self.lora_dropout[name], self._cast_input_dtype(x, lora_a.weight.dtype)
    weight_b = lora_b.weight
    if not torch.is_autocast_enabled(result.device.type) and not result.dtype == lora_input.dtype == weight_b.dtype:
        return (result + lora_b(lora_a(dropout(lora_input))) * self.scaling[name]).to(result.dtype)  # PEFT's sum
    # Dropout's 1 / (1 - p) joins the scaling: B A (x * keep) * scaling / (1 - p) is PEFT's B A (x * keep / (1 - p))
    # * scaling, without an input-sized multiply forward and backward (fast_dropout.py).
    dropped, dropout_scale = (
        dropout.unscaled(lora_input) if isinstance(dropout, FastLoraDropout) else (dropout(lora_input), 1.0)
    )
    hidden = lora_a(dropped)
    summed = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        hidden.reshape(-1, hidden.shape[-1]),
        weight_b.t(),
        alpha=self.scaling[name] * dropout_scale,
    )
    return summed.view(result.shape).to(result.dtype)
