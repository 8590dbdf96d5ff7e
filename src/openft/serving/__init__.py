"""Generation: the local continuous-batching engine with LoRA adapters, and the backends routers call."""

from openft.serving.engine import Engine
from openft.serving.types import (
    AdapterNotFound,
    Completion,
    EngineOverloaded,
    GenerationRequest,
    TokenEvent,
    TopLogprob,
    Usage,
)

__all__ = [
    "AdapterNotFound",
    "Completion",
    "Engine",
    "EngineOverloaded",
    "GenerationRequest",
    "TokenEvent",
    "TopLogprob",
    "Usage",
]
