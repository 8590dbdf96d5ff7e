"""One fine-tuning run: tokenize, build TRL's SFTTrainer or DPOTrainer (LoRA by default), train, save.

`run_training` is what the worker calls inside the training child process. It reports through a
`Reporter`, honours cancel/pause between steps, and returns a `TrainingResult`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from openft.config import get_settings
from openft.models.cpu import cpu_has_native_bf16
from openft.store import artifacts
from openft.training.callbacks import Reporter, ReporterCallback
from openft.training.datasets import TokenizedData, tokenize_file
from openft.training.distributed import per_device_batch_size, world_size
from openft.training.fast_dropout import use_fast_lora_dropout
from openft.training.hyperparameters import ResolvedHyperparameters
from openft.training.lora_autocast import skip_lora_input_casts_under_autocast
from openft.training.lora_fused import use_fused_lora_add
from openft.training.rms_norm import use_fast_rms_norm
from openft.training.sft_loss import TrainedPositionsSFTTrainer
from openft.training.trainer_config import TrainerRunConfig
from openft.training.varlen_attention import register_varlen_attention

RunStatus = Literal["succeeded", "paused", "cancelled"]


@dataclass
class TrainingResult:
    """What a run produced. `trained_tokens` is billable: training tokens (capped at max_seq_length) x epochs."""

    status: RunStatus
    final_path: str | None  # output_dir/final when succeeded
    checkpoint_path: str | None  # the newest checkpoint; the one to resume from after a pause
    trained_tokens: int
    steps: int  # optimizer steps taken so far (global, across resumes)
    total_steps: int
    metrics_history: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- model and data ----------------------------------------------------------------------------------


def resolve_model_dir(base_model: str) -> Path:
    """A local folder as is; anything else is a registry name materialized into a local folder."""
    path = Path(base_model)
    if path.is_dir():
        return path
    from openft.models.registry import materialize

    return Path(materialize(base_model))


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:  # padding-free batches never use it; padded eval batches do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def use_bf16() -> bool:
    """Train under bf16 autocast? `OPENFT_TRAINING_PRECISION` decides; "auto" means where it is native."""
    precision = get_settings().training_precision
    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def load_model(model_dir: Path, frozen_bf16: bool = False) -> PreTrainedModel:
    """Trainable weights stay fp32 (the Trainer runs the forward under bf16 autocast where bf16 is fast).

    `frozen_bf16` stores the weights in bf16 instead, for LoRA runs under bf16 autocast: the base weights
    never change, so keeping them in the compute dtype saves a cast of every weight in every forward and
    backward pass and halves their memory; PEFT still keeps the adapter's own weights in fp32. The
    attention treats each example of a padding-free batch on its own (see varlen_attention).
    """
    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.bfloat16 if frozen_bf16 else torch.float32,
        attn_implementation=register_varlen_attention(),
    )


def lora_config(hparams: ResolvedHyperparameters) -> LoraConfig | None:
    """LoRA on every linear projection of the transformer blocks (not the LM head); None means full FT."""
    if not hparams.uses_lora:
        return None
    return LoraConfig(
        r=hparams.lora_rank,
        lora_alpha=hparams.lora_alpha,
        lora_dropout=hparams.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def micro_batching(batch_size: int, max_micro_batch_size: int) -> tuple[int, int]:
    """(examples per forward pass, gradient accumulation steps) whose product is exactly `batch_size`."""
    micro = max(d for d in range(1, min(batch_size, max_micro_batch_size) + 1) if batch_size % d == 0)
    return micro, batch_size // micro


def _report_to(requested: list[str]) -> tuple[list[str], bool]:
    """Trackers transformers should start itself, and whether we add TensorBoard with our own folder."""
    others = [name for name in requested if name != "tensorboard"]
    others = [name for name in others if name != "wandb" or importlib.util.find_spec("wandb") is not None]
    return others or ["none"], "tensorboard" in requested


class ArtifactPublishCallback(TrainerCallback):
    """Each checkpoint goes to the artifact store (store/artifacts.py) before the job records it; a no-op for
    the default local store, where the trainer writes it in the first place."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            artifacts.publish(Path(args.output_dir) / f"checkpoint-{state.global_step}", self.output_dir)


# --- trainers ----------------------------------------------------------------------------------------


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer fed with openft's own prompt/chosen/rejected ids, so DPO sees the exact serving template."""

    def _prepare_dataset(self, dataset: Dataset, processing_class, args, dataset_name: str) -> Dataset:
        return dataset


def _common_args(config: TrainerRunConfig, has_eval: bool) -> dict[str, Any]:
    hparams = config.hyperparameters
    # Under torchrun/accelerate each rank takes its share of the batch: the global batch is unchanged.
    micro, accumulation = micro_batching(per_device_batch_size(hparams.batch_size), config.max_micro_batch_size)
    report_to, _ = _report_to(config.report_to)
    bf16 = use_bf16()
    if has_eval and config.eval_every_steps:
        eval_args = {"eval_strategy": "steps", "eval_steps": config.eval_every_steps}
    else:
        eval_args = {"eval_strategy": "epoch" if has_eval else "no"}
    return {
        "output_dir": config.output_dir,
        "num_train_epochs": hparams.n_epochs,
        "per_device_train_batch_size": micro,
        "per_device_eval_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "learning_rate": hparams.learning_rate,
        "lr_scheduler_type": "linear",
        "logging_steps": 1,
        "save_strategy": "epoch",
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": report_to,
        "bf16": bf16,
        "fp16": False,
        # transformers refuses CPU bf16 unless told it is CPU, and only starts CPU DDP (gloo) when told so
        "use_cpu": (bf16 or world_size() > 1) and not torch.cuda.is_available(),
        "gradient_checkpointing": config.gradient_checkpointing,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
        "disable_tqdm": True,
        **eval_args,
    }


