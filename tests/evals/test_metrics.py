"""Every metric on typical answers and edge cases; the LLM judge with a scripted chat function."""

import pytest

from openft.evals.metrics import (
    METRICS,
    JudgeConfig,
    default_metrics,
    embedding_similarity,
    exact_match,
    extract_label,
    get_metric,
    json_field_match,
    json_validity,
    judge_graded,
    judge_pairwise,
    judge_pairwise_many,
    label_accuracy,
    normalize_answer,
    normalized_match,
    parse_grade,
    parse_pairwise,
    score_pairs,
    token_f1,
)


def test_exact_match_ignores_only_surrounding_whitespace():
    assert exact_match("Paris\n", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match("", "Paris") == 0.0


def test_normalization_follows_squad():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalized_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert normalized_match("Don't", "dont") == 1.0
    assert normalized_match("Tokyo", "Kyoto") == 0.0


def test_normalization_handles_unicode():
    assert normalized_match("«Café»", "café") == 1.0
    assert normalized_match("ＡＢＣ", "abc") == 1.0  # full-width letters (NFKC)
    assert normalized_match("東京。", "東京") == 1.0


def test_token_f1_squad_values():
    assert token_f1("the cat sat", "cat sat on the mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P=1, R=2/4
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "cat") == 0.0
    assert token_f1("a the", "an") == 1.0  # only articles: both normalise to nothing


def test_label_accuracy_without_label_set_uses_first_word():
    assert label_accuracy("Positive. The reviewer loved it.", "positive") == 1.0
    assert label_accuracy("The review is positive", "positive") == 0.0  # "review" is the first word
    assert label_accuracy("", "positive") == 0.0


def test_label_accuracy_with_label_set_finds_first_label():
    labels = ["positive", "negative", "very negative"]
    assert label_accuracy("The sentiment is negative, not positive.", "negative", labels) == 1.0
    assert extract_label("Clearly very negative.", labels) == "very negative"  # longest at the same place
    assert label_accuracy("I cannot tell.", "negative", labels) == 0.0


def test_json_validity():
    assert json_validity('{"a": 1}') == 1.0
    assert json_validity('```json\n{"a": 1}\n```') == 1.0
    assert json_validity('```json\n{"a": 1}\n```', strict=True) == 0.0
    assert json_validity("{'a': 1}") == 0.0
    assert json_validity("") == 0.0
    assert json_validity('"just a string"') == 1.0


def test_json_field_match_counts_reference_leaves_by_dotted_path():
    reference = '{"name": "Ada", "address": {"city": "London", "zip": "N1"}, "tags": ["x", "y"]}'
    assert json_field_match(reference, reference) == 1.0
    partial = '{"name": "Ada", "address": {"city": "Paris", "zip": "N1"}, "tags": ["x"], "extra": 1}'
    assert json_field_match(partial, reference) == pytest.approx(3 / 5)  # name, address.zip, tags.0
    assert json_field_match("not json", reference) == 0.0
    assert json_field_match('{"n": 1.0}', '{"n": 1}') == 1.0
    assert json_field_match('{"n": true}', '{"n": 1}') == 0.0
    assert json_field_match('{"city": "Zürich"}', '{"city": "Zürich"}') == 1.0


def test_json_field_match_rejects_an_invalid_reference():
    with pytest.raises(ValueError, match="reference is not valid JSON"):
        json_field_match("{}", "{oops")


def fake_embed(texts):
    # Bag of letters: texts sharing letters point the same way.
    return [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts]


def test_embedding_similarity_with_injected_embedder():
    assert embedding_similarity("abc", "abc", embed=fake_embed) == pytest.approx(1.0)
    assert embedding_similarity("aaa", "zzz", embed=fake_embed) == 0.0
    assert embedding_similarity("", "", embed=fake_embed) == 1.0
    assert embedding_similarity("", "abc", embed=fake_embed) == 0.0


def test_registry_binds_options_and_rejects_unknown_names():
    assert set(METRICS) >= {"exact_match", "token_f1", "json_field_match", "embedding_similarity"}
    metric = get_metric("label_accuracy", labels=["yes", "no"])
    assert metric("I think no.", "no") == 1.0
    assert score_pairs("exact_match", [("a", "a"), ("a", "b")]) == [1.0, 0.0]
    with pytest.raises(KeyError, match="unknown metric 'bleu'"):
        get_metric("bleu")


def test_default_metrics_by_task_shape():
    assert default_metrics(["positive", "negative", "positive", "neutral"]) == ["label_accuracy", "exact_match"]
    assert default_metrics(['{"a": 1}', '{"a": 2}']) == ["json_validity", "json_field_match"]
    long = ["The capital of France is Paris, a city on the Seine.", "Water boils at 100 degrees Celsius."]
    assert default_metrics(long) == ["token_f1", "embedding_similarity"]


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("Good answer.\nRating: [[8]]", 8),
        ("Score: 7/10", 7),
        ('{"score": 9, "reason": "fine"}', 9),
        ("6", 6),
        ("It misses step 2, maybe 3 out of 10. Rating: [[4]]", 4),
        ("The rating is 7.5", 7.5),
        ("I refuse to grade this.", None),
        ("Rating: [[42]]", None),
    ],
)
def test_parse_grade(reply, grade):
    assert parse_grade(reply) == grade


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A is more accurate.\n[[A]]", "A"),
        ("[[C]]", "tie"),
        ("Winner: B", "B"),
        ('{"winner": "tie"}', "tie"),
        ("The winner is a tie.", "tie"),
        ("Answer B is better because it cites the source.", "B"),
        ("B", "B"),
        ("Both have merit.", None),
    ],
)
def test_parse_pairwise(reply, verdict):
    assert parse_pairwise(reply) == verdict


