"""How the trainer talks to whoever runs it: a small `Reporter` protocol and its TrainerCallback adapter.

The worker implements `Reporter` in the training child process (writing events, metrics and checkpoints
to the database) and answers `should_stop()` when a user cancels or pauses the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

StopRequest = Literal["cancel", "pause"]

# transformers/TRL log keys -> OpenAI metric names
_TRAIN_KEYS = {"loss": "train_loss", "mean_token_accuracy": "train_mean_token_accuracy"}
_EVAL_KEYS = {"eval_loss": "valid_loss", "eval_mean_token_accuracy": "valid_mean_token_accuracy"}
# DPO logs reward accuracy rather than token accuracy; both are kept under their own names
_EXTRA_KEYS = {
    "rewards/accuracies": "train_reward_accuracy",
    "rewards/margins": "train_reward_margin",
    "eval_rewards/accuracies": "valid_reward_accuracy",
    "eval_rewards/margins": "valid_reward_margin",
    "learning_rate": "learning_rate",
}


class Reporter(Protocol):
    """Implemented by the caller of `run_training`; every method is called from the training process."""

    def on_start(self, total_steps: int, resolved_hparams: dict[str, Any]) -> None:
        """Training is about to take its first step (or its first step after a resume)."""

    def on_metrics(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        """One optimizer step's metrics: train_loss, train_mean_token_accuracy, and valid_loss /
        valid_mean_token_accuracy on steps where the validation file was evaluated."""

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, float]) -> None:
        """A checkpoint folder, loadable on its own, was written (end of epoch or pause)."""

    def should_stop(self) -> StopRequest | None:
        """Polled after every step: "cancel" stops without saving, "pause" saves a checkpoint and stops."""


class NullReporter:
    """A reporter that ignores everything and never stops the run (benchmarks, scripts)."""

    def on_start(self, total_steps: int, resolved_hparams: dict[str, Any]) -> None:
        pass

    def on_metrics(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> StopRequest | None:
        return None


def _rename(logs: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    return {new: float(logs[old]) for old, new in names.items() if isinstance(logs.get(old), int | float)}


class ReporterCallback(TrainerCallback):
    """Feeds a `Reporter` from the transformers training loop.

    transformers calls, per step: on_step_end -> on_log (train) -> on_log (eval, if evaluated) -> on_save.
    Train and eval numbers of one step are merged and sent once, before that step's checkpoint.
    """

    def __init__(self, reporter: Reporter, resolved_hparams: dict[str, Any]) -> None:
        self.reporter = reporter
        self.resolved_hparams = resolved_hparams
        self.stop_request: StopRequest | None = None
        self.history: list[dict[str, float]] = []  # every step's merged metrics, step included
        self.checkpoints: list[str] = []
        self._pending: dict[str, float] = {}
        self._pending_step: int | None = None
        self._total_steps = 0

    # --- metrics ---------------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._pending_step is None or not self._pending:
            return
        step, metrics = self._pending_step, self._pending
        self._pending, self._pending_step = {}, None
        self.history.append({"step": float(step), **metrics})
        self.reporter.on_metrics(step, self._total_steps, metrics)

    def _last_metrics(self) -> dict[str, float]:
        return {key: value for key, value in (self.history[-1] if self.history else {}).items() if key != "step"}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._total_steps = state.max_steps
        self.reporter.on_start(state.max_steps, self.resolved_hparams)

    def on_log(self, args, state: TrainerState, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        found = {**_rename(logs, _TRAIN_KEYS), **_rename(logs, _EVAL_KEYS), **_rename(logs, _EXTRA_KEYS)}
        if not found or "train_runtime" in logs:  # the end-of-training summary repeats averages, not a step
            return
        if self._pending_step is not None and self._pending_step != state.global_step:
            self._flush()
        self._pending_step = state.global_step
        self._pending.update(found)

    # --- stop requests ---------------------------------------------------------------------------------
    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        request = self.reporter.should_stop()
        if request is None:
            return
        self.stop_request = request
        control.should_training_stop = True
        if request == "cancel":
            control.should_save = False
            control.should_evaluate = False
        else:  # pause: keep everything needed to resume from here
            control.should_save = True

    def on_epoch_end(self, args, state, control: TrainerControl, **kwargs):
        # The epoch loop ends early after a stop; do not let the epoch's save/eval run on a cancelled job,
        # nor save the paused step a second time.
        if self.stop_request is not None:
            control.should_save = False
            control.should_evaluate = False

    # --- checkpoints -----------------------------------------------------------------------------------
    def on_save(self, args: TrainingArguments, state: TrainerState, control, **kwargs):
        self._flush()
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.checkpoints.append(str(path))
        self.reporter.on_checkpoint(state.global_step, str(path), self._last_metrics())

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()
