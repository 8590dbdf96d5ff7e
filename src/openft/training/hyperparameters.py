"""Hyperparameter rules: validate what a user asked for, then resolve every "auto" into a number.

OpenAI's names (`n_epochs`, `batch_size`, `learning_rate_multiplier`, DPO `beta`, reinforcement's
`eval_interval`, `eval_samples`, `compute_multiplier`, `reasoning_effort`) keep OpenAI's ranges; openft adds
`lora_rank`, `lora_alpha`, `lora_dropout`, `max_seq_length`, `packing`, `batch_size_policy` and, for reinforcement,
`max_completion_length` and `temperature`.
Everything here is a pure function so the jobs API can answer 400 before a job is queued
and the trainer resolves the same numbers the API showed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

AUTO = "auto"

# OpenAI's cookbook epoch rule.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

# Auto batch size: about 0.2% of the examples, clamped, so small sets still get many optimizer steps.
AUTO_BATCH_FRACTION = 0.002
MIN_AUTO_BATCH_SIZE = 1
MAX_AUTO_BATCH_SIZE = 32
# openft's `batch_size_policy: "throughput"`: an auto batch size of at least the micro-batch a forward pass runs
# well (TrainerRunConfig.max_micro_batch_size), with Adam's square-root learning-rate scaling. Not OpenAI's rule.
BATCH_SIZE_POLICIES = ("openai", "throughput")
THROUGHPUT_BATCH_SIZE = 8

# Base learning rates that `learning_rate_multiplier` scales. LoRA adapters start at zero and need a larger
# step than full fine-tuning; DPO moves a model that already works, so it uses a tenth of the SFT rate.
BASE_LEARNING_RATES: dict[tuple[str, bool], float] = {
    ("supervised", True): 2e-4,  # (method, uses LoRA)
    ("supervised", False): 2e-5,
    ("dpo", True): 2e-5,
    ("dpo", False): 2e-6,
    # GRPO's updates follow its own samples, so it steps more carefully than SFT (TRL's full-model default: 1e-6).
    ("reinforcement", True): 2e-5,
    ("reinforcement", False): 1e-6,
}

DEFAULT_BETA = 0.1
DEFAULT_LORA_RANK = 16
DEFAULT_LORA_DROPOUT = 0.05
MAX_AUTO_SEQ_LENGTH = 4096  # longer rows are rare in chat data and cost quadratic attention memory

METHOD_TYPES = ("supervised", "dpo", "reinforcement")

# Reinforcement: `compute_multiplier` scales how many answers GRPO samples per prompt (its group size).
GENERATIONS_PER_COMPUTE = 4  # compute_multiplier 1 ("auto") -> 4 answers per prompt
MIN_GENERATIONS, MAX_GENERATIONS = 2, 64  # GRPO needs two answers to compare; more is rarely worth it on one host
DEFAULT_MAX_COMPLETION_LENGTH = 256
DEFAULT_EVAL_SAMPLES = 1
# GRPO samples at temperature 1 unless told; a small model's answers at 1 are often noise with no reward to compare
DEFAULT_RFT_TEMPERATURE = 1.0
REASONING_EFFORTS = ("default", "low", "medium", "high")

# name -> (kind, minimum, maximum, minimum is exclusive)
_NUMERIC_RANGES: dict[str, tuple[type, float, float, bool]] = {
    "n_epochs": (int, 1, 50, False),
    "batch_size": (int, 1, 256, False),
    "learning_rate_multiplier": (float, 0, 10, True),
    "beta": (float, 0, 2, True),
    "lora_rank": (int, 0, 256, False),
    "lora_alpha": (float, 0, 1024, True),
    "lora_dropout": (float, 0, 0.9, False),
    "max_seq_length": (int, 16, 131_072, False),
    "eval_interval": (int, 1, 1_000_000, False),
    "eval_samples": (int, 1, 16, False),
    "compute_multiplier": (float, 0.00001, 10, True),
    "max_completion_length": (int, 1, 131_072, False),
    "temperature": (float, 0, 2, True),
}
_SHARED_NAMES = (
    "n_epochs",
    "batch_size",
    "learning_rate_multiplier",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "max_seq_length",
    "packing",
)
_BATCH_POLICY_METHODS = ("supervised", "dpo")  # GRPO's batch is generated answers, not the training file
ALLOWED_NAMES: dict[str, tuple[str, ...]] = {
    "supervised": (*_SHARED_NAMES, "batch_size_policy"),
    "dpo": (*_SHARED_NAMES, "beta", "batch_size_policy"),
    # no `packing`: GRPO batches prompts it generates from, there is nothing to pack
    "reinforcement": (
        *(name for name in _SHARED_NAMES if name != "packing"),
        "eval_interval", "eval_samples", "compute_multiplier", "reasoning_effort", "max_completion_length",
        "temperature",
    ),
}


@dataclass(frozen=True)
class ResolvedHyperparameters:
    """Concrete numbers the trainer uses; `to_job_dict()` is what the job object echoes once running."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    max_seq_length: int
    packing: bool
    beta: float | None = None
    # reinforcement only (None otherwise)
    num_generations: int | None = None
    max_completion_length: int | None = None
    eval_interval: int | None = None
    eval_samples: int | None = None
    compute_multiplier: float | None = None
    temperature: float | None = None  # GRPO's sampling temperature (openft extension)
    batch_size_policy: str | None = None  # only "throughput" is echoed: "openai" is what OpenAI's jobs do

    @property
    def uses_lora(self) -> bool:
        return self.lora_rank > 0

    def to_job_dict(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


def default_n_epochs(n_examples: int) -> int:
    """OpenAI's rule: aim for about 3 epochs, but at least ~100 and at most ~25,000 example visits."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def default_batch_size(n_examples: int) -> int:
    """About 0.2% of the training examples, clamped to 1..32 (1 below 750 examples, 32 from 16,000)."""
    return max(MIN_AUTO_BATCH_SIZE, min(MAX_AUTO_BATCH_SIZE, round(n_examples * AUTO_BATCH_FRACTION)))


def throughput_batch_size(n_examples: int) -> int:
    """`batch_size_policy: "throughput"`: OpenAI's auto batch size, raised to a full micro-batch (never above
    the number of examples)."""
    return max(default_batch_size(n_examples), min(THROUGHPUT_BATCH_SIZE, max(1, n_examples)))


def base_learning_rate(method_type: str, uses_lora: bool) -> float:
    return BASE_LEARNING_RATES[(method_type, uses_lora)]


def default_max_seq_length(context_length: int) -> int:
    return min(context_length, MAX_AUTO_SEQ_LENGTH)


def num_generations(compute_multiplier: float) -> int:
    """GRPO's group size for OpenAI's `compute_multiplier`: 4 answers per prompt at 1.0, clamped to 2..64."""
    return max(MIN_GENERATIONS, min(MAX_GENERATIONS, round(GENERATIONS_PER_COMPUTE * compute_multiplier)))


def _is_auto(value: Any) -> bool:
    return value is None or value == AUTO


def resolve_hyperparameters(
    method_type: str,
    hyperparameters: dict[str, Any] | None,
    *,
    n_train_examples: int,
    context_length: int,
) -> ResolvedHyperparameters:
    """Turn validated (possibly "auto") hyperparameters into numbers.

    Call `validate_hyperparameters` first; this function trusts the ranges.
    `context_length` is the base model's context; `max_seq_length` may not exceed it.
    """
    if method_type not in METHOD_TYPES:
        raise ValueError(f"unsupported method type {method_type!r}")
    given = dict(hyperparameters or {})

    def pick(name: str, default: Any) -> Any:
        value = given.get(name)
        return default if _is_auto(value) else value

    lora_rank = int(pick("lora_rank", DEFAULT_LORA_RANK))
    multiplier = float(pick("learning_rate_multiplier", 1.0))
    max_seq_length = min(int(pick("max_seq_length", default_max_seq_length(context_length))), context_length)
    batch_size = int(pick("batch_size", default_batch_size(n_train_examples)))
    policy = given.get("batch_size_policy") if method_type in _BATCH_POLICY_METHODS else None
    learning_rate = multiplier * base_learning_rate(method_type, lora_rank > 0)
    if policy == "throughput" and _is_auto(given.get("batch_size")):
        batch_size = throughput_batch_size(n_train_examples)
        if _is_auto(given.get("learning_rate_multiplier")):
            # Adam's square-root rule (Malladi et al., 2022): k times the batch, sqrt(k) times the step size.
            learning_rate *= math.sqrt(batch_size / default_batch_size(n_train_examples))
    rft: dict[str, Any] = {}
    if method_type == "reinforcement":
        compute = float(pick("compute_multiplier", 1.0))
        rft = {
            "compute_multiplier": compute,
            "num_generations": num_generations(compute),
            "max_completion_length": int(pick("max_completion_length", DEFAULT_MAX_COMPLETION_LENGTH)),
            # auto: validate once per epoch, as supervised jobs do
            "eval_interval": int(pick("eval_interval", max(1, math.ceil(n_train_examples / batch_size)))),
            "eval_samples": int(pick("eval_samples", DEFAULT_EVAL_SAMPLES)),
            "temperature": float(pick("temperature", DEFAULT_RFT_TEMPERATURE)),
        }
    return ResolvedHyperparameters(
        n_epochs=int(pick("n_epochs", default_n_epochs(n_train_examples))),
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        lora_alpha=float(pick("lora_alpha", 2 * lora_rank)) if lora_rank > 0 else 0.0,
        lora_dropout=float(pick("lora_dropout", DEFAULT_LORA_DROPOUT)) if lora_rank > 0 else 0.0,
        max_seq_length=max_seq_length,
        packing=bool(pick("packing", True)) and method_type != "reinforcement",
        beta=float(pick("beta", DEFAULT_BETA)) if method_type == "dpo" else None,
        batch_size_policy="throughput" if policy == "throughput" else None,
        **rft,
    )


def _check_number(name: str, value: Any) -> str | None:
    kind, low, high, low_exclusive = _NUMERIC_RANGES[name]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    # Integers are compared as integers: float() of a 400-digit integer overflows.
    is_whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if not is_number or (kind is int and not is_whole) or not finite:
        expected = "an integer" if kind is int else "a number"
        return f'`{name}` must be {expected} or "auto", got {value!r}.'
    low_ok = value > low if low_exclusive else value >= low
    if not low_ok or value > high:
        low_text = f"greater than {low:g}" if low_exclusive else f"at least {low:g}"
        return f"`{name}` must be {low_text} and at most {high:g}, got {value!r}."
    return None


def validate_hyperparameters(
    method: dict[str, Any] | None, *, context_length: int | None = None, param_prefix: str = "method"
) -> list[tuple[str, str]]:
    """Check a job's `method` object; return `(param path, message)` for every problem, empty when valid.

    `method` looks like `{"type": "supervised", "supervised": {"hyperparameters": {...}}}`. A missing method
    means supervised with every hyperparameter "auto". Param paths read like
    `method.supervised.hyperparameters.batch_size`, ready for the OpenAI error's `param`.
    """
    if method is None:
        return []
    if not isinstance(method, dict):
        return [(param_prefix, "`method` must be an object.")]
    method_type = method.get("type", "supervised")
    if method_type not in METHOD_TYPES:
        allowed = ", ".join(f'"{name}"' for name in METHOD_TYPES)
        return [(f"{param_prefix}.type", f"`method.type` must be one of {allowed}, got {method_type!r}.")]
    section = method.get(method_type) or {}
    section_path = f"{param_prefix}.{method_type}"
    if not isinstance(section, dict):
        return [(section_path, f"`method.{method_type}` must be an object.")]
    hyperparameters = section.get("hyperparameters") or {}
    hp_path = f"{section_path}.hyperparameters"
    if not isinstance(hyperparameters, dict):
        return [(hp_path, "`hyperparameters` must be an object.")]

    problems: list[tuple[str, str]] = []
    allowed_names = ALLOWED_NAMES[method_type]
    for name, value in hyperparameters.items():
        path = f"{hp_path}.{name}"
        if name not in allowed_names:
            problems.append((path, f"Unknown hyperparameter `{name}` for method `{method_type}`."))
        elif _is_auto(value):
            continue
        elif name == "reasoning_effort":
            if value not in REASONING_EFFORTS:
                problems.append((path, f"`reasoning_effort` must be one of {', '.join(REASONING_EFFORTS)}, got "
                                       f"{value!r}."))
            elif value != "default":
                problems.append((path, f"`reasoning_effort` {value!r} needs a reasoning model, and the base models "
                                       "openft trains do not reason: send \"default\" or leave it out."))
        elif name == "batch_size_policy":
            if value not in BATCH_SIZE_POLICIES:
                problems.append((path, f'`batch_size_policy` must be "openai" or "throughput", got {value!r}.'))
        elif name == "packing":
            if not isinstance(value, bool):
                problems.append((path, f'`packing` must be true, false or "auto", got {value!r}.'))
        elif message := _check_number(name, value):
            problems.append((path, message))
        elif name == "max_seq_length" and context_length is not None and value > context_length:
            problems.append(
                (path, f"`max_seq_length` ({value}) exceeds the base model's context length ({context_length}).")
            )
    lora_rank = hyperparameters.get("lora_rank")
    if lora_rank == 0 and any(not _is_auto(hyperparameters.get(n)) for n in ("lora_alpha", "lora_dropout")):
        problems.append((f"{hp_path}.lora_rank", "`lora_alpha` and `lora_dropout` need `lora_rank` > 0."))
    return problems
