"""The fine-tune-or-prompt advisor over an evaluation's measurements (openft.pricing does the arithmetic).

Each measured strategy is priced two ways: run locally (its measured latency x the local device price) and run
on a hosted equivalent (its measured tokens x that model's price). Fine-tuned strategies also pay the one-time
training cost: what the hosted provider would charge for the job's trained tokens, and the local compute of the
job's measured training time. Qualities are compared with paired tests on the shared items (evals.paired:
McNemar for 0/1 scores, a paired bootstrap otherwise), so a cheaper strategy is not chosen when the better one is
significantly better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from openft.evals.forgetting import advice as forgetting_advice
from openft.evals.paired import all_pairs
from openft.evals.rivals import rival_verdicts
from openft.pricing import (
    AdvisorInputs,
    LocalCompute,
    PairedVerdict,
    Recommendation,
    StrategyMeasurement,
    UnknownModelPrice,
    local_compute_cost,
    recommend,
    training_cost,
)

# Hosted equivalents by strategy kind: openft's small open models stand in for a small hosted model.
DEFAULT_HOSTED_BASE = "gpt-4o-mini"
DEFAULT_HOSTED_FINE_TUNED = "ft:gpt-4o-mini-2024-07-18"
DEFAULT_HOSTED_TRAINING = "gpt-4o-mini"


@dataclass(frozen=True)
class TrainingRun:
    """What the fine-tuning job measured (from its record: trained_tokens, started_at/finished_at)."""

    trained_tokens: int  # billable tokens over all epochs
    seconds: float  # wall-clock training time
    job_id: str | None = None
    teacher_cost: Decimal = Decimal(0)  # a distilled training file's teacher tokens, paid once (evals.distill)


@dataclass(frozen=True)
class AdviceSettings:
    requests_per_day: float = 1000.0
    horizon_months: float = 12.0
    days_per_month: float = 30.0
    # Hosted equivalent per strategy name or kind ("zero-shot", "fine-tuned", "ft:..."); None: not priced hosted.
    hosted_models: dict[str, str | None] = field(default_factory=dict)
    hosted_training_model: str = DEFAULT_HOSTED_TRAINING
    device: str = "cpu"
    n_devices: int = 1
    concurrency: float = 1.0
    price_per_device_hour: Decimal | None = None
    training: TrainingRun | None = None  # None: the run's own record (results["training"]) if any


def hosted_model_for(strategy: dict[str, Any], mapping: dict[str, str | None]) -> str | None:
    keys = [strategy["name"], strategy["kind"]]
    if strategy["kind"] == "rag-fine-tuned":  # hosted as its fine-tuned model, with RAG's longer prompts
        keys += [strategy["model"], "fine-tuned"]
    for key in keys:
        if key in mapping:
            return mapping[key]
    if strategy["kind"] == "external":
        return strategy["model"]  # priced as itself when its price is known
    return DEFAULT_HOSTED_FINE_TUNED if strategy["fine_tuned"] else DEFAULT_HOSTED_BASE


def _priceable(model: str | None) -> str | None:
    if model is None:
        return None
    from openft.pricing import lookup_inference_price

    try:
        lookup_inference_price(model)
    except UnknownModelPrice:
        return None
    return model


def measurements(results: dict[str, Any], settings: AdviceSettings) -> list[StrategyMeasurement]:
    """One StrategyMeasurement per strategy that answered at least one request, scored on the primary metric."""
    metric = results["primary_metric"]
    out = []
    for s in results["strategies"]:
        quality = s["quality"].get(metric)
        if quality is None or s["latency_s"] is None:
            continue
        out.append(
            StrategyMeasurement(
                name=s["name"],
                mean_prompt_tokens=s["prompt_tokens"]["mean"],
                mean_completion_tokens=s["completion_tokens"]["mean"],
                mean_latency_s=s["latency_s"]["mean"],
                quality=quality["mean"],
                quality_ci=(quality["low"], quality["high"]),
                hosted_model=_priceable(hosted_model_for(s, settings.hosted_models)),
                fine_tuned=s["fine_tuned"],
            )
        )
    return out


def training_run_from_results(results: dict[str, Any]) -> TrainingRun | None:
    recorded = results.get("training")
    if not recorded:
        return None
    return TrainingRun(int(recorded["trained_tokens"]), float(recorded["seconds"]), recorded.get("job_id"),
                       Decimal(str(recorded.get("teacher_cost_usd") or 0)))


def paired_verdicts(comparisons: list[dict[str, Any]]) -> dict[tuple[str, str], PairedVerdict]:
    """The paired tests (evals.paired.all_pairs) in the form the pricing advisor weighs them."""
    return {
        (c["a"], c["b"]): PairedVerdict(
            c["method"], c["mean_difference"], c["p_value"], c["significant"], c["a_better"], c["b_better"]
        )
        for c in comparisons
    }


def advisor_inputs(
    results: dict[str, Any], settings: AdviceSettings, comparisons: list[dict[str, Any]] | None = None
) -> AdvisorInputs:
    run = settings.training or training_run_from_results(results)
    local = LocalCompute(settings.device, settings.n_devices, settings.concurrency, settings.price_per_device_hour)
    hosted_training = Decimal(0)
    local_training = Decimal(0)
    if run is not None:
        # trained_tokens already counts every epoch, so it is billed as one "epoch".
        hosted_training = training_cost(settings.hosted_training_model, run.trained_tokens, 1)
        if settings.price_per_device_hour is not None:
            per_device = settings.price_per_device_hour * settings.n_devices
            local_training = Decimal(str(run.seconds)) * per_device / Decimal(3600)
        else:
            local_training = local_compute_cost(run.seconds, settings.device, settings.n_devices)
        hosted_training += run.teacher_cost  # the training data cost the same whichever way the student runs
        local_training += run.teacher_cost
    return AdvisorInputs(
        strategies=measurements(results, settings),
        requests_per_day=settings.requests_per_day,
        hosted_training_cost=hosted_training,
        local_training_cost=local_training,
        local=local,
        horizon_months=settings.horizon_months,
        days_per_month=settings.days_per_month,
        paired=paired_verdicts(comparisons if comparisons is not None else all_pairs(results)),
    )


def _money(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _line(line) -> dict[str, float] | None:
    if line is None:
        return None
    return {
        "per_request": _money(line.per_request),
        "per_1k_requests": _money(line.per_1k_requests),
        "monthly": _money(line.monthly),
        "one_time": _money(line.one_time),
        "over_horizon": _money(line.over_horizon),
    }


def _recommendation(rec: Recommendation) -> dict[str, Any]:
    return {
        "choice": rec.choice,
        "deployment": rec.deployment,
        "headline": rec.headline,
        "reasons": rec.reasons,
        "break_even": [
            {
                "baseline": b.baseline,
                "fine_tuned": b.fine_tuned,
                "saving_per_request": _money(b.saving_per_request),
                "requests_per_month": _money(b.requests_per_month),
            }
            for b in rec.break_evens
        ],
    }


def _add_forgetting_and_rivals(
    recommendations: dict[str, dict[str, Any]], forgetting: dict[str, Any] | None, rivals: list[dict[str, Any]]
) -> None:
    """The reasons end with the rival verdicts and, when the pick is a fine-tuned model that lost general
    ability (or a RAG strategy on one), the forgetting warning; the headline says so too."""
    forgetful = set((forgetting or {}).get("forgetful_models") or [])
    for rec in recommendations.values():
        rec["reasons"].extend(r["verdict"] for r in rivals)
        choice = rec["choice"].removeprefix("rag+")
        if choice in forgetful:
            rec["headline"] += " Warning: it forgot some general ability (see the forgetting check)."
            warnings = [c for c in forgetting["comparisons"] if c["forgot"] and c["fine_tuned"] == choice]
            rec["reasons"].extend(f"Warning: {c['verdict']}" for c in warnings)


def advise(results: dict[str, Any], settings: AdviceSettings | None = None) -> dict[str, Any]:
    """Costs of every strategy (local and hosted), the one-time training cost, break-even volumes and the
    recommendation for each deployment, as JSON-ready numbers (USD as floats)."""
    settings = settings or AdviceSettings()
    comparisons = all_pairs(results) if results.get("samples") else []
    inputs = advisor_inputs(results, settings, comparisons)
    if not inputs.strategies:
        raise ValueError("no strategy answered any request; nothing to advise on")
    local = recommend(inputs, "local")
    costs = [
        {
            "strategy": c.strategy.name,
            "hosted_model": c.strategy.hosted_model,
            "fine_tuned": c.strategy.fine_tuned,
            "quality": c.strategy.quality,
            "local": _line(c.local),
            "hosted": _line(c.hosted),
        }
        for c in local.costs
    ]
    recommendations = {"local": _recommendation(local)}
    if any(m.hosted_model for m in inputs.strategies):
        recommendations["hosted"] = _recommendation(recommend(inputs, "hosted"))
    forgetting = forgetting_advice(results)
    rivals = rival_verdicts(results, comparisons)
    _add_forgetting_and_rivals(recommendations, forgetting, rivals)
    run = settings.training or training_run_from_results(results)
    return {
        "inputs": {
            "requests_per_day": settings.requests_per_day,
            "requests_per_month": float(inputs.requests_per_month),
            "horizon_months": settings.horizon_months,
            "device": settings.device,
            "n_devices": settings.n_devices,
            "concurrency": settings.concurrency,
            "price_per_device_hour": _money(settings.price_per_device_hour),
            "hosted_training_model": settings.hosted_training_model,
            "metric": results["primary_metric"],
        },
        "training": {
            "trained_tokens": run.trained_tokens if run else None,
            "seconds": run.seconds if run else None,
            "job_id": run.job_id if run else None,
            "teacher_cost": _money(run.teacher_cost) if run else None,  # included in both costs below
            "hosted_cost": _money(inputs.hosted_training_cost),
            "local_cost": _money(inputs.local_training_cost),
        },
        "costs": costs,
        "comparisons": comparisons,  # paired tests of every pair of strategies (evals.paired)
        "forgetting": forgetting,  # fine-tuned models against their bases on the general set (evals.forgetting)
        "rivals": rivals,  # does each fine-tuned model match each rival (bigger base model, external endpoint)?
        "recommendations": recommendations,
    }
