"""Reinforcement fine-tuning of the bundled SmolLM2-135M on a verifiable task raises its reward on held-out items.

The task: "a + b =" answered with the number only. The reward is OpenAI grader JSON (a multi grader of two
string checks): 0.5 when the answer contains the right number, 1 when it is exactly the number. The base model
tends to say "The answer is 11.", right or wrong; RFT should make it answer tersely and more often correctly.
"""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace

import pytest

from openft.graders import grade
from openft.models.chat_template import render_prompt
from openft.training.callbacks import NullReporter
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.rft import Prompt, _generate, run_rft_training
from openft.training.trainer import load_model, load_tokenizer
from openft.training.trainer_config import TrainerRunConfig

# `long`: about ten minutes of GRPO on two CPU cores, so `make test` (CI) leaves it out; run it with `make test-long`.
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.long]

SYSTEM = "Reply with the number only."
ANSWER_TOKENS = 10  # room for the base model's habit, "The answer is 11." (digits are single tokens)
GRADER = {
    "type": "multi", "name": "number",
    "graders": {
        "contains": {"type": "string_check", "name": "contains", "input": "{{sample.output_text}}",
                     "reference": "{{item.answer}}", "operation": "like"},
        "exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "operation": "eq"},
    },
    "calculate_output": "0.5 * contains + 0.5 * exact",
}  # fmt: skip


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        out.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{a} + {b} ="}],
                    "answer": str(a + b)})  # fmt: skip
    return out


class PrintingReporter(NullReporter):
    def on_metrics(self, step: int, total_steps: int, metrics: dict) -> None:
        print(f"step {step}/{total_steps}: train reward {metrics['train_reward_mean']:.3f}", flush=True)


def mean_reward(model, tokenizer, held_out: list[dict]) -> float:
    prompts = [Prompt(0, render_prompt(r["messages"]), r["messages"], r, 0) for r in held_out]
    answers = _generate(model, tokenizer, prompts, SimpleNamespace(max_completion_length=ANSWER_TOKENS), 1)
    return sum(grade(GRADER, a[0], r).reward for a, r in zip(answers, held_out, strict=True)) / len(held_out)


def test_rft_raises_held_out_reward_above_the_base_model(tmp_path, real_model_dir):
    from peft import PeftModel

    train, held_out = rows(16, seed=1), rows(12, seed=2)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    tokenizer = load_tokenizer(real_model_dir)
    base = mean_reward(load_model(real_model_dir), tokenizer, held_out)

    hparams = resolve_hyperparameters(
        "reinforcement",
        {"n_epochs": 2, "batch_size": 4, "compute_multiplier": 1, "max_completion_length": ANSWER_TOKENS,
         "learning_rate_multiplier": 10, "eval_interval": 100},
        n_train_examples=len(train), context_length=2048,
    )  # fmt: skip
    config = TrainerRunConfig(base_model=str(real_model_dir), training_file=str(tmp_path / "train.jsonl"),
                              output_dir=str(tmp_path / "out"), hyperparameters=hparams,
                              method_type="reinforcement", seed=3, report_to=[])  # fmt: skip
    started = time.monotonic()
    result = run_rft_training(config, PrintingReporter(), GRADER)
    trained_seconds = time.monotonic() - started
    assert result.status == "succeeded"

    tuned = mean_reward(PeftModel.from_pretrained(load_model(real_model_dir), result.final_path), tokenizer, held_out)
    print(f"\nheld-out mean reward: base {base:.3f} -> RFT {tuned:.3f} "
          f"({result.steps} GRPO steps in {trained_seconds:.0f} s)")  # fmt: skip
    assert tuned > base
