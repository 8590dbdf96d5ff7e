"""Advisor arithmetic: what each strategy costs at a given traffic, when fine-tuning pays back, and
which strategy to use. Pure: callers pass measurements and prices in; nothing here runs a model.

Formulas (docs/pricing.md):
    local cost / request  = latency_s x device price / hour x n_devices / 3600 / concurrency
    hosted cost / request = inference_cost(hosted_model, mean prompt tokens, mean completion tokens)
    monthly               = cost / request x requests/day x days/month
    over the horizon      = one-time training cost + monthly x horizon months
    break-even volume     = training cost / ((baseline - fine-tuned cost / request) x horizon months)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from openft.pricing.costs import compute_price_per_hour, inference_cost

Deployment = Literal["local", "hosted"]


@dataclass(frozen=True)
class StrategyMeasurement:
    """One strategy as an evaluation measured it (means over the eval set)."""

    name: str  # "zero-shot", "few-shot", "retrieval-few-shot", "fine-tuned", ...
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_latency_s: float  # measured locally; prices the local deployment
    quality: float  # mean metric score in [0, 1]
    quality_ci: tuple[float, float] | None = None  # 95% CI of `quality`
    hosted_model: str | None = None  # hosted equivalent, e.g. "gpt-4o-mini" or "ft:gpt-4o-mini-2024-07-18"
    fine_tuned: bool = False  # pays the one-time training cost


@dataclass(frozen=True)
class PairedVerdict:
    """A paired test of strategy A against B on the same items (computed by openft.evals.stats.paired_test)."""

    method: str  # "mcnemar-exact" | "mcnemar-chi-square" | "paired-bootstrap"
    mean_difference: float  # quality of A minus quality of B
    p_value: float
    significant: bool
    a_better: int  # items where A scores higher (0/1 scores: A right and B wrong)
    b_better: int

    def reversed(self) -> PairedVerdict:
        return PairedVerdict(
            self.method, -self.mean_difference, self.p_value, self.significant, self.b_better, self.a_better
        )

    def describe(self, a: str, b: str) -> str:
        test = {"paired-bootstrap": "paired bootstrap"}.get(self.method, self.method.replace("mcnemar-", "McNemar, "))
        counts = (
            f"{a} right on {self.a_better} items {b} misses, {b} right on {self.b_better} {a} misses"
            if self.method.startswith("mcnemar")
            else f"{a} higher on {self.a_better} items, {b} higher on {self.b_better}"
        )
        return f"{test}, p = {self.p_value:.3g}; {counts}"


@dataclass(frozen=True)
class LocalCompute:
    """The machine local strategies run on."""

    device: str = "cpu"  # "cpu" (priced per vCPU-hour) or "gpu" (per GPU-hour)
    n_devices: int = 1
    concurrency: float = 1.0  # requests served at once (batching); divides the per-request cost
    price_per_device_hour: Decimal | None = None  # None: openft's price for `device` (after overrides)


@dataclass(frozen=True)
class AdvisorInputs:
    strategies: list[StrategyMeasurement]
    requests_per_day: float
    hosted_training_cost: Decimal = Decimal(0)  # what OpenAI charges to fine-tune (training_cost)
    local_training_cost: Decimal = Decimal(0)  # local compute for the fine-tuning run (local_compute_cost)
    local: LocalCompute = field(default_factory=LocalCompute)
    horizon_months: float = 12.0
    days_per_month: float = 30.0
    # Paired tests keyed (A, B); either orientation may be given. Without one, qualities are compared by CI.
    paired: dict[tuple[str, str], PairedVerdict] = field(default_factory=dict)

    @property
    def requests_per_month(self) -> Decimal:
        return _dec(self.requests_per_day) * _dec(self.days_per_month)

    def verdict(self, a: str, b: str) -> PairedVerdict | None:
        """The paired test of A against B (A minus B), if one was given."""
        if (a, b) in self.paired:
            return self.paired[(a, b)]
        if (b, a) in self.paired:
            return self.paired[(b, a)].reversed()
        return None


@dataclass(frozen=True)
class CostLine:
    per_request: Decimal
    per_1k_requests: Decimal
    monthly: Decimal
    one_time: Decimal
    over_horizon: Decimal  # one_time + monthly x horizon_months


@dataclass(frozen=True)
class StrategyCosts:
    strategy: StrategyMeasurement
    local: CostLine
    hosted: CostLine | None  # None when the strategy names no hosted model

    def line(self, deployment: Deployment) -> CostLine | None:
        return self.local if deployment == "local" else self.hosted


@dataclass(frozen=True)
class BreakEven:
    baseline: str  # the prompting strategy
    fine_tuned: str
    deployment: Deployment
    saving_per_request: Decimal  # baseline minus fine-tuned cost per request (negative: costs more)
    requests_per_month: Decimal | None  # volume above which fine-tuning pays back; None: never


@dataclass(frozen=True)
class Recommendation:
    choice: str
    deployment: Deployment
    headline: str
    reasons: list[str]
    costs: list[StrategyCosts]
    break_evens: list[BreakEven]


def _dec(value: float | int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def cost_line(per_request: Decimal, one_time: Decimal, requests_per_month: Decimal, horizon_months: float) -> CostLine:
    monthly = per_request * requests_per_month
    return CostLine(
        per_request=per_request,
        per_1k_requests=per_request * 1000,
        monthly=monthly,
        one_time=one_time,
        over_horizon=one_time + monthly * _dec(horizon_months),
    )


def local_cost_per_request(latency_s: float, local: LocalCompute) -> Decimal:
    price = local.price_per_device_hour
    if price is None:
        price = compute_price_per_hour(local.device)
    if local.concurrency <= 0:
        raise ValueError(f"concurrency must be positive, got {local.concurrency}")
    return _dec(latency_s) * price * local.n_devices / Decimal(3600) / _dec(local.concurrency)


def strategy_costs(inputs: AdvisorInputs) -> list[StrategyCosts]:
    """Local and hosted cost lines of every strategy. Raises UnknownModelPrice for an unpriced hosted model."""
    volume = inputs.requests_per_month
    result = []
    for s in inputs.strategies:
        local = cost_line(
            local_cost_per_request(s.mean_latency_s, inputs.local),
            inputs.local_training_cost if s.fine_tuned else Decimal(0),
            volume,
            inputs.horizon_months,
        )
        hosted = None
        if s.hosted_model is not None:
            hosted = cost_line(
                inference_cost(s.hosted_model, _dec(s.mean_prompt_tokens), _dec(s.mean_completion_tokens)),
                inputs.hosted_training_cost if s.fine_tuned else Decimal(0),
                volume,
                inputs.horizon_months,
            )
        result.append(StrategyCosts(s, local, hosted))
    return result


def break_even_requests_per_month(
    training_cost: Decimal, baseline_per_request: Decimal, fine_tuned_per_request: Decimal, horizon_months: float
) -> Decimal | None:
    """Monthly volume at which fine-tuning's per-request saving repays its training cost within the horizon.

    None when fine-tuning is not cheaper per request (it never pays back).
    """
    saving = baseline_per_request - fine_tuned_per_request
    if saving <= 0:
        return None
    if horizon_months <= 0:
        raise ValueError(f"horizon_months must be positive, got {horizon_months}")
    return training_cost / (saving * _dec(horizon_months))


def break_evens(inputs: AdvisorInputs, costs: list[StrategyCosts], deployment: Deployment) -> list[BreakEven]:
    """Every (prompting strategy, fine-tuned strategy) pair priced for `deployment`."""
    priced = [c for c in costs if c.line(deployment) is not None]
    result = []
    for ft in (c for c in priced if c.strategy.fine_tuned):
        for base in (c for c in priced if not c.strategy.fine_tuned):
            ft_line, base_line = ft.line(deployment), base.line(deployment)
            result.append(
                BreakEven(
                    baseline=base.strategy.name,
                    fine_tuned=ft.strategy.name,
                    deployment=deployment,
                    saving_per_request=base_line.per_request - ft_line.per_request,
                    requests_per_month=break_even_requests_per_month(
                        ft_line.one_time, base_line.per_request, ft_line.per_request, inputs.horizon_months
                    ),
                )
            )
    return result


def usd(amount: Decimal) -> str:
    return f"${amount:,.2f}" if abs(amount) >= 1 else f"${amount:.4f}"


def _quality(s: StrategyMeasurement) -> str:
    ci = f" (95% CI {s.quality_ci[0]:.3f}-{s.quality_ci[1]:.3f})" if s.quality_ci else ""
    return f"{s.quality:.3f}{ci}"


def matches_best(
    candidate: StrategyMeasurement, best: StrategyMeasurement, verdict: PairedVerdict | None = None
) -> bool:
    """Quality indistinguishable from the best: the candidate's mean lies inside the best's CI and, when a paired
    test of best against candidate on the same items is given, that test does not find the best significantly
    better (overlapping intervals alone miss differences that a paired test finds).
    """
    if candidate is best:
        return True
    floor = best.quality_ci[0] if best.quality_ci else best.quality
    if candidate.quality < floor:
        return False
    return verdict is None or not (verdict.significant and verdict.mean_difference > 0)


def recommend(inputs: AdvisorInputs, deployment: Deployment = "local") -> Recommendation:
    """Pick the cheapest strategy (over the horizon, training included) whose quality matches the best."""
    costs = strategy_costs(inputs)
    pairs = break_evens(inputs, costs, deployment)
    priced = [c for c in costs if c.line(deployment) is not None]
    if not priced:
        raise ValueError(f"no strategy can be priced for deployment={deployment!r} (no hosted_model given)")
    best = max(priced, key=lambda c: c.strategy.quality).strategy

    def matches(s: StrategyMeasurement) -> bool:
        return matches_best(s, best, inputs.verdict(best.name, s.name))

    contenders = [c for c in priced if matches(c.strategy)]
    # Cheapest first; on a tie prefer prompting (nothing to train or maintain), then higher quality.
    chosen = min(
        contenders, key=lambda c: (c.line(deployment).over_horizon, c.strategy.fine_tuned, -c.strategy.quality)
    )
    pick, line = chosen.strategy, chosen.line(deployment)
    horizon = f"{inputs.horizon_months:g} months at {inputs.requests_per_day:,g} requests/day"
    reasons = [
        f"{pick.name} scores {_quality(pick)}; costs {usd(line.per_1k_requests)} per 1K requests, "
        f"{usd(line.monthly)}/month, {usd(line.over_horizon)} over {horizon}"
        + (f" including {usd(line.one_time)} training" if line.one_time else "")
        + f" ({deployment})."
    ]
    reasons.extend(_significance_reasons(inputs, priced, pick, best))
    if best.quality_ci is None and not inputs.paired:
        reasons.append("No confidence interval given for the best strategy: qualities were compared on means.")
    for other in priced:
        o = other.strategy
        if o is pick or o is best:
            continue
        verdict = "matches the best quality but costs more" if matches(o) else "scores lower"
        paired = inputs.verdict(best.name, o.name)
        if paired is not None and paired.significant and paired.mean_difference > 0:
            verdict = f"scores significantly lower than {best.name} ({paired.describe(best.name, o.name)})"
        reasons.append(
            f"{o.name} {verdict}: {_quality(o)}, {usd(other.line(deployment).over_horizon)} over the horizon."
        )
    reasons.extend(_break_even_reasons(pairs, pick, inputs))

    fine_tuned = [c.strategy for c in priced if c.strategy.fine_tuned]
    if pick.fine_tuned:
        headline = f"Fine-tune: use {pick.name} ({deployment})."
    elif fine_tuned and pick is best and all(_significantly_better(inputs, pick, f) for f in fine_tuned):
        headline = (
            f"Prompting is better here: use {pick.name} ({deployment}); it scores significantly higher than "
            "the fine-tuned model on the same items."
        )
    elif fine_tuned:
        headline = f"Prompting is enough here: use {pick.name} ({deployment}); fine-tuning does not pay off."
    else:
        headline = f"Use {pick.name} ({deployment})."
    return Recommendation(pick.name, deployment, headline, reasons, costs, pairs)


def _significantly_better(inputs: AdvisorInputs, a: StrategyMeasurement, b: StrategyMeasurement) -> bool:
    verdict = inputs.verdict(a.name, b.name)
    return verdict is not None and verdict.significant and verdict.mean_difference > 0


def _significance_reasons(
    inputs: AdvisorInputs, priced: list[StrategyCosts], pick: StrategyMeasurement, best: StrategyMeasurement
) -> list[str]:
    """Whether the better-scoring strategy is significantly better, by the paired test where there is one."""
    if pick is not best:
        paired = inputs.verdict(best.name, pick.name)
        if paired is None:
            return [f"The best score is {best.name}'s {_quality(best)}; {pick.name} is within its CI and cheaper."]
        return [
            f"The best score is {best.name}'s {_quality(best)}; {pick.name} is within its CI, the paired test "
            f"finds no significant difference ({paired.describe(best.name, pick.name)}), and {pick.name} is cheaper."
        ]
    others = [c.strategy for c in priced if c.strategy is not best]
    if not others:
        return []
    runner_up = max(others, key=lambda s: s.quality)
    paired = inputs.verdict(best.name, runner_up.name)
    if paired is None:
        return []
    if paired.significant and paired.mean_difference > 0:
        return [
            f"{best.name} is significantly better than the next best, {runner_up.name} "
            f"({_quality(runner_up)}; {paired.describe(best.name, runner_up.name)})."
        ]
    return [
        f"{best.name} scores higher than {runner_up.name} ({_quality(runner_up)}) but not significantly "
        f"({paired.describe(best.name, runner_up.name)})."
    ]


def _break_even_reasons(pairs: list[BreakEven], pick: StrategyMeasurement, inputs: AdvisorInputs) -> list[str]:
    relevant = [p for p in pairs if pick.name in (p.baseline, p.fine_tuned)]
    reasons = []
    for p in relevant:
        if p.requests_per_month is None:
            reasons.append(
                f"{p.fine_tuned} is not cheaper per request than {p.baseline}, so its training never pays back."
            )
        else:
            side = "above" if inputs.requests_per_month >= p.requests_per_month else "below"
            reasons.append(
                f"{p.fine_tuned} repays its training against {p.baseline} from "
                f"{p.requests_per_month:,.0f} requests/month over {inputs.horizon_months:g} months; "
                f"expected traffic ({inputs.requests_per_month:,.0f}/month) is {side} that."
            )
    return reasons
