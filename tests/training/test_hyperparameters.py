"""Hyperparameter rules: what "auto" turns into and which requests the jobs API must refuse."""

from __future__ import annotations

import pytest

from openft.training.hyperparameters import (
    BASE_LEARNING_RATES,
    ResolvedHyperparameters,
    default_batch_size,
    default_n_epochs,
    resolve_hyperparameters,
    validate_hyperparameters,
)

HP = "method.supervised.hyperparameters"


@pytest.mark.parametrize(
    ("n_examples", "epochs"),
    [(1, 25), (3, 25), (4, 25), (10, 10), (33, 3), (34, 3), (20, 5), (100, 3), (8333, 3), (8334, 2), (30000, 1)],
)
def test_auto_epochs_follow_openai_rule(n_examples, epochs):
    assert default_n_epochs(n_examples) == epochs


@pytest.mark.parametrize(("n_examples", "batch"), [(10, 1), (200, 1), (750, 2), (5000, 10), (100_000, 32)])
def test_auto_batch_size_is_about_two_per_mille_clamped(n_examples, batch):
    assert default_batch_size(n_examples) == batch


def test_all_auto_resolves_to_documented_defaults():
    resolved = resolve_hyperparameters(
        "supervised", {"n_epochs": "auto", "batch_size": "auto"}, n_train_examples=20, context_length=8192
    )
    assert resolved == ResolvedHyperparameters(
        n_epochs=5,
        batch_size=1,
        learning_rate_multiplier=1.0,
        learning_rate=BASE_LEARNING_RATES[("supervised", True)],
        lora_rank=16,
        lora_alpha=32.0,
        lora_dropout=0.05,
        max_seq_length=4096,
        packing=True,
        beta=None,
    )
    assert "beta" not in resolved.to_job_dict()


def test_explicit_values_are_kept_and_learning_rate_scales_with_the_multiplier():
    resolved = resolve_hyperparameters(
        "supervised",
        {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5, "lora_rank": 0, "max_seq_length": 9999},
        n_train_examples=500,
        context_length=2048,
    )
    assert (resolved.n_epochs, resolved.batch_size) == (2, 8)
    assert resolved.learning_rate == pytest.approx(0.5 * BASE_LEARNING_RATES[("supervised", False)])
    assert not resolved.uses_lora and resolved.lora_alpha == 0.0
    assert resolved.max_seq_length == 2048  # never beyond the base model's context


def test_dpo_resolves_beta_and_a_smaller_learning_rate():
    resolved = resolve_hyperparameters("dpo", {"beta": 0.3}, n_train_examples=100, context_length=2048)
    assert resolved.beta == 0.3
    assert (
        resolved.learning_rate
        < resolve_hyperparameters("supervised", {}, n_train_examples=100, context_length=2048).learning_rate
    )
    assert resolve_hyperparameters("dpo", {}, n_train_examples=100, context_length=2048).beta == 0.1


def _method(hyperparameters, method_type="supervised"):
    return {"type": method_type, method_type: {"hyperparameters": hyperparameters}}


def test_valid_and_auto_requests_have_no_problems():
    assert validate_hyperparameters(None) == []
    assert (
        validate_hyperparameters(_method({"n_epochs": "auto", "batch_size": 256, "learning_rate_multiplier": 2})) == []
    )
    assert validate_hyperparameters(_method({"beta": 2, "lora_rank": 0}, "dpo")) == []


@pytest.mark.parametrize(
    ("hyperparameters", "bad_param"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 257}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"n_epochs": 51}, "n_epochs"),
        ({"n_epochs": "three"}, "n_epochs"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
        ({"learning_rate_multiplier": 11}, "learning_rate_multiplier"),
        ({"lora_rank": 300}, "lora_rank"),
        ({"lora_rank": -1}, "lora_rank"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"packing": "yes"}, "packing"),
        ({"max_seq_length": 8}, "max_seq_length"),
        ({"beta": 0.1}, "beta"),  # beta is a DPO hyperparameter
        ({"learning_rate": 0.1}, "learning_rate"),  # unknown name
        ({"lora_rank": 0, "lora_alpha": 16}, "lora_rank"),
    ],
)
def test_out_of_range_values_name_the_exact_param(hyperparameters, bad_param):
    problems = validate_hyperparameters(_method(hyperparameters))
    assert [param for param, _ in problems] == [f"{HP}.{bad_param}"]
    assert bad_param in problems[0][1] or "lora" in problems[0][1]


@pytest.mark.parametrize("beta", [0, -0.1, 2.01])
def test_dpo_beta_must_be_in_zero_to_two(beta):
    problems = validate_hyperparameters(_method({"beta": beta}, "dpo"))
    assert problems == [("method.dpo.hyperparameters.beta", problems[0][1])]
    assert "beta" in problems[0][1]


def test_unknown_method_type_and_context_limit():
    assert validate_hyperparameters({"type": "ppo"})[0][0] == "method.type"
    problems = validate_hyperparameters(_method({"max_seq_length": 4096}), context_length=2048)
    assert problems[0][0] == f"{HP}.max_seq_length" and "2048" in problems[0][1]


def test_every_problem_is_reported_at_once():
    problems = validate_hyperparameters(_method({"batch_size": 0, "n_epochs": 0}))
    assert {param for param, _ in problems} == {f"{HP}.batch_size", f"{HP}.n_epochs"}
