"""Reinforcement fine-tuning: TRL's GRPOTrainer with a LoRA adapter, rewarded by the job's grader.

Each step samples `num_generations` answers per prompt (OpenAI's `compute_multiplier`), grades every answer
with the job's grader (rft_reward.GraderReward), and moves the policy towards the answers that scored above
their group's mean. Every `eval_interval` steps and at the end, the validation file is answered (greedily, or
`eval_samples` sampled answers per row) and graded; the reporter records that as a run of the job's eval.

Prompts are rendered by openft's chat template (the one serving uses), so the model is trained on the text it
is later asked with. It reuses the supervised trainer's plumbing: the Reporter, checkpoints every
`eval_interval` steps (loadable adapters, served like SFT's), cancel and pause between steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from datasets import Dataset
from transformers import TrainerCallback, set_seed
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from openft.graders import Judge
from openft.models.chat_template import DEFAULT_SYSTEM_PROMPT, render_prompt, stop_token_ids
from openft.store import artifacts
from openft.training.callbacks import Reporter, ReporterCallback
from openft.training.datasets import TrainingDataError, read_jsonl
from openft.training.rft_metrics import step_metrics
from openft.training.rft_reward import GraderReward, RewardLedger
from openft.training.trainer import (
    ArtifactPublishCallback,
    RunStatus,
    TrainingResult,
    _common_args,
    _newest_checkpoint,
    _report_to,
    load_model,
    load_tokenizer,
    lora_config,
    micro_batching,
    resolve_model_dir,
    use_bf16,
)
from openft.training.trainer_config import TrainerRunConfig

VALIDATION_BATCH = 8


class ValidationSink(Protocol):
    def on_validation(self, step: int, samples: list[dict[str, Any]]) -> None:
        """The graded validation answers of one step: [{item, input, output_text, result (GradeResult)}]."""


@dataclass
class Prompt:
    line: int
    text: str  # rendered up to the assistant header
    messages: list[dict[str, Any]]
    item: dict[str, Any]  # the whole row: `{{item.<field>}}` in the grader
    n_tokens: int


def _default_system_prompt(base_model: str) -> str | None:
    try:
        from openft.models.registry import get_base_model

        return get_base_model(base_model).default_system_prompt
    except Exception:  # noqa: BLE001 - a folder given as the base model: SmolLM2's default
        return DEFAULT_SYSTEM_PROMPT


def read_prompts(path: str, tokenizer, config: TrainerRunConfig, param: str) -> tuple[list[Prompt], list[int]]:
    """RFT rows -> prompts, and the lines dropped because the prompt leaves no room for an answer."""
    hparams = config.hyperparameters
    room = hparams.max_seq_length - (hparams.max_completion_length or 0)
    system = _default_system_prompt(config.base_model)
    prompts, dropped = [], []
    for line, row in read_jsonl(path, param):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") not in ("user", "developer"):
            raise TrainingDataError("invalid_rft_row", f"Line {line} is not a reinforcement fine-tuning prompt: its "
                                    "messages must end with a user or developer message.", param)  # fmt: skip
        text = render_prompt(messages, row.get("tools"), default_system_prompt=system)
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n_tokens > room:
            dropped.append(line)
            continue
        prompts.append(Prompt(line, text, messages, row, n_tokens))
    if not prompts:
        raise TrainingDataError("no_trainable_prompts", f"No prompt of the {param} fits in max_seq_length="
                                f"{hparams.max_seq_length} with max_completion_length={hparams.max_completion_length}"
                                " tokens left for the answer.", param)  # fmt: skip
    return prompts, dropped


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that measures how long sampling and grading take, for the timing metrics."""

    sample_seconds = 0.0

    def _generate_and_score_completions(self, inputs):
        start = time.perf_counter()
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.sample_seconds += time.perf_counter() - start


