"""Tokenizing training files: what carries loss, truncation, and the empty-mask pre-flight."""

from __future__ import annotations

import json

import pytest

from openft.models.chat_template import IGNORE_INDEX
from openft.training.datasets import TrainingDataError, tokenize_file


def _write(tmp_path, rows, name="train.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _trained_text(tokenizer, ids, labels):
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_only_assistant_tokens_with_weight_carry_loss(tmp_path, smollm2_tokenizer):
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "USERTEXT one"},
            {"role": "assistant", "content": "SKIPPED answer", "weight": 0},
            {"role": "user", "content": "USERTEXT two"},
            {"role": "assistant", "content": "KEPT answer"},
        ]
    }
    data = tokenize_file(_write(tmp_path, [row]), smollm2_tokenizer, 512, "supervised")
    example = data.dataset[0]
    trained = _trained_text(smollm2_tokenizer, example["input_ids"], example["labels"])
    assert trained == "KEPT answer<|im_end|>"
    assert data.stats.trainable_tokens == sum(1 for label in example["labels"] if label != IGNORE_INDEX)
    assert data.stats.tokens == len(example["input_ids"])


def test_legacy_completion_trains_on_completion_and_eos(tmp_path, smollm2_tokenizer):
    data = tokenize_file(
        _write(tmp_path, [{"prompt": "Capital of France?", "completion": " Paris"}]),
        smollm2_tokenizer,
        512,
        "supervised",
    )
    example = data.dataset[0]
    assert data.stats.format == "completion"
    assert _trained_text(smollm2_tokenizer, example["input_ids"], example["labels"]) == (
        " Paris" + smollm2_tokenizer.eos_token
    )


def test_truncation_caps_length_and_drops_rows_left_without_loss(tmp_path, smollm2_tokenizer):
    long_prompt = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "hi"}]}
    short = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there " * 30}]}
    data = tokenize_file(_write(tmp_path, [long_prompt, short]), smollm2_tokenizer, 48, "supervised")
    assert len(data.dataset) == 1
    assert len(data.dataset[0]["input_ids"]) == 48
    assert data.stats.dropped_examples == [1]
    assert data.stats.truncated_examples == 2
    assert any("line" in note for note in data.stats.warnings())


def test_all_weight_zero_fails_preflight(tmp_path, smollm2_tokenizer):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a", "weight": 0}]}
        for i in range(3)
    ]
    with pytest.raises(TrainingDataError) as raised:
        tokenize_file(_write(tmp_path, rows), smollm2_tokenizer, 512, "supervised")
    assert raised.value.code == "no_trainable_tokens"
    assert raised.value.param == "training_file"
    assert "weight" in raised.value.message


def test_truncation_that_removes_every_answer_fails_preflight_for_validation_file(tmp_path, smollm2_tokenizer):
    rows = [{"messages": [{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": "ok"}]}]
    with pytest.raises(TrainingDataError) as raised:
        tokenize_file(_write(tmp_path, rows), smollm2_tokenizer, 32, "supervised", param="validation_file")
    assert raised.value.code == "no_trainable_tokens"
    assert raised.value.param == "validation_file"
    assert "max_seq_length=32" in raised.value.message


def test_dpo_rows_become_prompt_chosen_rejected_ids(tmp_path, smollm2_tokenizer):
    row = {
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
    }
    data = tokenize_file(_write(tmp_path, [row]), smollm2_tokenizer, 512, "dpo")
    example = data.dataset[0]
    assert smollm2_tokenizer.decode(example["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert smollm2_tokenizer.decode(example["chosen_ids"]) == "Hi!<|im_end|>"
    assert smollm2_tokenizer.decode(example["rejected_ids"]) == "No.<|im_end|>"


def test_method_and_file_format_must_agree(tmp_path, smollm2_tokenizer):
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    dpo = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}],
    }
    with pytest.raises(TrainingDataError) as raised:
        tokenize_file(_write(tmp_path, [dpo]), smollm2_tokenizer, 512, "supervised")
    assert raised.value.code == "wrong_method"
    with pytest.raises(TrainingDataError) as raised:
        tokenize_file(_write(tmp_path, [chat, dpo]), smollm2_tokenizer, 512, "supervised")
    assert raised.value.code == "mixed_formats" and "Line 2" in raised.value.message
