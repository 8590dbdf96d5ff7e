"""Price tables, cost estimates and the fine-tune-or-prompt advisor (docs/pricing.md)."""

from openft.pricing.advisor import (
    AdvisorInputs,
    BreakEven,
    CostLine,
    LocalCompute,
    PairedVerdict,
    Recommendation,
    StrategyCosts,
    StrategyMeasurement,
    break_even_requests_per_month,
    recommend,
    strategy_costs,
)
from openft.pricing.costs import (
    InferencePrice,
    TrainingCostEstimate,
    UnknownModelPrice,
    estimate_training_cost,
    inference_cost,
    inference_price,
    local_compute_cost,
    lookup_inference_price,
    training_cost,
    training_price,
)
from openft.pricing.overrides import PriceFileError

__all__ = [
    "AdvisorInputs",
    "BreakEven",
    "CostLine",
    "InferencePrice",
    "LocalCompute",
    "PairedVerdict",
    "PriceFileError",
    "Recommendation",
    "StrategyCosts",
    "StrategyMeasurement",
    "TrainingCostEstimate",
    "UnknownModelPrice",
    "break_even_requests_per_month",
    "estimate_training_cost",
    "inference_cost",
    "inference_price",
    "local_compute_cost",
    "lookup_inference_price",
    "recommend",
    "strategy_costs",
    "training_cost",
    "training_price",
]
