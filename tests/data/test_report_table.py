"""The human-readable report printed by `openft validate`."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from openft.data import validate_file
from openft.data.report_table import render_report

CORPUS = Path(__file__).parent / "corpus"


def _render(report) -> str:
    console = Console(width=200, record=True, color_system=None)
    render_report(report, console)
    return console.export_text()


def test_errors_show_line_code_field_and_message():
    text = _render(validate_file(CORPUS / "tool_call_arguments_invalid_json.jsonl"))
    row = next(line for line in text.splitlines() if "tool_call_arguments_invalid_json" in line)
    assert "11" in row and "messages[1].tool_calls[0].function.arguments" in row and "not valid JSON" in row
    assert "INVALID 1 error" in text


def test_stats_and_verdict_for_a_good_file(smollm2_tokenizer):
    text = _render(validate_file(CORPUS / "good_chat.jsonl", tokenizer=smollm2_tokenizer, context_length=2048))
    for label in ("valid examples", "billable tokens per epoch", "trained tokens", "OpenAI tokens (o200k_base)"):
        assert label in text
    assert "OK Valid chat file: 11 examples" in text
