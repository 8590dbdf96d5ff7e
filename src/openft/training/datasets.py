"""Turn a validated training JSONL file into a tokenized `datasets.Dataset` the trainers consume as is.

Rows go through `openft.models.chat_template`, the renderer serving uses too, so the model is trained on
exactly the text it later sees. Supervised rows become `input_ids` + `labels` (-100 where not trained);
DPO rows become `prompt_ids` + `chosen_ids` + `rejected_ids`. A pre-flight check refuses a data set whose
loss mask is empty, rather than letting the trainer report a meaningless zero loss.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from openft.models.chat_template import IGNORE_INDEX, encode_chat, encode_completion, encode_prompt

FORMATS = ("chat", "completion", "dpo")


class TrainingDataError(Exception):
    """A training or validation file that cannot be trained on; `param` names the job field to blame."""

    def __init__(self, code: str, message: str, param: str = "training_file") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class DatasetStats:
    """What tokenization found; `billable_tokens_per_epoch` x n_epochs is the job's `trained_tokens`."""

    format: str
    examples: int = 0
    tokens: int = 0  # after truncation to max_seq_length; what one epoch feeds the model
    trainable_tokens: int = 0  # tokens with a label, i.e. that carry loss
    truncated_examples: int = 0
    dropped_examples: list[int] = field(default_factory=list)  # 1-based lines with nothing left to train on

    @property
    def billable_tokens_per_epoch(self) -> int:
        return self.tokens

    def warnings(self) -> list[str]:
        notes = []
        if self.truncated_examples:
            notes.append(f"{self.truncated_examples} example(s) were longer than max_seq_length and were truncated.")
        if self.dropped_examples:
            lines = ", ".join(str(line) for line in self.dropped_examples[:10])
            more = "..." if len(self.dropped_examples) > 10 else ""
            notes.append(
                f"{len(self.dropped_examples)} example(s) had no trained tokens after truncation and were "
                f"not trained on (lines {lines}{more})."
            )
        return notes


@dataclass
class TokenizedData:
    dataset: Dataset
    stats: DatasetStats


def read_jsonl(path: str | Path, param: str = "training_file") -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, row) for every non-blank line."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TrainingDataError(
                    "invalid_json", f"Line {line_number} is not valid JSON: {error}", param
                ) from error
            if not isinstance(row, dict):
                raise TrainingDataError("invalid_row", f"Line {line_number} is not a JSON object.", param)
            yield line_number, row


def detect_format(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "input" in row and "preferred_output" in row and "non_preferred_output" in row:
        return "dpo"
    if "prompt" in row and "completion" in row:
        return "completion"
    return None


def _row_format(line_number: int, row: dict[str, Any], expected: str | None, param: str) -> str:
    found = detect_format(row)
    if found is None:
        raise TrainingDataError(
            "unknown_format", f"Line {line_number} is neither a chat, a DPO nor a prompt/completion row.", param
        )
    if expected is not None and found != expected:
        raise TrainingDataError(
            "mixed_formats", f"Line {line_number} is a {found} row but the file starts with {expected} rows.", param
        )
    return found


def _empty_mask_error(stats: DatasetStats, max_seq_length: int, param: str) -> TrainingDataError:
    return TrainingDataError(
        "no_trainable_tokens",
        f"No example has a token to train on ({stats.examples} examples read). Every assistant message has "
        f"weight 0, or truncation to max_seq_length={max_seq_length} removed every assistant token. Give at "
        "least one assistant message weight 1, shorten the prompts, or raise max_seq_length.",
        param,
    )


def tokenize_supervised(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, max_seq_length: int, *, param: str = "training_file"
) -> TokenizedData:
    """Chat or legacy prompt/completion rows -> `input_ids`, `labels` truncated to `max_seq_length`.

    Rows left without a trained token are dropped (and listed in the stats); a file where that is every row
    raises `TrainingDataError("no_trainable_tokens")`.
    """
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    stats: DatasetStats | None = None
    for line_number, row in read_jsonl(path, param):
        row_format = _row_format(line_number, row, stats.format if stats else None, param)
        if row_format == "dpo":
            raise TrainingDataError(
                "wrong_method", f"Line {line_number} is a DPO row; use method type `dpo` for this file.", param
            )
        stats = stats or DatasetStats(format=row_format)
        if row_format == "chat":
            encoded = encode_chat(tokenizer, row["messages"], row.get("tools"))
        else:
            encoded = encode_completion(tokenizer, row["prompt"], row["completion"])
        stats.examples += 1
        ids, row_labels = encoded.input_ids, encoded.labels
        if len(ids) > max_seq_length:
            stats.truncated_examples += 1
            ids, row_labels = ids[:max_seq_length], row_labels[:max_seq_length]
        trainable = sum(1 for label in row_labels if label != IGNORE_INDEX)
        if trainable == 0:
            stats.dropped_examples.append(line_number)
            continue
        stats.tokens += len(ids)
        stats.trainable_tokens += trainable
        input_ids.append(ids)
        labels.append(row_labels)
    if stats is None:
        raise TrainingDataError("empty_file", "The file has no examples.", param)
    if stats.trainable_tokens == 0:
        raise _empty_mask_error(stats, max_seq_length, param)
    return TokenizedData(Dataset.from_dict({"input_ids": input_ids, "labels": labels}), stats)


def _completion_ids(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any], output_key: str) -> list[int]:
    """Token ids of one DPO answer: the assistant turn's body and its closing <|im_end|>."""
    messages = row["input"]["messages"]
    answer = {key: value for key, value in row[output_key][0].items() if key != "weight"}
    encoded = encode_chat(tokenizer, [*messages, answer], row["input"].get("tools"))
    prompt_length = len(encode_prompt(tokenizer, messages, row["input"].get("tools")))
    return [
        token
        for token, label in zip(encoded.input_ids[prompt_length:], encoded.labels[prompt_length:], strict=True)
        if label != IGNORE_INDEX
    ]


