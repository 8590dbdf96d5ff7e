"""What the CPU runs fast, for choosing a precision (training autocast, serving's bf16 prefill), and what tells
one kind of CPU from another, for naming native code built with -march=native."""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run several times faster than fp32 (without them, far slower)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def runs_on_cpu(model: torch.nn.Module) -> bool:
    """Whether ``model``'s weights are on the CPU (the CPU-only training fast paths check this before installing)."""
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu"


def cpu_flags() -> str:
    """/proc/cpuinfo's flags line ("" where there is none): -march=native code runs only on the kind of CPU it
    was built on, and a shared cache directory may serve several kinds, so cached builds are named by it."""
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
