"""Run every strategy on the same examples and measure quality, tokens and latency.

Pure apart from the model calls: the caller passes the examples, a ChatFn and (optionally) an embedder, so
tests use a deterministic fake and the worker uses the serving engine (openft.evals.jobs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from openft.evals import metrics as metric_lib
from openft.evals.chat import ChatFn, ChatReply
from openft.evals.examples import EvalExample
from openft.evals.stats import mean_ci, summarize
from openft.evals.strategies import Embedder, NearestExamples, Strategy, build_messages, fixed_shots, plan_strategies

JUDGE_METRIC = "llm_judge"
REPORT_VERSION = 1


class EvalCancelled(Exception):
    """The run was cancelled between two requests."""


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    mode: Literal["graded", "pairwise"] = "graded"
    criteria: str | None = None  # None: openft.evals.metrics.DEFAULT_CRITERIA
    baseline: str = "zero-shot"  # pairwise: every strategy is compared against this one
    seed: int = 0  # pairwise: seeds the random order the two answers are shown in


@dataclass(frozen=True)
class EvalSettings:
    base_model: str
    strategies: Sequence[str] = ("zero-shot", "few-shot", "retrieval-few-shot", "fine-tuned")
    fine_tuned_models: Sequence[str] = ()
    k: int = 3
    metrics: Sequence[str] | None = None  # None: chosen by the references' shape (metrics.default_metrics)
    labels: Sequence[str] | None = None  # label_accuracy's label set; None: the distinct references
    max_tokens: int = 256
    seed: int = 0
    external_model: str | None = None
    judge: JudgeSettings | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)  # passed to every model call


def known_metrics() -> list[str]:
    return [*metric_lib.METRICS, JUDGE_METRIC]


def check_metrics(names: Sequence[str], has_judge: bool) -> None:
    unknown = [n for n in names if n not in known_metrics()]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(known_metrics())}")
    if JUDGE_METRIC in names and not has_judge:
        raise ValueError(f"the {JUDGE_METRIC} metric needs judge settings (at least the judge model)")


def choose_metrics(settings: EvalSettings, examples: Sequence[EvalExample]) -> list[str]:
    names = list(settings.metrics) if settings.metrics else metric_lib.default_metrics([e.reference for e in examples])
    if settings.judge is not None and JUDGE_METRIC not in names:
        names.append(JUDGE_METRIC)
    check_metrics(names, settings.judge is not None)
    return names


def _record(reply: ChatReply | None, error: str | None) -> dict[str, Any]:
    if reply is None:
        return {"text": "", "prompt_tokens": None, "completion_tokens": None, "latency_s": None, "error": error}
    return {
        "text": reply.text,
        "prompt_tokens": reply.usage["prompt_tokens"],
        "completion_tokens": reply.usage["completion_tokens"],
        "latency_s": reply.latency_s,
        "error": None,
    }


def _distribution(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    d = summarize(values)
    return {"mean": d.mean, "p50": d.p50, "p95": d.p95}


def _estimate(scores: list[float], seed: int) -> dict[str, Any] | None:
    if not scores:
        return None
    e = mean_ci(scores, seed=seed)
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n, "method": e.method}


class _Scorer:
    """Scores predictions with the chosen metrics; the LLM judge needs the whole column at once (pairwise)."""

    def __init__(self, settings: EvalSettings, names: list[str], examples: Sequence[EvalExample], embed, judge_chat):
        self.settings, self.names, self.examples = settings, names, examples
        labels = settings.labels or sorted({e.reference for e in examples})
        self.options: dict[str, dict[str, Any]] = {"label_accuracy": {"labels": labels}}
        if embed is not None:
            self.options["embedding_similarity"] = {"embed": embed}
        self.judge_chat = judge_chat

    def score(self, strategy: str, predictions: dict[str, list[dict[str, Any]]]) -> dict[str, list[float | None]]:
        column = predictions[strategy]
        scores: dict[str, list[float | None]] = {}
        for name in self.names:
            if name == JUDGE_METRIC:
                scores[name] = self._judge(strategy, predictions)
                continue
            metric = metric_lib.get_metric(name, **self.options.get(name, {}))
            scores[name] = [
                0.0 if rec["error"] else metric(rec["text"], ex.reference)
                for rec, ex in zip(column, self.examples, strict=True)
            ]
        return scores

    def _judge(self, strategy: str, predictions: dict[str, list[dict[str, Any]]]) -> list[float | None]:
        judge = self.settings.judge
        assert judge is not None and self.judge_chat is not None
        config = metric_lib.JudgeConfig(criteria=judge.criteria or metric_lib.DEFAULT_CRITERIA)
        ask = self.judge_chat
        if judge.mode == "graded":
            return [
                metric_lib.judge_graded(ask, ex.user_input, rec["text"], ex.reference, config).score
                for rec, ex in zip(predictions[strategy], self.examples, strict=True)
            ]
        if judge.baseline not in predictions:
            raise ValueError(f"pairwise judging needs the baseline strategy {judge.baseline!r} in the run")
        if strategy == judge.baseline:
            return [0.5] * len(self.examples)  # a tie with itself, by definition
        items = [
            (ex.user_input, rec["text"], base["text"], ex.reference)
            for rec, base, ex in zip(predictions[strategy], predictions[judge.baseline], self.examples, strict=True)
        ]
        return [v.score for v in metric_lib.judge_pairwise_many(ask, items, config, seed=judge.seed)]


def run_evaluation(
    settings: EvalSettings,
    examples: Sequence[EvalExample],
    train: Sequence[EvalExample],
    chat: ChatFn,
    *,
    external_chat: ChatFn | None = None,
    judge_chat: Callable[[list[dict[str, str]]], str] | None = None,
    embed: Embedder | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run the strategies on `examples` and return the results (JSON-ready; see docs/evaluation.md)."""
    plan = plan_strategies(
        settings.strategies, settings.base_model, settings.fine_tuned_models, settings.external_model
    )
    names = choose_metrics(settings, examples)
    needs_embedder = any(s.kind == "retrieval-few-shot" for s in plan) or "embedding_similarity" in names
    if needs_embedder and embed is None:
        from openft.evals.embeddings import load_embedder

        embed = load_embedder()
    shots = fixed_shots(train, settings.k, settings.seed)
    retriever = NearestExamples(train, embed) if any(s.kind == "retrieval-few-shot" for s in plan) else None

    total, done = len(plan) * len(examples), 0
    predictions: dict[str, list[dict[str, Any]]] = {}
    for strategy in plan:
        call = external_chat if strategy.kind == "external" else chat
        if call is None:
            raise ValueError("the external strategy needs an external ChatFn")
        column = []
        for example in examples:
            if should_stop is not None and should_stop():
                raise EvalCancelled()
            messages = build_messages(strategy, example, k=settings.k, shots=shots, retriever=retriever)
            try:
                reply = call(strategy.model, messages, max_tokens=settings.max_tokens, **settings.extra_params)
                column.append(_record(reply, None))
            except Exception as exc:  # one failed request is a data point (an error), not a failed run
                column.append(_record(None, f"{type(exc).__name__}: {exc}"))
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        predictions[strategy.name] = column

    scorer = _Scorer(settings, names, examples, embed, judge_chat)
    strategies = [_summarize(s, predictions[s.name], scorer.score(s.name, predictions), settings.seed) for s in plan]
    return {
        "version": REPORT_VERSION,
        "base_model": settings.base_model,
        "k": settings.k,
        "n_examples": len(examples),
        "n_training_examples": len(train),
        "metrics": names,
        "primary_metric": names[0],
        "few_shot_examples": [e.user_input for e in shots],
        "strategies": strategies,
        "ranking": rank(strategies, names[0]),
        "samples": _samples(examples, plan, predictions, strategies),
    }