def tokenize_preferences(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, max_seq_length: int, *, param: str = "training_file"
) -> TokenizedData:
    """DPO rows -> `prompt_ids`, `chosen_ids`, `rejected_ids`.

    A prompt that alone reaches `max_seq_length` leaves nothing to compare, so that row is dropped; answers
    are cut so prompt + answer fits. `tokens` counts prompt + both answers, as both are run through the model.
    """
    columns: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    stats = DatasetStats(format="dpo")
    for line_number, row in read_jsonl(path, param):
        if _row_format(line_number, row, "dpo", param) != "dpo":
            raise TrainingDataError("wrong_method", f"Line {line_number} is not a DPO row.", param)
        tools = row["input"].get("tools")
        prompt_ids = encode_prompt(tokenizer, row["input"]["messages"], tools)
        chosen_ids = _completion_ids(tokenizer, row, "preferred_output")
        rejected_ids = _completion_ids(tokenizer, row, "non_preferred_output")
        stats.examples += 1
        room = max_seq_length - len(prompt_ids)
        if room <= 0 or not chosen_ids or not rejected_ids:
            stats.dropped_examples.append(line_number)
            continue
        if len(chosen_ids) > room or len(rejected_ids) > room:
            stats.truncated_examples += 1
        chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
        stats.tokens += len(prompt_ids) + len(chosen_ids) + len(rejected_ids)
        stats.trainable_tokens += len(chosen_ids) + len(rejected_ids)
        columns["prompt_ids"].append(prompt_ids)
        columns["chosen_ids"].append(chosen_ids)
        columns["rejected_ids"].append(rejected_ids)
    if stats.examples == 0:
        raise TrainingDataError("empty_file", "The file has no examples.", param)
    if stats.trainable_tokens == 0:
        raise _empty_mask_error(stats, max_seq_length, param)
    return TokenizedData(Dataset.from_dict(columns), stats)


def tokenize_file(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    method_type: str,
    *,
    param: str = "training_file",
) -> TokenizedData:
    """The tokenizer for a job's method: "dpo" -> preference columns, "supervised" -> input_ids/labels."""
    if method_type == "dpo":
        return tokenize_preferences(path, tokenizer, max_seq_length, param=param)
    return tokenize_supervised(path, tokenizer, max_seq_length, param=param)


def count_examples(path: str | Path) -> int:
    """Rows in a JSONL file, for the auto epoch/batch rules before tokenizing."""
    return sum(1 for _ in read_jsonl(path))
