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
from openft.evals.chunking import MAX_WORDS, OVERLAP_WORDS, Chunk
from openft.evals.examples import EvalExample
from openft.evals.forgetting import CheckCancelled, ForgettingSettings, GeneralScorer, run_check
from openft.evals.rag import DEFAULT_RAG_K, PassageIndex
from openft.evals.stats import mean_ci, summarize
from openft.evals.strategies import (
    Embedder,
    NearestExamples,
    Strategy,
    build_messages,
    fixed_shots,
    plan_strategies,
    tool_params,
)
from openft.evals.tool_calls import DEFAULT_TOOL_METRICS, TOOL_METRICS, calls_from_text, render_calls, score_tool_calls

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
    rag_k: int = DEFAULT_RAG_K  # passages retrieved per question by the RAG strategies
    tool_choice: Any = "auto"  # sent with the example's tools ("auto", "required" or a named function)
    rival_models: Sequence[str] = ()  # other base models of the registry run as "rival:<model>" strategies
    forgetting: ForgettingSettings = ForgettingSettings()  # the general-set check of fine-tuned models


def known_metrics() -> list[str]:
    return [*metric_lib.METRICS, *TOOL_METRICS, JUDGE_METRIC]


def check_metrics(names: Sequence[str], has_judge: bool) -> None:
    unknown = [n for n in names if n not in known_metrics()]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(known_metrics())}")
    if JUDGE_METRIC in names and not has_judge:
        raise ValueError(f"the {JUDGE_METRIC} metric needs judge settings (at least the judge model)")


def choose_metrics(settings: EvalSettings, examples: Sequence[EvalExample]) -> list[str]:
    if settings.metrics:
        names = list(settings.metrics)
    elif any(e.tool_calls for e in examples):  # held-out examples that expect tool calls: tool-call accuracy
        names = list(DEFAULT_TOOL_METRICS)
    else:
        names = metric_lib.default_metrics([e.reference for e in examples])
    if settings.judge is not None and JUDGE_METRIC not in names:
        names.append(JUDGE_METRIC)
    check_metrics(names, settings.judge is not None)
    return names


def _record(reply: ChatReply | None, error: str | None) -> dict[str, Any]:
    if reply is None:
        return {"text": "", "prompt_tokens": None, "completion_tokens": None, "latency_s": None, "error": error,
                "tool_calls": None}
    text = reply.text
    if reply.tool_calls:  # shown as `name({...})` after any text, so reports and flips show what was called
        text = " ".join(filter(None, [text.strip(), render_calls(reply.tool_calls)]))
    return {
        "text": text,
        "prompt_tokens": reply.usage["prompt_tokens"],
        "completion_tokens": reply.usage["completion_tokens"],
        "latency_s": reply.latency_s,
        "error": None,
        "tool_calls": reply.tool_calls,
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
            if name in TOOL_METRICS:  # a model that wrote a <tool_call> block as text is read too
                scores[name] = [
                    0.0 if rec["error"] else score_tool_calls(
                        name, rec.get("tool_calls") or calls_from_text(rec["text"]), ex.tool_calls)
                    for rec, ex in zip(column, self.examples, strict=True)
                ]
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
    passages: Sequence[Chunk] = (),
    general_scorer: GeneralScorer | None = None,
) -> dict[str, Any]:
    """Run the strategies on `examples` and return the results (JSON-ready; see docs/evaluation.md).

    `passages`: the chunks of the knowledge documents that the RAG strategies retrieve from (evals.chunking).
    `general_scorer`: scores the fine-tuned models and their bases on the general set (evals.forgetting); without
    it (or with settings.forgetting.enabled False) results["forgetting"] is None."""
    plan = plan_strategies(
        settings.strategies, settings.base_model, settings.fine_tuned_models, settings.external_model,
        settings.rival_models,
    )
    names = choose_metrics(settings, examples)
    uses_rag = any(s.uses_documents for s in plan)
    if uses_rag and not passages:
        raise ValueError("the RAG strategies need knowledge documents with some text")
    if any(s.kind == "function-calling" for s in plan) and not any(e.tools for e in examples):
        raise ValueError("the function-calling strategy needs held-out examples that carry 'tools'")
    needs_embedder = any(s.kind == "retrieval-few-shot" for s in plan) or "embedding_similarity" in names or uses_rag
    if needs_embedder and embed is None:
        from openft.evals.embeddings import load_embedder

        embed = load_embedder()
    shots = fixed_shots(train, settings.k, settings.seed)
    retriever = NearestExamples(train, embed) if any(s.kind == "retrieval-few-shot" for s in plan) else None
    index = PassageIndex(passages, embed) if uses_rag else None
    retrieved: dict[int, Any] = {}  # example position -> what RAG retrieved (searched once, shared by RAG strategies)

    total, done = len(plan) * len(examples), 0
    predictions: dict[str, list[dict[str, Any]]] = {}
    for strategy in plan:
        call = external_chat if strategy.kind == "external" else chat
        if call is None:
            raise ValueError("the external strategy needs an external ChatFn")
        column = []
        for position, example in enumerate(examples):
            if should_stop is not None and should_stop():
                raise EvalCancelled()
            found = None
            if strategy.uses_documents:
                if position not in retrieved:
                    retrieved[position] = index.search(example.user_input, settings.rag_k)
                found = retrieved[position]
            messages = build_messages(strategy, example, k=settings.k, shots=shots, retriever=retriever,
                                      passages=found.passages if found else ())
            params = {**tool_params(strategy, example, settings.tool_choice), **settings.extra_params}
            try:
                reply = call(strategy.model, messages, max_tokens=settings.max_tokens, **params)
                record = _record(reply, None)
            except Exception as exc:  # one failed request is a data point (an error), not a failed run
                record = _record(None, f"{type(exc).__name__}: {exc}")
            if found is not None:  # a RAG request's latency includes its retrieval
                record["retrieval_s"] = found.seconds
                record["passages"] = [f"{c.source}:{c.index}" for c in found.passages]
                if record["latency_s"] is not None:
                    record["latency_s"] += found.seconds
            column.append(record)
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        predictions[strategy.name] = column

    scorer = _Scorer(settings, names, examples, embed, judge_chat)
    strategies = [_summarize(s, predictions[s.name], scorer.score(s.name, predictions), settings.seed) for s in plan]
    forgetting = None  # the fine-tuned models and their bases on the general set (evals.forgetting)
    if general_scorer is not None and settings.forgetting.enabled and any(s.fine_tuned for s in plan):
        try:
            forgetting = run_check(settings.fine_tuned_models, general_scorer, settings.forgetting, should_stop)
        except CheckCancelled:
            raise EvalCancelled() from None
    return {
        "version": REPORT_VERSION,
        "base_model": settings.base_model,
        "k": settings.k,
        "n_examples": len(examples),
        "n_training_examples": len(train),
        "metrics": names,
        "primary_metric": names[0],
        "few_shot_examples": [e.user_input for e in shots],
        "rag": None
        if index is None
        else {
            "k": settings.rag_k,
            "n_passages": len(passages),
            "n_documents": len({c.source for c in passages}),
            "max_words": MAX_WORDS,
            "overlap_words": OVERLAP_WORDS,
        },
        "n_tool_examples": sum(1 for e in examples if e.tools),
        "strategies": strategies,
        "ranking": rank(strategies, names[0]),
        "samples": _samples(examples, plan, predictions, strategies),
        "forgetting": forgetting,
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
        "retrieval_s": _distribution([r["retrieval_s"] for r in column if r.get("retrieval_s") is not None]),
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
