"""Each grader type with hand-checked scores, the template namespaces, the formula language, and grader JSON
mistakes named by field."""

from __future__ import annotations

import pytest

from openft.graders import GraderSpecError, JudgeReply, check_grader, grade
from openft.graders.formula import FormulaError, evaluate, parse


def run(spec, output, item=None, **kwargs):
    return grade(check_grader(spec), output, item or {}, **kwargs)


def string_check(operation, reference="{{item.answer}}"):
    return {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": reference,
            "operation": operation}  # fmt: skip


@pytest.mark.parametrize(
    ("operation", "output", "expected"),
    [("eq", "Paris", 1.0), ("eq", "paris", 0.0), ("ne", "Lyon", 1.0), ("ne", "Paris", 0.0),
     ("like", "It is Paris.", 1.0), ("like", "It is PARIS.", 0.0), ("ilike", "It is PARIS.", 1.0),
     ("ilike", "Lyon", 0.0)],
)  # fmt: skip
def test_string_check_operations(operation, output, expected):
    result = run(string_check(operation), output, {"answer": "Paris"})
    assert result.reward == expected and not result.errored


def similarity(metric):
    return {"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}", "reference": "{{item.ref}}",
            "evaluation_metric": metric}  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "output", "reference", "expected"),
    [
        ("fuzzy_match", "hallo", "hello", 0.8),  # Indel distance 2 over 10 characters
        ("bleu", "the quick brown fox jumps", "the quick brown fox jumps", 1.0),
        ("bleu", "alpha beta gamma delta", "one two three four", 0.0),
        # 5 of 6 unigrams shared both ways: P = R = F = 5/6
        ("rouge_1", "the cat sat on a mat", "the cat sat on the mat", 5 / 6),
        # bigrams: hyp {the cat, cat sat, sat on, on a, a mat}, ref {..., on the, the mat}: 3 of 5 each way
        ("rouge_2", "the cat sat on a mat", "the cat sat on the mat", 3 / 5),
        ("rouge_5", "the cat sat on a mat", "the cat sat on the mat", 0.0),  # 5-grams: none shared
        # longest common subsequence "the cat sat on mat" = 5 of 6
        ("rouge_l", "the cat sat on a mat", "the cat sat on the mat", 5 / 6),
        # GLEU: matching 1..4-grams 5+3+2+1 = 11 of 18 in both hypothesis and reference
        ("gleu", "the cat sat on a mat", "the cat sat on the mat", 11 / 18),
        # METEOR (exact stage): m=5, P=1, R=5/6, Fmean=PR/(0.9P+0.1R); 2 chunks of 5 -> penalty 0.5*(2/5)^3
        ("meteor", "the cat sat on mat", "the cat sat on a mat",
         (5 / 6) / (0.9 + 0.1 * 5 / 6) * (1 - 0.5 * 0.4**3)),
        ("meteor", "cats running", "cat runs", 1 - 0.5 * 0.5**3),  # Porter stems match: m=2, 1 chunk of 2
    ],
)  # fmt: skip
def test_text_similarity_metrics(metric, output, reference, expected):
    result = run(similarity(metric), output, {"ref": reference})
    assert result.reward == pytest.approx(expected, abs=1e-4), result.reason
    assert not result.errored


def test_cosine_uses_the_embedder():
    vectors = {"a": [1.0, 0.0], "b": [0.6, 0.8]}
    result = run(similarity("cosine"), "a", {"ref": "b"}, embedder=lambda: lambda texts: [vectors[t] for t in texts])
    assert result.reward == pytest.approx(0.6)


def test_cosine_with_the_bundled_embedding_model():
    same = run(similarity("cosine"), "The cat sleeps on the sofa.", {"ref": "The cat sleeps on the sofa."})
    close = run(similarity("cosine"), "A cat is sleeping on the couch.", {"ref": "The cat sleeps on the sofa."})
    far = run(similarity("cosine"), "Quarterly revenue grew by 8%.", {"ref": "The cat sleeps on the sofa."})
    assert same.reward == pytest.approx(1.0, abs=1e-4)
    assert close.reward > 0.6 > far.reward


def test_templates_read_item_and_sample_json():
    spec = {"type": "string_check", "name": "json", "input": "{{sample.output_json.city}}",
            "reference": "{{item.expected.city}}", "operation": "eq"}  # fmt: skip
    assert run(spec, '{"city": "Oslo"}', {"expected": {"city": "Oslo"}}).reward == 1.0
    not_json = run(spec, "Oslo", {"expected": {"city": "Oslo"}})
    assert not_json.errors["sample_parse_error"] and not_json.reward == 0.0
    missing = run(spec, '{"city": "Oslo"}', {"other": 1})
    assert missing.errors["invalid_variable_error"]


def judge_replying(text, usage=None):
    calls = []

    def judge(model, messages, sampling):
        calls.append((model, messages, sampling))
        return JudgeReply(text, usage or {"prompt_tokens": 10, "completion_tokens": 2})

    return judge, calls


SCORE = {"type": "score_model", "name": "judge", "model": "judge-model", "range": [1, 5],
         "input": [{"role": "user", "content": "Rate {{sample.output_text}} for {{item.q}}"}]}  # fmt: skip


def test_score_model_reads_the_judges_score_and_counts_tokens():
    judge, calls = judge_replying('{"result": 4}')
    result = run(SCORE, "an answer", {"q": "question"}, judge=judge)
    assert result.reward == 4.0 and not result.errored
    assert calls[0][1][0] == {"role": "user", "content": "Rate an answer for question"}
    assert result.usage_per_model["judge-model"]["total_tokens"] == 12
    assert result.wire()["model_grader_token_usage_per_model"]["judge-model"]["invocation_count"] == 1