def _generate(model, tokenizer, prompts: list[Prompt], hparams, samples: int) -> list[list[str]]:
    """`samples` answers to each prompt: greedy when one is asked for, else sampled at the job's temperature."""
    answers: list[list[str]] = []
    was_training = model.training
    model.eval()
    stops = stop_token_ids(tokenizer)
    try:
        for start in range(0, len(prompts), VALIDATION_BATCH):
            batch = prompts[start : start + VALIDATION_BATCH]
            encoded = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in batch]
            width = max(len(ids) for ids in encoded)
            pad = tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
            with torch.no_grad():
                output = model.generate(
                    input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                    max_new_tokens=hparams.max_completion_length, do_sample=samples > 1,
                    num_return_sequences=samples, eos_token_id=stops, pad_token_id=pad,
                    **({"temperature": _temperature(hparams), "top_p": 1.0} if samples > 1
                       else {"temperature": None, "top_p": None}),
                )  # fmt: skip
            texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
            answers.extend(texts[i * samples : (i + 1) * samples] for i in range(len(batch)))
    finally:
        model.train(was_training)
    return answers


class RFTCallback(ReporterCallback):
    """Turns GRPO's logs and the grader's ledger into OpenAI's RFT metric events, and runs validation."""

    def __init__(self, reporter: Reporter, resolved: dict[str, Any], reward: GraderReward, config: TrainerRunConfig,
                 valid: list[Prompt] | None, tokenizer) -> None:  # fmt: skip
        super().__init__(reporter, resolved)
        self.reward, self.config, self.valid, self.tokenizer = reward, config, valid, tokenizer
        self.trainer: TimedGRPOTrainer | None = None
        self.step_started = time.perf_counter()
        self.eval_seconds = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started, self.eval_seconds = time.perf_counter(), 0.0

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)  # cancel / pause first: no validation for a cancel
        interval = self.config.hyperparameters.eval_interval or 1
        due = state.global_step % interval == 0 or state.global_step >= state.max_steps
        # A pause still validates a due step: resuming starts after it, so its eval run would otherwise be lost.
        if self.valid and self.stop_request != "cancel" and due:
            started = time.perf_counter()
            self._validate(kwargs["model"], state.global_step)
            self.eval_seconds = time.perf_counter() - started

    def _validate(self, model, step: int) -> None:
        hparams = self.config.hyperparameters
        samples = hparams.eval_samples or 1
        graded = []
        for prompt, answers in zip(self.valid, _generate(model, self.tokenizer, self.valid, hparams, samples),
                                   strict=True):  # fmt: skip
            for text in answers:
                result = self.reward.score(text, prompt.item, "valid")
                graded.append({"item": prompt.item, "input": prompt.messages, "output_text": text, "result": result})
        sink = getattr(self.reporter, "on_validation", None)
        if sink is not None:
            sink(step, graded)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        if "train_runtime" in logs or "loss" not in logs:  # the end-of-training summary, or not a step
            return
        trainer = self.trainer
        sampling = (trainer.sample_seconds if trainer else 0.0) - self.reward.seconds
        full = time.perf_counter() - self.step_started
        timing = {"sampling": max(sampling, 0.0), "eval": self.eval_seconds,
                  "training": max(full - sampling - self.reward.seconds - self.eval_seconds, 0.0),
                  "full_iteration": full}  # fmt: skip
        if trainer:
            trainer.sample_seconds = 0.0
        self.reward.seconds = 0.0
        ledger = self.reward.ledger
        train, valid = ledger.drain("train"), ledger.drain("valid")
        metrics = step_metrics(ledger.parts, train, valid, timing, logs)
        if "train_reward_mean" not in metrics:
            return
        self._flush()
        self._pending_step, self._pending = state.global_step, metrics
        self._flush()

    def _last_metrics(self) -> dict[str, float]:
        """Checkpoint metrics are flat numbers (OpenAI's checkpoint `metrics` object)."""
        return {k: v for k, v in super()._last_metrics().items() if isinstance(v, int | float)}


def _temperature(hparams) -> float:
    """The sampling temperature: a job stored before `temperature` existed samples at 1, as it did then."""
    return getattr(hparams, "temperature", None) or 1.0


