import pytest

from openft.evals.runner import EvalCancelled, EvalSettings, JudgeSettings, run_evaluation
from tests.evals.fakes import FakeChat, fake_embed, held_out_examples, train_examples

FT = "ft:base:acme::abc12345"


def run(chat=None, judge_chat=None, **overrides):
    options = {
        "base_model": "base",
        "strategies": ["zero-shot", "few-shot", "retrieval-few-shot", "fine-tuned"],
        "fine_tuned_models": [FT],
        "k": 2,
        **overrides,
    }
    return run_evaluation(
        EvalSettings(**options),
        held_out_examples(),
        train_examples(),
        chat or FakeChat(),
        embed=fake_embed,
        judge_chat=judge_chat,
    )


def by_name(results):
    return {s["name"]: s for s in results["strategies"]}


def test_every_strategy_answers_the_same_examples_and_the_ranking_follows_quality():
    results = run()
    strategies = by_name(results)
    assert results["metrics"] == ["label_accuracy", "exact_match"]  # chosen from the label-shaped references
    assert results["ranking"][0] == FT
    assert strategies[FT]["quality"]["label_accuracy"]["mean"] == 1.0
    assert strategies["zero-shot"]["quality"]["label_accuracy"]["mean"] == 0.0  # answers "neutral"
    # retrieval shows a similar training example, so the copying base model gets every example right
    assert strategies["retrieval-few-shot"]["quality"]["label_accuracy"]["mean"] == 1.0
    q = strategies["few-shot"]["quality"]["label_accuracy"]
    assert q["low"] <= q["mean"] <= q["high"] and q["method"] == "wilson" and q["n"] == 4
    assert all(len(s["predictions"]) == 4 for s in results["samples"])


def test_tokens_come_from_the_reported_usage_and_few_shot_costs_more_prompt_tokens():
    chat = FakeChat()
    results = run(chat)
    strategies = by_name(results)
    few_shot_calls = [m for model, m in chat.calls if model == "base" and len(m) > 2][:4]
    expected = sum(sum(len(x["content"].split()) for x in m) for m in few_shot_calls) / 4
    assert strategies["few-shot"]["prompt_tokens"]["mean"] == pytest.approx(expected)
    assert strategies[FT]["prompt_tokens"]["mean"] == strategies["zero-shot"]["prompt_tokens"]["mean"]
    assert strategies["few-shot"]["prompt_tokens"]["mean"] > 2 * strategies[FT]["prompt_tokens"]["mean"]
    assert strategies[FT]["completion_tokens"]["mean"] == 1


def test_latency_percentiles_per_strategy():
    latency = by_name(run())[FT]["latency_s"]
    # fake latency = 10 ms + 1 ms per prompt word; the held-out prompts have 9 to 11 words
    assert 0.019 <= latency["p50"] <= latency["p95"] <= 0.0211


def test_a_failed_request_is_counted_and_scored_zero_without_stopping_the_run():
    results = run(FakeChat(fail_on="Great phone"))
    ft = by_name(results)[FT]
    assert ft["n_errors"] == 1 and "engine overloaded" in ft["errors"][0]
    assert ft["quality"]["label_accuracy"]["mean"] == 0.75
    assert ft["prompt_tokens"] is not None  # the other three requests still measured


def test_progress_is_reported_and_cancellation_stops_between_requests():
    seen = []
    settings = EvalSettings(base_model="base", strategies=["zero-shot"], k=0)
    run_evaluation(settings, held_out_examples(), [], FakeChat(), on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    chat = FakeChat()
    with pytest.raises(EvalCancelled):
        run_evaluation(settings, held_out_examples(), [], chat, should_stop=lambda: len(chat.calls) >= 2)
    assert len(chat.calls) == 2


def test_graded_judge_scores_each_prediction():
    asked = []

    def judge(messages):
        asked.append(messages[-1]["content"])
        return "Rating: [[10]]" if "positive" in messages[-1]["content"].split("[Assistant's answer]")[1] else "[[1]]"

    results = run(judge_chat=judge, judge=JudgeSettings(model="judge"), metrics=["exact_match"])
    assert results["metrics"] == ["exact_match", "llm_judge"]
    ft = by_name(results)[FT]["quality"]["llm_judge"]
    assert ft["mean"] == pytest.approx(0.5)  # half the references are positive
    assert len(asked) == 4 * 4


def test_pairwise_judge_compares_each_strategy_with_the_baseline():
    def judge(messages):
        prompt = messages[-1]["content"]
        a = prompt.split("[Answer A]")[1].split("[Answer B]")[0].strip()
        return "[[B]]" if a == "neutral" else "[[A]]"

    results = run(judge_chat=judge, judge=JudgeSettings(model="judge", mode="pairwise"), metrics=["exact_match"])
    ft = by_name(results)[FT]["quality"]["llm_judge"]
    assert ft["mean"] == 1.0  # always beats zero-shot's "neutral", whichever order the judge saw
    assert by_name(results)["zero-shot"]["quality"]["llm_judge"]["mean"] == 0.5


def test_unknown_metrics_and_a_judge_metric_without_a_judge_are_refused():
    with pytest.raises(ValueError, match="unknown metrics"):
        run(metrics=["bleu"])
    with pytest.raises(ValueError, match="needs judge settings"):
        run(metrics=["llm_judge"])
