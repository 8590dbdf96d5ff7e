"""Which weights the serving engines' decode steps read: ``OPENFT_SERVING_DECODE_WEIGHTS``.

``fp32`` (the default) serves the weights as loaded. ``q4`` gives each linear layer of the decoder blocks a
4-bit Q4_1 copy for decode steps of small batches and, where the CPU has native bf16, a bf16 copy for bigger
passes, and the output layer a bf16 copy for single-row steps (serving/q4_linear.py): exact Q4_1 weights for
the bundled model, whose GGUF stores them so, lossy for others; about 1.65x the fp32 model's memory.
``OPENFT_SERVING_NATIVE_DECODE`` (``on`` by default) runs single-row decode steps, fp32 or ``q4``, as one
compiled call (serving/native_decode.py). Importing this module does not import torch, so the API process
can check the settings at start.
"""

from __future__ import annotations

import os
from typing import Any

DECODE_WEIGHTS = ("fp32", "q4")


def decode_weights_setting() -> str:
    """``OPENFT_SERVING_DECODE_WEIGHTS``: ``fp32`` (default) or ``q4``; anything else is a ValueError naming it."""
    raw = (os.environ.get("OPENFT_SERVING_DECODE_WEIGHTS") or "fp32").strip().lower()
    if raw not in DECODE_WEIGHTS:
        raise ValueError(f"OPENFT_SERVING_DECODE_WEIGHTS must be one of {', '.join(DECODE_WEIGHTS)}, got {raw!r}")
    return raw


def apply_decode_weights(model: Any, mode: str | None = None) -> Any:
    """The engine's model with the decode weights ``mode`` (default: the setting) asks for; ``fp32``: unchanged."""
    if (mode or decode_weights_setting()) == "q4":
        from openft.serving.q4_linear import use_q4_decode_weights  # torch: only once a model is loaded

        use_q4_decode_weights(model)
    return model


def native_decode_enabled() -> bool:
    """``OPENFT_SERVING_NATIVE_DECODE``: ``on`` (default) or ``off``; anything else is a ValueError naming it."""
    raw = (os.environ.get("OPENFT_SERVING_NATIVE_DECODE") or "on").strip().lower()
    if raw not in ("on", "off"):
        raise ValueError(f"OPENFT_SERVING_NATIVE_DECODE must be on or off, got {raw!r}")
    return raw == "on"