def _grpo_config(config: TrainerRunConfig) -> GRPOConfig:
    hparams = config.hyperparameters
    args = _common_args(config, has_eval=False)
    # One optimizer step = `batch_size` prompts x `num_generations` answers, generated together in one go.
    completions = hparams.batch_size * hparams.num_generations
    micro, accumulation = micro_batching(completions, config.max_micro_batch_size)
    args.update(per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
                save_strategy="steps", save_steps=hparams.eval_interval, eval_strategy="no")  # fmt: skip
    return GRPOConfig(
        **args,
        num_generations=hparams.num_generations,
        max_completion_length=hparams.max_completion_length,
        use_vllm=False,
        temperature=_temperature(hparams),
        beta=0.0,  # no reference model: LoRA starts at the base model and the clipped objective keeps it close
        log_completions=False,
        disable_dropout=True,
    )


def run_rft_training(config: TrainerRunConfig, reporter: Reporter, grader: dict[str, Any],
                     judge: Judge | None = None) -> TrainingResult:  # fmt: skip
    """Train with GRPO, reporting as it goes; `judge` answers model graders. Raises `TrainingDataError` for data
    that cannot be trained on."""
    hparams = config.hyperparameters
    model_dir = resolve_model_dir(config.base_model)
    tokenizer = load_tokenizer(model_dir)
    train, dropped = read_prompts(config.training_file, tokenizer, config, "training_file")
    valid = read_prompts(config.validation_file, tokenizer, config, "validation_file")[0] \
        if config.validation_file else None  # fmt: skip

    set_seed(config.seed)
    model = load_model(model_dir, frozen_bf16=hparams.uses_lora and use_bf16())
    ledger = RewardLedger(grader)
    reward = GraderReward(grader, [p.item for p in train], ledger, judge)
    progress = RFTCallback(reporter, hparams.to_job_dict(), reward, config, valid, tokenizer)
    callbacks: list[TrainerCallback] = [ArtifactPublishCallback(config.output_dir), progress]
    if _report_to(config.report_to)[1]:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(config.tensorboard_dir)
        callbacks.append(tensorboard)
    dataset = Dataset.from_dict({"prompt": [p.text for p in train], "row_index": list(range(len(train)))})
    trainer = TimedGRPOTrainer(
        model=model, reward_funcs=[reward], args=_grpo_config(config), train_dataset=dataset,
        processing_class=tokenizer, peft_config=lora_config(hparams), callbacks=callbacks,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    progress.trainer = trainer
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)

    status: RunStatus = {"cancel": "cancelled", "pause": "paused", None: "succeeded"}[progress.stop_request]
    final_path = None
    if status == "succeeded":
        final_path = str(config.final_dir)
        trainer.save_model(final_path)
        tokenizer.save_pretrained(final_path)
        artifacts.publish(final_path, config.output_dir)
    warnings = []
    if dropped:
        warnings.append(f"{len(dropped)} training prompt(s) leave no room for an answer of max_completion_length "
                        f"tokens within max_seq_length and were not trained on (lines "
                        f"{', '.join(map(str, dropped[:10]))}{'...' if len(dropped) > 10 else ''}).")  # fmt: skip
    return TrainingResult(
        status=status, final_path=final_path, checkpoint_path=_newest_checkpoint(config.output_path),
        trained_tokens=int(trainer.state.num_input_tokens_seen or 0) or _estimate_tokens(train, hparams),
        steps=trainer.state.global_step, total_steps=trainer.state.max_steps,
        metrics_history=[{k: v for k, v in row.items() if isinstance(v, int | float)} for row in progress.history],
        warnings=warnings,
    )  # fmt: skip


def _estimate_tokens(prompts: list[Prompt], hparams) -> int:
    """Prompt tokens x answers sampled x epochs, when the trainer did not count them."""
    return sum(p.n_tokens for p in prompts) * (hparams.num_generations or 1) * hparams.n_epochs