def test_graded_judge_uses_configured_criteria_and_retries_once():
    replies = iter(["Hmm, hard to say.", "Rating: [[10]]"])
    seen = []

    def chat(messages):
        seen.append(messages)
        return next(replies)

    verdict = judge_graded(chat, "2+2?", "4", reference="4", config=JudgeConfig(criteria="arithmetic accuracy"))
    assert verdict.grade == 10 and verdict.score == 1.0
    assert "arithmetic accuracy" in seen[0][1]["content"]
    assert "[Reference answer]\n4" in seen[0][1]["content"]
    assert len(seen) == 2 and seen[1][-1]["role"] == "user"


def test_graded_judge_gives_none_when_it_never_answers_in_format():
    verdict = judge_graded(lambda m: "no idea", "q", "a")
    assert verdict.grade is None and verdict.score is None and verdict.raw == "no idea"


def prefers(answer_text):
    """A judge that picks whichever position holds `answer_text`."""

    def chat(messages):
        prompt = messages[1]["content"]
        a_part = prompt.split("[Answer A]")[1].split("[Answer B]")[0]
        return "[[A]]" if answer_text in a_part else "[[B]]"

    return chat


def test_pairwise_verdict_is_unswapped_to_the_callers_order():
    assert judge_pairwise(prefers("good"), "q", "good", "bad").winner == "a"
    swapped = judge_pairwise(prefers("good"), "q", "good", "bad", swap=True)
    assert swapped.swapped and swapped.winner == "a" and swapped.score == 1.0


def test_pairwise_many_randomises_order_with_a_seed_and_cancels_position_bias():
    items = [("q", "good", "bad", None)] * 20
    verdicts = judge_pairwise_many(prefers("good"), items, seed=1)
    assert all(v.winner == "a" for v in verdicts)
    assert 0 < sum(v.swapped for v in verdicts) < 20
    assert [v.swapped for v in judge_pairwise_many(prefers("good"), items, seed=1)] == [v.swapped for v in verdicts]
    # A judge that always says "first" ends up near 50/50 once the order is randomised.
    always_first = judge_pairwise_many(lambda m: "[[A]]", items, seed=1)
    assert 0 < sum(v.score for v in always_first) < 20
