"""End-to-end training runs on a tiny random Llama: what a job's owner would see happen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from openft.training.callbacks import NullReporter
from openft.training.datasets import TrainingDataError, tokenize_file
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.trainer import build_trainer, run_training
from openft.training.trainer_config import TrainerRunConfig


class RecordingReporter:
    """Remembers every call; asks to stop (`stop_with`) once `stop_after_step` steps were reported."""

    def __init__(self, stop_with: str | None = None, stop_after_step: int = 0) -> None:
        self.started: list[tuple[int, dict]] = []
        self.metrics: list[tuple[int, int, dict]] = []
        self.checkpoints: list[tuple[int, str, dict]] = []
        self.stop_with = stop_with
        self.stop_after_step = stop_after_step

    def on_start(self, total_steps, resolved_hparams):
        self.started.append((total_steps, resolved_hparams))

    def on_metrics(self, step, total_steps, metrics):
        self.metrics.append((step, total_steps, metrics))

    def on_checkpoint(self, step, path, metrics):
        self.checkpoints.append((step, path, metrics))

    def should_stop(self):
        self.polls = getattr(self, "polls", 0) + 1
        return self.stop_with if self.stop_with and self.polls >= self.stop_after_step else None

    def losses(self) -> list[float]:
        return [m["train_loss"] for _, _, m in self.metrics]


def _chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Code {i}?"},
            {"role": "assistant", "content": f"The code is {i % 3}."},
        ]
    }


def _dpo(i: int) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": f"Greet person {i}"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello friend!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def _tokenized_lengths(config: TrainerRunConfig, model_dir) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = tokenize_file(config.training_file, tokenizer, config.hyperparameters.max_seq_length, "supervised")
    return data.dataset["input_ids"]


def _config(tmp_path, model_dir, *, rows=None, method="supervised", output="out", valid_rows=None, **hparams):
    rows = rows if rows is not None else [_chat(i) for i in range(8)]
    given = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10, "lora_dropout": 0.0, **hparams}
    if given.get("lora_rank") == 0:
        given.pop("lora_dropout")
    resolved = resolve_hyperparameters(method, given, n_train_examples=len(rows), context_length=256)
    return TrainerRunConfig(
        base_model=str(model_dir),
        training_file=_write(tmp_path / f"{output}-train.jsonl", rows),
        validation_file=_write(tmp_path / f"{output}-valid.jsonl", valid_rows) if valid_rows else None,
        output_dir=str(tmp_path / output),
        method_type=method,
        hyperparameters=resolved,
        seed=7,
        report_to=["tensorboard"],
    )


def test_lora_run_reports_every_step_validates_each_epoch_and_bills_tokens_times_epochs(tmp_path, tiny_model_dir):
    rows = [_chat(i) for i in range(5)]  # batch 3: two steps per epoch, the second one short
    config = _config(tmp_path, tiny_model_dir, rows=rows, n_epochs=3, batch_size=3, valid_rows=rows[:2])
    reporter = RecordingReporter()
    result = run_training(config, reporter)

    assert result.status == "succeeded"
    assert (result.steps, result.total_steps) == (6, 6)
    assert reporter.started[0][0] == 6 and reporter.started[0][1]["lora_rank"] == 16
    assert [step for step, _, _ in reporter.metrics] == list(range(1, 7))
    for step, _, metrics in reporter.metrics:
        assert {"train_loss", "train_mean_token_accuracy"} <= metrics.keys()
        assert ("valid_loss" in metrics) == (step % 2 == 0)  # validation at each epoch end
        assert 0.0 <= metrics["train_mean_token_accuracy"] <= 1.0
    assert [step for step, _, _ in reporter.checkpoints] == [2, 4, 6]
    assert "valid_loss" in reporter.checkpoints[-1][2]
    assert result.checkpoint_path.endswith("checkpoint-6")
    assert list(config.tensorboard_dir.glob("events.out.tfevents.*"))
    assert result.metrics_history[0]["step"] == 1.0

    # billable tokens: every training token once per epoch
    per_epoch = sum(len(ids) for ids in _tokenized_lengths(config, tiny_model_dir))
    assert result.trained_tokens == 3 * per_epoch


def test_one_checkpoint_per_epoch_last_three_kept_each_loadable_as_an_adapter(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, rows=[_chat(i) for i in range(4)], n_epochs=4)  # 1 step/epoch
    reporter = RecordingReporter()
    result = run_training(config, reporter)
    assert [step for step, _, _ in reporter.checkpoints] == [1, 2, 3, 4]
    kept = sorted(p.name for p in Path(config.output_dir).glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for folder in (Path(result.final_path), Path(config.output_dir) / kept[0]):
        model = PeftModel.from_pretrained(base, folder)
        assert model.peft_config["default"].r == 16
        base = model.unload()


def test_batches_carry_loss_only_on_weighted_assistant_tokens(tmp_path, tiny_model_dir):
    row = {
        "messages": [
            {"role": "user", "content": "USER secret"},
            {"role": "assistant", "content": "ignored reply", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "learned reply"},
        ]
    }
    run = build_trainer(_config(tmp_path, tiny_model_dir, rows=[row, _chat(1)], batch_size=2), NullReporter())
    batch = next(iter(run.trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free: one row of tokens
    tokens, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = [t for t, label in zip(tokens, labels, strict=True) if label != -100]
    text = run.tokenizer.decode(trained)
    assert "learned reply<|im_end|>" in text and "The code is 1.<|im_end|>" in text
    assert "USER" not in text and "ignored" not in text and "assistant" not in text


def test_loss_decreases_on_a_memorizable_task(tmp_path, tiny_model_dir):
    rows = [_chat(i) for i in range(4)]
    # Full fine-tuning: the tiny model's random LM head makes a LoRA-only fit slow to show in a few steps.
    config = _config(tmp_path, tiny_model_dir, rows=rows, n_epochs=6, lora_rank=0, learning_rate_multiplier=300)
    reporter = RecordingReporter()
    result = run_training(config, reporter)
    losses = reporter.losses()
    assert result.status == "succeeded" and len(losses) == 6
    assert losses[-1] < losses[0] - 1.5
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))


def test_same_seed_and_data_give_the_same_losses(tmp_path, tiny_model_dir):
    first, second = RecordingReporter(), RecordingReporter()
    run_training(_config(tmp_path, tiny_model_dir, output="a", lora_dropout=0.1), first)
    run_training(_config(tmp_path, tiny_model_dir, output="b", lora_dropout=0.1), second)
    assert first.losses() == pytest.approx(second.losses(), abs=1e-6)


def test_padding_free_batches_match_padded_batches(tmp_path, tiny_model_dir):
    # Rows of different lengths in one batch: padding-free must not let a row attend to its neighbours.
    rows = [_chat(1), _chat(22222), {"messages": [{"role": "user", "content": "hi " * 20}, *_chat(3)["messages"][1:]]}]
    packed, padded = RecordingReporter(), RecordingReporter()
    run_training(_config(tmp_path, tiny_model_dir, rows=rows, batch_size=3, output="p", packing=True), packed)
    run_training(_config(tmp_path, tiny_model_dir, rows=rows, batch_size=3, output="q", packing=False), padded)
    assert packed.losses() == pytest.approx(padded.losses(), rel=1e-4)


def test_pause_saves_a_checkpoint_and_resume_finishes_the_remaining_steps(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, n_epochs=2)  # 2 steps per epoch, 4 in all
    paused = RecordingReporter(stop_with="pause", stop_after_step=3)
    result = run_training(config, paused)
    assert result.status == "paused" and result.final_path is None
    assert result.steps == 3
    assert [step for step, _, _ in paused.checkpoints] == [2, 3]
    assert result.checkpoint_path.endswith("checkpoint-3")

    config.resume_from_checkpoint = result.checkpoint_path
    resumed_reporter = RecordingReporter()
    resumed = run_training(config, resumed_reporter)
    assert resumed.status == "succeeded"
    assert (resumed.steps, resumed.total_steps) == (4, 4)
    assert [step for step, _, _ in resumed_reporter.metrics] == [4]
    assert Path(resumed.final_path, "adapter_model.safetensors").exists()


def test_cancel_stops_without_saving_anything(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, n_epochs=2)
    reporter = RecordingReporter(stop_with="cancel", stop_after_step=1)
    result = run_training(config, reporter)
    assert result.status == "cancelled"
    assert result.steps == 1 and result.final_path is None and result.checkpoint_path is None
    assert reporter.checkpoints == []
    assert not list(Path(config.output_dir).glob("checkpoint-*"))


def test_full_fine_tuning_saves_a_whole_model(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, lora_rank=0, learning_rate_multiplier=50)
    reporter = RecordingReporter()
    result = run_training(config, reporter)
    assert result.status == "succeeded"
    assert reporter.started[0][1]["lora_rank"] == 0
    tuned = AutoModelForCausalLM.from_pretrained(result.final_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_dpo_on_a_tiny_preference_set(tmp_path, tiny_model_dir):
    rows = [_dpo(i) for i in range(4)]
    config = _config(tmp_path, tiny_model_dir, rows=rows, method="dpo", batch_size=2, n_epochs=1, beta=0.2)
    reporter = RecordingReporter()
    result = run_training(config, reporter)
    assert result.status == "succeeded" and result.steps == 2
    assert reporter.started[0][1]["beta"] == 0.2
    assert all("train_loss" in metrics for _, _, metrics in reporter.metrics)
    assert Path(result.final_path, "adapter_config.json").exists()
    assert len(reporter.checkpoints) == 1


def test_empty_loss_mask_fails_before_training(tmp_path, tiny_model_dir):
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
        for _ in range(3)
    ]
    reporter = RecordingReporter()
    with pytest.raises(TrainingDataError) as raised:
        run_training(_config(tmp_path, tiny_model_dir, rows=rows), reporter)
    assert raised.value.code == "no_trainable_tokens"
    assert reporter.started == []