def _summarize(strategy: Strategy, column: list[dict[str, Any]], scores: dict, seed: int) -> dict[str, Any]:
    ok = [r for r in column if not r["error"]]
    return {
        "name": strategy.name,
        "kind": strategy.kind,
        "model": strategy.model,
        "fine_tuned": strategy.fine_tuned,
        "n_requests": len(column),
        "n_errors": len(column) - len(ok),
        "errors": sorted({r["error"] for r in column if r["error"]})[:5],
        "quality": {name: _estimate([s for s in values if s is not None], seed) for name, values in scores.items()},
        "prompt_tokens": _distribution([r["prompt_tokens"] for r in ok]),
        "completion_tokens": _distribution([r["completion_tokens"] for r in ok]),
        "latency_s": _distribution([r["latency_s"] for r in ok]),
        "_scores": scores,
    }


def rank(strategies: list[dict[str, Any]], metric: str) -> list[str]:
    """Best quality first; at equal quality, fewer prompt tokens first."""

    def key(s: dict[str, Any]) -> tuple[float, float]:
        quality = s["quality"].get(metric)
        tokens = s["prompt_tokens"]["mean"] if s["prompt_tokens"] else float("inf")
        return (-(quality["mean"] if quality else -1.0), tokens)

    return [s["name"] for s in sorted(strategies, key=key)]


def _samples(examples, plan, predictions, strategies) -> list[dict[str, Any]]:
    scores = {s["name"]: s.pop("_scores") for s in strategies}
    return [
        {
            "input": ex.user_input,
            "reference": ex.reference,
            "predictions": {
                s.name: {**predictions[s.name][i], "scores": {m: v[i] for m, v in scores[s.name].items()}} for s in plan
            },
        }
        for i, ex in enumerate(examples)
    ]
