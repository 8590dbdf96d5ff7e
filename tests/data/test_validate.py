"""validate_file: one bad file per problem code, good files of each format, and whole-file behaviour."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from openft.data import CODES, Severity, validate_file, validate_lines, validate_stream
from openft.data import validate as validate_module
from openft.models.chat_template import encode_chat

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
DOCS = Path(__file__).parents[2] / "docs" / "validation.md"
# Codes no well-formed file can trigger: they are tested below by breaking the validator on purpose.
UNREACHABLE_FROM_FILES = {"internal_error", "template_error", "validation_timeout"}  # the last: test_validation_budget


def _chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": str(i + i)},
        ]
    }


def _lines(examples: list) -> list[bytes]:
    return [json.dumps(example).encode() + b"\n" for example in examples]


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_bad_file_reports_its_code_at_the_right_line_and_field(code, request):
    case = EXPECTED[code]
    options = dict(case["options"])
    if options.pop("needs_tokenizer", False):
        options["tokenizer"] = request.getfixturevalue("smollm2_tokenizer")
    report = validate_file(CORPUS / case["file"], **options)

    problems = report.errors if CODES[code].severity is Severity.ERROR else report.warnings
    assert [(p.line, p.code, p.field) for p in problems] == [(case["line"], code, case["field"])]
    assert problems[0].message  # something a person can act on
    other = report.warnings if problems is report.errors else report.errors
    assert other == []  # precise: the bad line raises exactly one problem
    assert report.ok is (CODES[code].severity is Severity.WARNING)


def test_corpus_covers_every_code_and_docs_explain_every_code():
    assert set(EXPECTED) | UNREACHABLE_FROM_FILES == set(CODES)
    docs = DOCS.read_text()
    undocumented = [code for code in CODES if f"`{code}`" not in docs]
    assert undocumented == []


@pytest.mark.parametrize(
    ("name", "fmt", "messages_max"),
    [("good_chat.jsonl", "chat", 4), ("good_dpo.jsonl", "dpo", 2), ("good_completion.jsonl", "completion", None)],
)
def test_good_files_of_each_format_pass(name, fmt, messages_max):
    report = validate_file(CORPUS / name)
    assert report.ok, report.errors
    assert (report.format, report.errors, report.warnings) == (fmt, [], [])
    assert report.stats.n_examples == report.stats.n_valid == 10 + (name == "good_chat.jsonl")
    if messages_max is None:
        assert report.stats.messages_per_example is None
    else:
        assert report.stats.messages_per_example.max == messages_max
    assert report.stats.tokens_per_example is None  # no tokenizer given: structural checks only
    assert report.summary().startswith(f"Valid {fmt} file: {report.stats.n_valid} examples")


def test_every_problem_in_a_file_is_reported_in_line_order():
    bad_message = {"messages": [{"role": "user", "content": 5, "mood": "x"}, {"role": "assistant", "weight": "1"}]}
    lines = [*_lines([_chat(i) for i in range(10)]), b"{oops\n", *_lines([bad_message]), b"\n", b"\xff\n"]
    report = validate_lines(lines)

    found = [(e.line, e.code, e.field) for e in report.errors]
    assert found == [
        (11, "invalid_json", None),
        (12, "message_unrecognized_key", "messages[0].mood"),
        (12, "invalid_content_type", "messages[0].content"),
        (12, "missing_content", "messages[1].content"),
        (12, "invalid_weight", "messages[1].weight"),
        (14, "invalid_utf8", None),
    ]
    assert [(w.line, w.code) for w in report.warnings] == [(13, "blank_line")]
    assert report.n_errors == 6 and not report.ok
    assert report.stats.n_valid == 10
    assert "6 errors: line 11: invalid_json" in report.summary()


def test_stored_errors_are_capped_but_all_are_counted():
    lines = [b"not json\n"] * 50 + _lines([_chat(1)])
    report = validate_lines(lines, max_issues=5)
    assert [e.line for e in report.errors] == [None, 1, 2, 3, 4]  # the file-level error sorts first
    assert report.n_errors == 51
    assert report.error_counts == {"invalid_json": 50, "too_few_examples": 1}


def test_format_is_the_first_valid_lines_and_other_formats_are_mixed():
    broken_completion = {"prompt": 3, "completion": "x"}
    lines = _lines([broken_completion, *[_chat(i) for i in range(10)], {"prompt": "a", "completion": "b"}])
    report = validate_lines(lines)
    assert report.format == "chat"
    assert [(e.line, e.code) for e in report.errors] == [
        (1, "missing_prompt"),
        (1, "mixed_formats"),
        (12, "mixed_formats"),
    ]
    assert "completion example" in report.errors[1].message and "chat" in report.errors[1].message


def test_a_dpo_file_with_messages_at_the_top_level_names_the_fix():
    line = {"messages": [], "preferred_output": [{"role": "assistant", "content": "a"}]}
    report = validate_lines(_lines([line]), min_examples=0)
    codes = {(e.code, e.field) for e in report.errors}
    assert ("dpo_missing_input", "input") in codes and ("dpo_missing_output", "non_preferred_output") in codes
    assert "move the top-level messages under input" in report.errors[0].message


def test_tool_reply_must_answer_an_earlier_call_not_a_later_one():
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "assistant", "content": "Sunny."},
    ]
    report = validate_lines(_lines([{"messages": messages}]), min_examples=0)
    assert [(e.code, e.field) for e in report.errors] == [("tool_reply_without_call", "messages[1].tool_call_id")]


def test_numeric_weights_and_tool_calls_are_accepted_unlike_the_cookbook_validator():
    messages = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "weight": 0.0,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
        {"role": "assistant", "content": "Done.", "weight": 1},
    ]
    report = validate_lines(_lines([{"messages": messages}]), min_examples=0)
    assert report.ok, report.errors


def test_a_file_without_newlines_is_read_in_bounded_chunks(tmp_path):
    path = tmp_path / "one-huge-line.jsonl"
    path.write_bytes(b"x" * 3_000_000)
    report = validate_file(path, max_line_bytes=1_000_000)
    assert [(e.line, e.code) for e in report.errors] == [(None, "too_few_examples"), (1, "line_too_long")]
    assert "3,000,000 bytes" in report.errors[1].message


def test_validate_stream_matches_validate_file():
    data = (CORPUS / "good_chat.jsonl").read_bytes()
    assert validate_stream(io.BytesIO(data)) == validate_file(CORPUS / "good_chat.jsonl")


def test_a_byte_order_mark_and_windows_line_ends_are_accepted():
    lines = [line.replace(b"\n", b"\r\n") for line in _lines([_chat(i) for i in range(10)])]
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    report = validate_lines(lines)
    assert report.ok and report.stats.n_valid == 10


def test_validator_bugs_become_internal_errors_instead_of_exceptions(monkeypatch):
    def broken(*_args):
        raise KeyError("boom")

    monkeypatch.setattr(validate_module, "check_example", broken)
    report = validate_lines(_lines([_chat(1)]), min_examples=0)
    assert [(e.line, e.code) for e in report.errors] == [(1, "internal_error")]
    assert "KeyError" in report.errors[0].message


# --- token statistics with the base model's tokenizer ------------------------------------------------------


def test_token_stats_match_the_training_encoding(smollm2_tokenizer):
    examples = [_chat(i) for i in range(9)] + [_chat(1000)]
    report = validate_lines(_lines(examples), tokenizer=smollm2_tokenizer, context_length=30)

    encodings = [encode_chat(smollm2_tokenizer, e["messages"]) for e in examples]
    totals = [len(e.input_ids) for e in encodings]
    trained = [e.num_trained_tokens for e in encodings]
    stats = report.stats
    assert stats.tokens_per_example.total == sum(totals)
    assert (stats.tokens_per_example.min, stats.tokens_per_example.max) == (min(totals), max(totals))
    assert stats.assistant_tokens_per_example.total == sum(trained)
    # the trained tokens are the answer plus <|im_end|>
    answer_tokens = len(smollm2_tokenizer("2", add_special_tokens=False)["input_ids"])
    assert stats.assistant_tokens_per_example.min == answer_tokens + 1
    assert stats.context_length == 30 and stats.n_over_context == sum(t > 30 for t in totals)
    assert stats.billable_tokens_per_epoch == sum(min(30, t) for t in totals)


def test_examples_over_the_context_are_warned_with_their_token_count(smollm2_tokenizer):
    long_example = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]}
    report = validate_lines(
        _lines([_chat(1), long_example]), tokenizer=smollm2_tokenizer, context_length=64, min_examples=0
    )
    assert report.ok
    [warning] = report.warnings
    assert (warning.line, warning.code) == (2, "example_too_long")
    assert "context is 64" in warning.message
    assert report.stats.n_over_context == 1
    assert report.stats.billable_tokens_per_epoch == report.stats.tokens_per_example.min + 64


def test_dpo_and_completion_token_stats(smollm2_tokenizer):
    dpo = validate_file(CORPUS / "good_dpo.jsonl", tokenizer=smollm2_tokenizer)
    completion = validate_file(CORPUS / "good_completion.jsonl", tokenizer=smollm2_tokenizer)
    # DPO counts the prompt and the preferred output, whose content and <|im_end|> are trained
    first = json.loads((CORPUS / "good_dpo.jsonl").read_text().splitlines()[0])
    preferred = first["preferred_output"][0]["content"]
    expected_trained = len(smollm2_tokenizer(preferred, add_special_tokens=False)["input_ids"]) + 1
    assert dpo.stats.assistant_tokens_per_example.min <= expected_trained <= dpo.stats.assistant_tokens_per_example.max
    # a completion trains on the completion and EOS only
    assert completion.stats.assistant_tokens_per_example.min >= 2
    assert completion.stats.tokens_per_example.total > completion.stats.assistant_tokens_per_example.total
    assert completion.stats.n_over_context is None  # no context length given


def test_template_failures_are_errors_on_their_line(monkeypatch, smollm2_tokenizer):
    def refuse(*_args, **_kwargs):
        raise ValueError("cannot render")

    monkeypatch.setattr(validate_module, "count_tokens", refuse)
    report = validate_lines(_lines([_chat(1)]), tokenizer=smollm2_tokenizer, min_examples=0)
    assert [(e.line, e.code) for e in report.errors] == [(1, "template_error")]
    assert report.stats.n_valid == 0


def test_base_model_name_supplies_tokenizer_and_context(tiny_model):
    report = validate_file(CORPUS / "good_chat.jsonl", base_model=tiny_model)
    assert report.ok
    assert report.stats.context_length == 2048  # the tiny model's max_position_embeddings
    assert report.stats.tokens_per_example.total > 0 and report.stats.n_over_context == 0
