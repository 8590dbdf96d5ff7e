"""On the real SmolLM2-135M-Instruct: a short LoRA run teaches an output format the base model does not use.

Task: label the sentiment of short product reviews as a fixed JSON object. Held-out reviews use words the
training set does not contain verbatim, so the score measures what was learned, not what was memorised.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from openft.models.chat_template import encode_prompt, parse_assistant_output
from openft.models.registry import load_model, load_tokenizer
from openft.training.callbacks import NullReporter
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.trainer import run_training
from openft.training.trainer_config import TrainerRunConfig

SYSTEM = "Label the review."
POSITIVE = ["great", "excellent", "wonderful", "fantastic", "lovely", "superb", "brilliant", "perfect"]
NEGATIVE = ["terrible", "awful", "horrible", "broken", "useless", "disappointing", "poor", "dreadful"]
ITEMS = ["blender", "kettle", "lamp", "backpack", "keyboard", "chair", "jacket", "toaster", "speaker", "mug"]
HELD_OUT_POSITIVE = ["amazing", "delightful"]
HELD_OUT_NEGATIVE = ["awful quality", "worthless"]


def example(item: str, word: str, label: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"The {item} is {word}."},
            {"role": "assistant", "content": json.dumps({"sentiment": label})},
        ]
    }


def training_rows() -> list[dict]:
    rng = random.Random(0)
    rows = [example(rng.choice(ITEMS), w, "positive") for w in POSITIVE for _ in range(3)]
    rows += [example(rng.choice(ITEMS), w, "negative") for w in NEGATIVE for _ in range(3)]
    rng.shuffle(rows)
    return rows


def held_out_rows() -> list[dict]:
    rows = [example(item, w, "positive") for w in HELD_OUT_POSITIVE for item in ITEMS[:5]]
    rows += [example(item, w, "negative") for w in HELD_OUT_NEGATIVE for item in ITEMS[:5]]
    return rows


@torch.no_grad()
def accuracy(model, tokenizer, rows: list[dict]) -> float:
    """Greedy answers for all rows in one left-padded batch, compared exactly with the expected JSON."""
    prompts = [encode_prompt(tokenizer, row["messages"][:-1]) for row in rows]
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=pad,
    )
    correct = 0
    for row, answer in zip(rows, output[:, width:], strict=True):
        text, _ = parse_assistant_output(tokenizer.decode(answer, skip_special_tokens=True))
        correct += (text or "").strip() == row["messages"][-1]["content"]
    return correct / len(rows)


@pytest.mark.real_model
def test_fine_tuned_smollm2_beats_the_base_model_on_held_out_reviews(real_model, tmp_path):
    train_path = tmp_path / "train.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in training_rows()))
    hyperparameters = resolve_hyperparameters(
        "supervised", {"n_epochs": 2, "batch_size": 4}, n_train_examples=48, context_length=8192
    )
    result = run_training(
        TrainerRunConfig(
            base_model=real_model,
            training_file=str(train_path),
            output_dir=str(tmp_path / "out"),
            hyperparameters=hyperparameters,
            seed=0,
            report_to=[],
        ),
        NullReporter(),
    )
    assert result.status == "succeeded"

    from peft import PeftModel

    tokenizer = load_tokenizer(real_model)
    base = load_model(real_model).eval()
    base_accuracy = accuracy(base, tokenizer, held_out_rows())
    tuned = PeftModel.from_pretrained(load_model(real_model), result.final_path).eval()
    tuned_accuracy = accuracy(tuned, tokenizer, held_out_rows())
    print(f"\nheld-out exact-match accuracy: base={base_accuracy:.2f} fine-tuned={tuned_accuracy:.2f}")
    assert tuned_accuracy >= 0.8
    assert tuned_accuracy >= base_accuracy + 0.5
