"""Under autocast, LoRA layers take their input as it comes instead of casting it to fp32 first.

PEFT casts each LoRA layer's input to the adapter weights' dtype (fp32) before dropout and ``lora_A``. With
bf16 frozen weights under bf16 autocast the input is already bf16, and autocast casts it straight back to
bf16 for ``lora_A``'s product, so the round trip adds nothing but copies of the layer's whole input, forward
and backward, for each of the 210 adapted layers of the bundled model (the 64-conversation CPU bench:
345-372 -> 382-383 tokens/s, the same final loss to the last digit). The result is the same: dropout's
scaling rounds once to bf16 either way.

PEFT has a switch for it (``cast_input_dtype_enabled``, what ``peft.helpers.disable_input_dtype_casting``
sets). It must stay on without autocast, where an fp32 adapter cannot multiply a bf16 input; so a pre-hook on
the decoder, which runs inside the forward that accelerate wraps in autocast, sets it from the autocast state
at each forward pass.
"""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


def skip_lora_input_casts_under_autocast(model: nn.Module) -> int:
    """Install the pre-hook on ``model``'s decoder; returns the number of LoRA layers it governs (0: none)."""
    layers = [module for module in model.modules() if isinstance(module, BaseTunerLayer)]
    decoder = _decoder(model)
    if not layers or decoder is None:
        return 0
    state = {"casting": True}

    def match_autocast(module: nn.Module, args) -> None:
        device = next(module.parameters()).device.type
        casting = not torch.is_autocast_enabled(device)
        if casting != state["casting"]:
            for layer in layers:
                layer.cast_input_dtype_enabled = casting
            state["casting"] = casting

    decoder.register_forward_pre_hook(match_autocast)
    return len(layers)


def _decoder(model: nn.Module) -> nn.Module | None:
    """The transformer inside PEFT's and the causal-LM head's wrappers (called within their forward)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "model", None) if isinstance(getattr(base, "model", None), nn.Module) else None
