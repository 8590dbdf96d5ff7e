"""Streaming text: multi-byte characters, stop strings, and the JSON-object grammar."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from openft.serving.detokenize import IncrementalDetokenizer, StopStringFilter
from openft.serving.json_constraint import INITIAL_STATE, closing_text, is_complete, walk


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


@pytest.mark.parametrize(
    "document",
    ['{"a": [1, -2.5e3, true, null, "x\\u00e9\\n"], "b": {"c": {}}}', "{}", ' {"k" :[ ] }'],
)
def test_json_automaton_accepts_valid_objects(document):
    state = walk(INITIAL_STATE, document)
    assert state is not None and is_complete(state)


@pytest.mark.parametrize("document", ["[1]", '{"a" 1}', '{"a": tru}', '{"a": 01}', '{"a": 1,}', "{} x"])
def test_json_automaton_rejects_invalid_text(document):
    state = walk(INITIAL_STATE, document)
    assert state is None or not is_complete(state)


@pytest.mark.parametrize("prefix", ['{"a', '{"a": [1, {"b": tr', '{"x": -', '{"s": "\\u00', '{"k": 1.', "{", ""])
def test_closing_text_completes_any_prefix_into_a_parseable_object(prefix):
    state = walk(INITIAL_STATE, prefix)
    assert isinstance(json.loads(prefix + closing_text(state)), dict)
