"""Llama-family RMSNorm with a closed-form backward, for CPU training.

transformers' ``LlamaRMSNorm`` is eight tensor operations (cast to fp32, square, mean, add, rsqrt, multiply,
cast back, weight multiply) and autograd differentiates each of them, about ten more passes over the
activations: on the CPU, where these run at memory speed, 3.9-5.3 ms forward and backward for 1,200 bf16
tokens at the bundled model's width, and a training step runs 61 norms. The fast forward here is PyTorch's
fused kernel (``aten::_fused_rms_norm``, which also returns the reciprocal RMS) followed by the same weight
multiply: the same numbers bit for bit. Its backward is the derivative written out, in fp32:
``dx = r * (g' - n * mean(g' * n))`` with ``n = x * r`` the normalised input and ``g' = g * weight``, in four
passes: 2.8 against 5.3 ms for that input (1.8 against 5.0 in fp32). transformers rounds ``g * weight`` to
bf16 before going on in fp32; this keeps it in fp32, so bf16 input gradients differ from transformers' in the
last bit for about a quarter of the elements (fp32: within an ulp).
"""

from __future__ import annotations

import types

import torch
from torch import nn

from openft.models.cpu import runs_on_cpu


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # transformers' ops are outside autocast's lists too
            normalized, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], None, eps)
            output = weight * normalized
        ctx.save_for_backward(x, rstd, weight, normalized if weight.requires_grad else None)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight, normalized = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            scaled = torch.mul(grad, weight.float())  # fp32
            n = x.float().mul_(rstd)
            mean = torch.linalg.vecdot(scaled, n).unsqueeze(-1).div_(x.shape[-1])
            grad_x = torch.addcmul(scaled, n, mean, value=-1).mul_(rstd).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normalized).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        return grad_x, grad_weight, None


def _fast_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return _RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


def _norm_classes() -> tuple[type, ...]:
    """RMSNorm classes whose forward is LlamaRMSNorm's: fp32 normalisation, cast back, then ``weight *``."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.mistral.modeling_mistral import MistralRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    return (LlamaRMSNorm, MistralRMSNorm, Qwen2RMSNorm)


def use_fast_rms_norm(model: nn.Module) -> int:
    """Give each Llama-style RMSNorm of a CPU model the fused forward and closed-form backward; returns how many
    (0 off the CPU, where PyTorch's CUDA kernels and compilers already fuse the norm)."""
    if not runs_on_cpu(model):
        return 0
    classes = _norm_classes()
    count = 0
    for module in model.modules():
        if type(module) in classes:
            module.forward = types.MethodType(_fast_forward, module)
            count += 1
    return count
