"""Generation: the local continuous-batching engine with LoRA adapters, and the backends routers call."""

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


def __getattr__(name: str):
    if name == "Engine":  # torch loads with the first engine, not with the API server
        from openft.serving.engine import Engine

        return Engine
    raise AttributeError(name)
