"""Paired comparisons in the advisor and the report: a margin that overlapping intervals miss and McNemar finds.

The held-out topic task from issue 11: retrieval few-shot 0.86 against fine-tuned 0.80 on 100 items. The Wilson
intervals overlap, so the old rule took the cheaper fine-tuned model as "within its CI". On the same items,
fine-tuning misses 6 items retrieval gets right and gets none right that retrieval misses: McNemar's exact test
gives p = 2 x 0.5^6 = 0.031, and the advisor must keep retrieval few-shot and say why.
"""

import pytest

from openft.evals.advisor import AdviceSettings, advise, advisor_inputs
from openft.evals.report import build_report, to_html, to_markdown
from openft.evals.stats import mean_ci
from openft.pricing import recommend

FT = "ft:base:acme::abc12345"
N = 100


def _strategy(name, kind, scores, prompt_tokens, latency, fine_tuned=False):
    e = mean_ci(scores)
    return {
        "name": name,
        "kind": kind,
        "model": FT if fine_tuned else "base",
        "fine_tuned": fine_tuned,
        "n_requests": N,
        "n_errors": 0,
        "errors": [],
        "quality": {"exact_match": {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n, "method": e.method}},
        "prompt_tokens": {"mean": prompt_tokens, "p50": prompt_tokens, "p95": prompt_tokens},
        "completion_tokens": {"mean": 5.0, "p50": 5.0, "p95": 5.0},
        "latency_s": {"mean": latency, "p50": latency, "p95": latency},
    }


def topic_results():
    retrieval = [1] * 86 + [0] * 14
    tuned = [1] * 80 + [0] * 20  # items 81-86: retrieval right, fine-tuned wrong
    labels = ["sports" if i % 2 else "politics" for i in range(N)]

    def prediction(score, label):
        return {"text": label if score else "weather", "error": None, "scores": {"exact_match": float(score)}}

    samples = [
        {
            "input": f"headline number {i + 1}",
            "reference": labels[i],
            "predictions": {
                "retrieval-few-shot": prediction(retrieval[i], labels[i]),
                FT: prediction(tuned[i], labels[i]),
            },
        }
        for i in range(N)
    ]
    return {
        "version": 1,
        "base_model": "base",
        "k": 3,
        "n_examples": N,
        "n_training_examples": 200,
        "metrics": ["exact_match"],
        "primary_metric": "exact_match",
        "few_shot_examples": [],
        "strategies": [
            _strategy("retrieval-few-shot", "retrieval-few-shot", retrieval, 900.0, 2.0),
            _strategy(FT, "fine-tuned", tuned, 60.0, 0.4, fine_tuned=True),
        ],
        "ranking": ["retrieval-few-shot", FT],
        "samples": samples,
        "training": {"trained_tokens": 50_000, "seconds": 60.0, "job_id": "ftjob-abc"},
    }


@pytest.fixture
def results(openft_home):
    return topic_results()


def test_intervals_overlap_so_the_old_rule_took_the_cheaper_fine_tune(results):
    rfs, ft = (s["quality"]["exact_match"] for s in results["strategies"])
    assert ft["high"] > rfs["low"] and ft["mean"] >= rfs["low"]  # the interval rule sees no difference
    settings = AdviceSettings(requests_per_day=100_000)
    inputs = advisor_inputs(results, settings, comparisons=[])  # no paired test: intervals only
    assert recommend(inputs, "hosted").choice == FT


def test_mcnemar_detects_the_margin_and_the_recommendation_says_so(results):
    advice = advise(results, AdviceSettings(requests_per_day=100_000))
    (pair,) = advice["comparisons"]
    assert pair["method"] == "mcnemar-exact" and pair["a_better"] == 6 and pair["b_better"] == 0
    assert pair["p_value"] == pytest.approx(0.03125) and pair["significant"]
    for deployment in ("local", "hosted"):
        rec = advice["recommendations"][deployment]
        assert rec["choice"] == "retrieval-few-shot", rec
        text = " ".join(rec["reasons"])
        assert "significantly better" in text and "McNemar" in text and "p = 0.0312" in text
        assert "within its CI and cheaper" not in text
    assert advice["recommendations"]["hosted"]["headline"].startswith("Prompting is better here")


def test_not_significant_when_the_flips_cancel_out(results):
    # Same means, but fine-tuned now also wins 4 items: 6 against 4 discordant items is no evidence.
    for i in range(4):
        results["samples"][90 + i]["predictions"][FT]["scores"]["exact_match"] = 1.0
    advice = advise(results, AdviceSettings(requests_per_day=100_000))
    assert not advice["comparisons"][0]["significant"]
    rec = advice["recommendations"]["hosted"]
    assert rec["choice"] == FT and "no significant difference" in " ".join(rec["reasons"])


def test_report_lists_the_items_each_strategy_gets_right_that_the_other_misses(results):
    report = build_report(results, advise(results, AdviceSettings(requests_per_day=100_000)), {"id": "eval-1"})
    md = to_markdown(report)
    assert "## Paired comparisons (same items)" in md
    assert "retrieval-few-shot is significantly better than " + FT in md
    assert "Items retrieval-few-shot gets right and " + FT + " misses:" in md
    for item in range(81, 87):
        assert f"headline number {item} " in md  # the flipped items' texts
    assert "headline number 80 " not in md  # both right: not a flip
    html = to_html(report)
    assert 'class="flips"' in html and "headline number 83" in html