def test_score_model_reports_an_unreadable_or_out_of_range_reply():
    assert run(SCORE, "x", {"q": "q"}, judge=judge_replying("no idea")[0]).errors["model_grader_parse_error"]
    assert run(SCORE, "x", {"q": "q"}, judge=judge_replying('{"result": 9}')[0]).errors["model_grader_parse_error"]

    def broken(*_args):
        raise ConnectionError("judge down")

    failed = run(SCORE, "x", {"q": "q"}, judge=broken)
    assert failed.errors["model_grader_server_error"] and "judge down" in failed.errors[
        "model_grader_server_error_details"]


LABEL = {"type": "label_model", "name": "tone", "model": "judge-model", "labels": ["positive", "negative", "neutral"],
         "passing_labels": ["positive"], "input": [{"role": "user", "content": "Tone of: {{sample.output_text}}"}]}


@pytest.mark.parametrize(("reply", "expected"), [('{"result": "positive"}', 1.0), ("Negative", 0.0),
                                                 ("The tone is neutral.", 0.0)])
def test_label_model_passes_only_passing_labels(reply, expected):
    result = run(LABEL, "great!", judge=judge_replying(reply)[0])
    assert result.reward == expected and not result.errored


def test_python_grader_scores_in_a_child_process():
    source = "def grade(sample, item):\n    return 1.0 if sample['output_json']['n'] == item['n'] else 0.25\n"
    spec = {"type": "python", "name": "py", "source": source}
    assert run(spec, '{"n": 3}', {"n": 3}).reward == 1.0
    assert run(spec, '{"n": 4}', {"n": 3}).reward == 0.25
    crashing = run({"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1 / 0\n"}, "x")
    assert crashing.errors["python_grader_runtime_error"]
    assert "ZeroDivisionError" in crashing.errors["python_grader_runtime_error_details"]
    assert crashing.wire()["metadata"]["errors"]["python_grader_runtime_error"] is True


def test_python_graders_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("OPENFT_PYTHON_GRADERS", "0")
    result = run({"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1\n"}, "x")
    assert result.errors["python_grader_server_error"] and result.reward == 0.0


def test_multi_grader_combines_scores_with_a_formula():
    spec = {"type": "multi", "name": "m", "calculate_output": "0.5 * exact + 0.5 * fuzzy ^ 2",
            "graders": {"exact": string_check("eq"), "fuzzy": similarity("fuzzy_match")}}  # fmt: skip
    result = run(spec, "hallo", {"answer": "hello", "ref": "hello"})
    assert result.sub_rewards == {"exact": 0.0, "fuzzy": pytest.approx(0.8)}
    assert result.reward == pytest.approx(0.5 * 0.8**2)
    assert result.wire()["sub_rewards"]["fuzzy"] == pytest.approx(0.8)


@pytest.mark.parametrize("formula", ["__import__('os').system('id')", "a.__class__", "[a]", "a if a else 1",
                                     "open('x')", "lambda: 1", "a; 1", "'text'"])
def test_formulas_outside_the_whitelist_are_refused(formula):
    with pytest.raises(FormulaError):
        parse(formula, ["a"])


def test_formula_functions_and_errors():
    assert evaluate(parse("max(a, b) + sqrt(4) - abs(-1) + floor(1.7)", ["a", "b"]), {"a": 0.2, "b": 0.7}) == 2.7
    with pytest.raises(FormulaError):
        evaluate(parse("a / b", ["a", "b"]), {"a": 1, "b": 0})
    with pytest.raises(FormulaError):
        evaluate(parse("10 ^ 10 ^ 10", []), {})  # overflows as a float instead of building a huge integer


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ({"type": "string_check", "name": "s", "input": "x", "reference": "y", "operation": "regex"},
         "grader.operation"),
        ({"type": "string_check", "name": "s", "input": "x", "operation": "eq"}, "grader.reference"),
        ({"type": "text_similarity", "name": "t", "input": "x", "reference": "y", "evaluation_metric": "bertscore"},
         "grader.evaluation_metric"),
        ({"type": "python", "name": "p", "source": "def grade(:"}, "grader.source"),
        ({"type": "python", "name": "p", "source": "x = 1"}, "grader.source"),
        ({**SCORE, "range": [5, 1]}, "grader.range"),
        ({**SCORE, "sampling_params": {"reasoning_effort": "high"}}, "grader.sampling_params.reasoning_effort"),
        ({**LABEL, "passing_labels": ["great"]}, "grader.passing_labels"),
        ({**LABEL, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "grader.input[0].content[0].type"),
        ({"type": "multi", "name": "m", "calculate_output": "a + b", "graders": {"a": string_check("eq")}},
         "grader.calculate_output"),
        ({"type": "multi", "name": "m", "calculate_output": "a", "graders": {"a": {"type": "nope", "name": "a"}}},
         "grader.graders.a.type"),
        ({"type": "string_check", "name": "s", "input": "{{env.HOME}}", "reference": "y", "operation": "eq"},
         "grader.input"),
        ({"type": "string_check", "name": "s", "input": "x", "reference": "y", "operation": "eq", "extra": 1},
         "grader.extra"),
        ({"type": "webhook", "name": "w"}, "grader.type"),
    ],
)  # fmt: skip
def test_bad_grader_json_names_the_field(spec, param):
    with pytest.raises(GraderSpecError) as error:
        check_grader(spec)
    assert error.value.param == param
