"""Streaming text: multi-byte characters and stop strings (grammars: tests/serving/test_grammar.py)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from openft.serving.completions import token_string
from openft.serving.detokenize import IncrementalDetokenizer, StopStringFilter, token_bytes


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_incremental_decoding_never_splits_a_multibyte_character(tokenizer):
    text = "Grüße aus Köln 🎉 — 東京タワー!"
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, prompt_tail=tokenizer.encode("Hi:"))
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == tokenizer.decode(ids)
    assert not any("\ufffd" in d for d in deltas)


def test_a_character_cut_by_the_token_budget_is_dropped_not_shown_as_replacement_char(tokenizer):
    ids = tokenizer.encode("ok 🎉")  # the emoji takes several byte-level tokens
    detok = IncrementalDetokenizer(tokenizer, prompt_tail=[])
    text = "".join(detok.push(i) for i in ids[:-1]) + detok.flush()  # budget ends one token early
    assert text == "ok " or text == "ok"
    assert "\ufffd" not in text


def test_token_bytes_rebuild_the_text_and_partial_tokens_show_as_bytes(tokenizer):
    text = "Köln 🎉 東京"
    ids = tokenizer.encode(text)
    assert b"".join(token_bytes(tokenizer, i) for i in ids).decode("utf-8") == text
    partial = [i for i in ids if "\ufffd" in tokenizer.decode([i])]
    assert partial, "the sample should split a character across tokens"
    for token_id in partial:
        shown = token_string(tokenizer, token_id)
        assert shown.startswith("bytes:\\x") and "\ufffd" not in shown


def test_stop_string_spanning_pushes_is_cut_and_prefixes_are_held_back():
    stops = StopStringFilter(["</end>"])
    assert stops.push("hello <") == "hello "  # "<" might start the stop string
    assert stops.push("/en") == ""
    assert stops.push("d> more") == ""
    assert stops.stopped
    assert stops.flush() == ""


def test_held_back_text_is_released_when_it_is_not_a_stop_string():
    stops = StopStringFilter(["###"])
    assert stops.push("a #") == "a "
    assert stops.push("b") == "#b"
    assert stops.push("##") == ""
    assert stops.flush() == "##"
