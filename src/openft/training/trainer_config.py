"""Everything one training run needs, as plain data the worker can build and pass to a child process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from openft.training.hyperparameters import ResolvedHyperparameters


@dataclass
class TrainerRunConfig:
    """Configuration of `run_training`. Each field's docstring is its help text."""

    base_model: str
    """A local Hugging Face folder (model + tokenizer), or a registry name that `materialize` turns into one."""

    training_file: str
    """Path of the validated training JSONL (chat, legacy prompt/completion, or DPO rows)."""

    output_dir: str
    """Where checkpoints (`checkpoint-<step>/`), the final model (`final/`) and `tensorboard/` are written."""

    hyperparameters: ResolvedHyperparameters
    """Concrete numbers from `resolve_hyperparameters`; nothing here is "auto"."""

    method_type: Literal["supervised", "dpo"] = "supervised"
    """"supervised" trains on assistant tokens; "dpo" trains on preferred vs non-preferred answers."""

    validation_file: str | None = None
    """Optional validation JSONL in the same format; evaluated every `eval_every_steps` or each epoch."""

    seed: int = 42
    """Seeds data order, adapter initialisation and dropout: the same seed and data give the same losses."""

    resume_from_checkpoint: str | None = None
    """A `checkpoint-<step>` folder of an earlier run of the same job; optimizer and scheduler continue."""

    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Trackers: "tensorboard" (written to output_dir/tensorboard), and "wandb" when installed."""

    eval_every_steps: int | None = None
    """Evaluate the validation file every N steps; None evaluates at the end of each epoch."""

    max_micro_batch_size: int = 8
    """Largest batch run in one forward pass; bigger batch sizes use gradient accumulation (same result)."""

    save_total_limit: int = 3
    """Checkpoints kept on disk (the newest ones); OpenAI keeps the last 3 epochs."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 20-30% slower."""

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    @property
    def final_dir(self) -> Path:
        return self.output_path / "final"

    @property
    def tensorboard_dir(self) -> Path:
        return self.output_path / "tensorboard"