def _build_sft_trainer(config, model, tokenizer, train: TokenizedData, valid, callbacks) -> SFTTrainer:
    hparams = config.hyperparameters
    args = SFTConfig(
        **_common_args(config, valid is not None),
        # Rows are truncated already. Padding-free concatenates a batch's rows into one sequence whose
        # position_ids restart at each row, so attention never crosses rows and no pad token is computed.
        max_length=None,
        padding_free=hparams.packing,
        packing=False,
        dataset_kwargs={},
    )
    return TrainedPositionsSFTTrainer(
        model=model,
        args=args,
        train_dataset=train.dataset,
        eval_dataset=valid.dataset if valid is not None else None,
        processing_class=tokenizer,
        peft_config=lora_config(hparams),
        callbacks=callbacks,
    )


def _build_dpo_trainer(config, model, tokenizer, train: TokenizedData, valid, callbacks) -> DPOTrainer:
    hparams = config.hyperparameters
    args = DPOConfig(
        **_common_args(config, valid is not None),
        beta=hparams.beta if hparams.beta is not None else 0.1,
        max_length=hparams.max_seq_length,
        precompute_ref_log_probs=False,
    )
    return PretokenizedDPOTrainer(
        model=model,
        ref_model=None,  # LoRA: the adapter-disabled model is the reference; full FT: a frozen copy
        args=args,
        train_dataset=train.dataset,
        eval_dataset=valid.dataset if valid is not None else None,
        processing_class=tokenizer,
        peft_config=lora_config(hparams),
        callbacks=callbacks,
    )


# --- the run -----------------------------------------------------------------------------------------


def _newest_checkpoint(output_dir: Path) -> str | None:
    folders = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return str(max(folders, key=lambda p: int(p.name.split("-")[-1]))) if folders else None


def prepare_data(config: TrainerRunConfig, tokenizer) -> tuple[TokenizedData, TokenizedData | None]:
    """Tokenize the training (and validation) file; raises TrainingDataError before any model work."""
    max_len = config.hyperparameters.max_seq_length
    train = tokenize_file(config.training_file, tokenizer, max_len, config.method_type)
    valid = None
    if config.validation_file:
        valid = tokenize_file(config.validation_file, tokenizer, max_len, config.method_type, param="validation_file")
    return train, valid


@dataclass
class PreparedRun:
    """A trainer ready for `.train()`, with the pieces `run_training` needs afterwards."""

    trainer: SFTTrainer | DPOTrainer
    tokenizer: PreTrainedTokenizerBase
    progress: ReporterCallback
    train: TokenizedData
    valid: TokenizedData | None


def build_trainer(config: TrainerRunConfig, reporter: Reporter) -> PreparedRun:
    """Tokenize (raising `TrainingDataError` first), load the model and build the TRL trainer."""
    model_dir = resolve_model_dir(config.base_model)
    tokenizer = load_tokenizer(model_dir)
    train, valid = prepare_data(config, tokenizer)

    set_seed(config.seed)  # before the model exists: LoRA's initial weights come from this seed
    model = load_model(model_dir, frozen_bf16=config.hyperparameters.uses_lora and use_bf16())
    progress = ReporterCallback(reporter, config.hyperparameters.to_job_dict())
    callbacks: list[TrainerCallback] = [ArtifactPublishCallback(config.output_dir), progress]
    _, wants_tensorboard = _report_to(config.report_to)
    if wants_tensorboard:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(config.tensorboard_dir)
        callbacks.append(tensorboard)

    build = _build_dpo_trainer if config.method_type == "dpo" else _build_sft_trainer
    trainer = build(config, model, tokenizer, train, valid, callbacks)
    use_fast_lora_dropout(trainer.model)  # CPU only: PyTorch's dropout there was ~a quarter of a LoRA step
    skip_lora_input_casts_under_autocast(trainer.model)  # no fp32 round trip of every LoRA input
    use_fused_lora_add(trainer.model)  # CPU only: LoRA's update summed into the base output by one product
    use_fast_rms_norm(trainer.model)  # CPU only: the norm's eight ops and their backward, in a few passes
    trainer.remove_callback(PrinterCallback)  # the Reporter and TensorBoard carry the logs; keep stdout quiet
    return PreparedRun(trainer, tokenizer, progress, train, valid)


def run_training(config: TrainerRunConfig, reporter: Reporter) -> TrainingResult:
    """Train, reporting as it goes. Raises `TrainingDataError` for data that cannot be trained on."""
    run = build_trainer(config, reporter)
    trainer, progress = run.trainer, run.progress
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)

    if progress.stop_request == "cancel":
        status: RunStatus = "cancelled"
        final_path = None
    elif progress.stop_request == "pause":
        status, final_path = "paused", None
    else:
        status, final_path = "succeeded", str(config.final_dir)
        trainer.save_model(final_path)
        if trainer.is_world_process_zero():
            run.tokenizer.save_pretrained(final_path)
            artifacts.publish(final_path, config.output_dir)
    return TrainingResult(
        status=status,
        final_path=final_path,
        checkpoint_path=_newest_checkpoint(config.output_path),
        trained_tokens=run.train.stats.billable_tokens_per_epoch * config.hyperparameters.n_epochs,
        steps=trainer.state.global_step,
        total_steps=trainer.state.max_steps,
        metrics_history=progress.history,
        warnings=run.train.stats.warnings() + (run.valid.stats.warnings() if run.valid else []),
    )
