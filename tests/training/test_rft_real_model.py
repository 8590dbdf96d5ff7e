"""Reinforcement fine-tuning of the bundled SmolLM2-135M on a verifiable task raises its reward on held-out items.

The task: "Ben has 13 cups. How many cups does Ben have?" answered with the number only. The base model knows
the number but answers "Ben has 13 cups." and keeps going, so an exact check never passes and none of its greedy
answers starts with the number. The reward is OpenAI grader JSON, a multi grader: a
`string_check` that the answer holds the right number, times a `text_similarity` fuzzy match against it, which
is higher the less else the answer says. A wrong number scores 0, and among answers that hold it the shorter
ones score higher: answers in one group score differently, which is what GRPO learns from (a group of equal
rewards teaches nothing). Held-out rows use other names, things and numbers than training rows.

Measured on an idle 2-core machine (36 GRPO steps, 5 min): held-out mean reward 0.176 -> 0.341, and the share of
held-out answers that start with the right number 0% -> 92% ("16(16000": the model has learnt to lead with
the number, not yet to stop after it).
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

# `long`: several minutes of GRPO on two CPU cores, so `make test` (CI) leaves it out; run it with `make test-long`.
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.long]

SYSTEM = "Reply with the number only."
ANSWER_TOKENS = 8  # room for the base model's habit, "Ben has 13 cups." (digits are single tokens)
NAMES = ["Tom", "Anna", "Sam", "Mia", "Leo", "Ben", "Zoe", "Max"]
THINGS = ["apples", "books", "cats", "pens", "coins", "cups"]
GRADER = {
    "type": "multi", "name": "number",
    "graders": {
        "holds": {"type": "string_check", "name": "holds", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "operation": "like"},
        "close": {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"},
    },
    "calculate_output": "holds * close",
}  # fmt: skip


def rows() -> tuple[list[dict], list[dict]]:
    """48 training and 24 held-out questions; no (name, thing, number) question is in both."""
    questions = [(name, thing, n) for name in NAMES for thing in THINGS for n in range(2, 20)]
    random.Random(0).shuffle(questions)

    def row(name: str, thing: str, n: int) -> dict:
        question = f"{name} has {n} {thing}. How many {thing} does {name} have?"
        return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                "answer": str(n)}  # fmt: skip

    return [row(*q) for q in questions[24:72]], [row(*q) for q in questions[:24]]


class PrintingReporter(NullReporter):
    def on_metrics(self, step: int, total_steps: int, metrics: dict) -> None:
        print(f"step {step}/{total_steps}: train reward {metrics['train_reward_mean']:.3f}", flush=True)


def _leads_with(answer: str, number: str) -> bool:
    stripped = answer.strip()
    return stripped.startswith(number) and not stripped[len(number) : len(number) + 1].isdigit()


def held_out_scores(model, tokenizer, held_out: list[dict]) -> tuple[float, float]:
    """(mean reward, share of answers that start with the right number) of greedy answers."""
    prompts = [Prompt(0, render_prompt(r["messages"]), r["messages"], r, 0) for r in held_out]
    limits = SimpleNamespace(max_completion_length=ANSWER_TOKENS)
    answers = [a[0] for a in _generate(model, tokenizer, prompts, limits, 1)]
    rewards = [grade(GRADER, answer, r).reward for answer, r in zip(answers, held_out, strict=True)]
    leads = [_leads_with(answer, r["answer"]) for answer, r in zip(answers, held_out, strict=True)]
    print("answers:", answers[:6])
    return sum(rewards) / len(rewards), sum(leads) / len(leads)


def test_rft_raises_held_out_reward_above_the_base_model(tmp_path, real_model_dir):
    from peft import PeftModel

    train, held_out = rows()
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    tokenizer = load_tokenizer(real_model_dir)
    base, base_leads = held_out_scores(load_model(real_model_dir), tokenizer, held_out)
    print(f"base model, held-out mean reward {base:.3f}, answers that start with the number {base_leads:.0%}",
          flush=True)  # fmt: skip

    hparams = resolve_hyperparameters(
        "reinforcement",
        {"n_epochs": 3, "batch_size": 4, "compute_multiplier": 2, "max_completion_length": ANSWER_TOKENS,
         "learning_rate_multiplier": 10, "lora_alpha": 256, "temperature": 1.0, "eval_interval": 100},
        n_train_examples=len(train), context_length=2048,
    )  # fmt: skip
    config = TrainerRunConfig(base_model=str(real_model_dir), training_file=str(tmp_path / "train.jsonl"),
                              output_dir=str(tmp_path / "out"), hyperparameters=hparams,
                              method_type="reinforcement", seed=3, report_to=[])  # fmt: skip
    started = time.monotonic()
    result = run_rft_training(config, PrintingReporter(), GRADER)
    trained_seconds = time.monotonic() - started
    assert result.status == "succeeded"

    model = PeftModel.from_pretrained(load_model(real_model_dir), result.final_path)
    tuned, tuned_leads = held_out_scores(model, tokenizer, held_out)
    print(f"\nheld-out mean reward: base {base:.3f} -> RFT {tuned:.3f}; answers that start with the number: "
          f"{base_leads:.0%} -> {tuned_leads:.0%} ({result.steps} GRPO steps in {trained_seconds:.0f} s)")  # fmt: skip
    assert tuned > base + 0.1  # 0.176 -> 0.341 when measured
    assert tuned_leads >= base_leads + 0.5  # 0% -> 92% when measured
