"""The forgetting check: did fine-tuning cost the model what it knew? Each fine-tuned model and its base are
scored on the same general-capability items (evals.general_set) and compared item by item.

Two measures that move even for a 135M-parameter model:
- general_loss: the mean negative log-likelihood per token of a general conversation's reply (lower is better);
  fine-tuning on a narrow task raises it long before the model's greedy answers visibly change;
- simple_qa_accuracy: four-option questions (capitals, world regions), answered by the option the model finds
  most likely (mean log-probability per token of option + end of turn), scored 0/1.

Everything is forward passes, batched: conversations left-padded with logits kept only for the replies, and
each question's prompt run once and its cache shared by its four options. The fine-tuned model minus its base
is tested paired (evals.stats.paired_test: a paired bootstrap for the loss, McNemar for the accuracy); a
significant change for the worse beyond the tolerance is a warning the advisor repeats.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from openft.evals.general_set import GeneralItem, describe, general_items
from openft.evals.stats import mean_ci, paired_test

DEFAULT_ITEMS = 100
MIN_ITEMS = 10
ALPHA = 0.05
# A significant loss rise smaller than this share of the base's loss is reported but not warned about: almost any
# fine-tune moves the loss a little, and a warning on every run would be ignored.
LOSS_TOLERANCE = 0.02
MEASURES = (
    {
        "name": "general_loss",
        "label": "loss on general conversations (nats/token)",
        "higher_is_better": False,
        "items": "conversation",
    },
    {
        "name": "simple_qa_accuracy",
        "label": "accuracy on simple questions (4 options)",
        "higher_is_better": True,
        "items": "question",
    },
)


@dataclass(frozen=True)
class ForgettingSettings:
    enabled: bool = True
    n_items: int = DEFAULT_ITEMS  # taken from the start of the general set (conversations and questions alternate)
    alpha: float = ALPHA
    loss_tolerance: float = LOSS_TOLERANCE


ModelScores = dict[str, list[float]]  # measure name -> per-item scores, in the set's order


class GeneralScorer(Protocol):
    """Scores models on general items: the worker's is LocalGeneralScorer; tests pass a fake."""

    def base_of(self, model: str) -> str: ...

    def score(
        self, models: Sequence[str], items: Sequence[GeneralItem], should_stop: Callable[[], bool] | None = None
    ) -> dict[str, ModelScores]: ...


class CheckCancelled(Exception):
    """should_stop said so between two batches."""


# ----- scoring with a causal LM -----------------------------------------------------------------------------


class SharedPrefix:
    """The tokens every row starts with (the system prompt and the user header), run once per model; each batch
    continues from a copy of its cache, which saves a third to a half of the tokens on short general items."""

    def __init__(self, model, ids: Sequence[int]) -> None:
        import torch

        self.ids = list(ids)
        self.cache = None
        if self.ids:
            device = next(model.parameters()).device
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([self.ids], device=device), use_cache=True, logits_to_keep=1)
            self.cache = out.past_key_values

    def __len__(self) -> int:
        return len(self.ids)

    def expanded(self, rows: int):
        """A fresh copy of the prefix's cache for `rows` rows (None when there is no prefix)."""
        if self.cache is None:
            return None
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache


def common_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix of all rows, one token short of the shortest row (each row keeps a token)."""
    if not rows:
        return []
    first, limit = rows[0], min(len(r) for r in rows) - 1
    length = 0
    while length < limit and all(r[length] == first[length] for r in rows):
        length += 1
    return list(first[:length])


def _batch(rows: Sequence[Sequence[int]], pad_id: int, prefix: SharedPrefix, device) -> dict[str, Any]:
    """Model inputs for rows that start with the prefix: the rest of each row left-padded after the prefix's
    cache (padding in the middle is masked; positions count real tokens only)."""
    import torch

    rests = [r[len(prefix) :] for r in rows]
    width = max(len(r) for r in rests)
    ids = torch.full((len(rests), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rests), width), dtype=torch.long)
    for i, rest in enumerate(rests):
        ids[i, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
        mask[i, width - len(rest) :] = 1
    positions = len(prefix) + (mask.cumsum(dim=1) - 1).clamp(min=0)
    full_mask = torch.cat([torch.ones((len(rests), len(prefix)), dtype=torch.long), mask], dim=1)
    inputs = {"input_ids": ids.to(device), "attention_mask": full_mask.to(device), "position_ids": positions.to(device)}
    cache = prefix.expanded(len(rests))
    if cache is not None:
        inputs["past_key_values"] = cache
    return inputs


def conversation_losses(
    model, encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, prefix: SharedPrefix | None = None
) -> list[float]:
    """Mean NLL per trained (reply) token of each (input_ids, labels) row, in one batched forward pass.

    Rows are left-padded so every reply sits at the end; only the last columns' logits are computed."""
    import torch

    prefix = prefix or SharedPrefix(model, [])
    device = next(model.parameters()).device
    inputs = _batch([e[0] for e in encoded], pad_id, prefix, device)
    # A row's token j sits in column end - len(row) + j (columns counted over prefix + padded rest); the logit
    # that predicts it comes from the column before, so the last `keep` columns cover every reply.
    end = len(prefix) + inputs["input_ids"].shape[1]
    firsts = [end - len(ids) + next(j for j, label in enumerate(labels) if label != -100) for ids, labels in encoded]
    keep = end - min(firsts) + 1
    with torch.inference_mode():
        logits = model(**inputs, use_cache=prefix.cache is not None, logits_to_keep=keep).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    offset = end - keep  # column of the first kept logit
    losses = []
    for row, (input_ids, labels) in enumerate(encoded):
        shift = end - len(input_ids)
        trained = [(j, token) for j, (token, label) in enumerate(zip(input_ids, labels, strict=True)) if label != -100]
        picked = [logprobs[row, shift + j - 1 - offset, token] for j, token in trained]
        losses.append(-float(torch.stack(picked).mean()))
    return losses


def option_logprobs(
    model,
    prompts: Sequence[list[int]],
    options: Sequence[Sequence[list[int]]],
    pad_id: int,
    prefix: SharedPrefix | None = None,
) -> list[list[float]]:
    """Mean log-probability per token of each option after its prompt: the prompts run once (batched, cached),
    then every option continues from a copy of its prompt's cache. All prompts have the same number of options."""
    import torch

    prefix = prefix or SharedPrefix(model, [])
    device = next(model.parameters()).device
    n_options = len(options[0])
    inputs = _batch(prompts, pad_id, prefix, device)
    with torch.inference_mode():
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts each option's first token
        cache = out.past_key_values
        cache.batch_repeat_interleave(n_options)
        rows = [option for choice in options for option in choice]
        width = max(len(r) for r in rows)
        option_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        option_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            option_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            option_mask[i, : len(row)] = 1
        prompt_lengths = torch.tensor([len(p) for p in prompts], device=device).repeat_interleave(n_options)
        option_positions = prompt_lengths[:, None] + torch.arange(width, device=device)[None, :]
        prompt_mask = inputs["attention_mask"].repeat_interleave(n_options, dim=0)
        logits = model(
            input_ids=option_ids.to(device),
            attention_mask=torch.cat([prompt_mask, option_mask.to(device)], dim=1),
            position_ids=option_positions,
            past_key_values=cache,
            use_cache=True,
        ).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    scores: list[list[float]] = []
    for q in range(len(prompts)):
        row_scores = []
        for o in range(n_options):
            r = q * n_options + o
            tokens = rows[r]
            values = [first[q, tokens[0]]] + [logprobs[r, t - 1, tokens[t]] for t in range(1, len(tokens))]
            row_scores.append(float(torch.stack(values).mean()))
        scores.append(row_scores)
    return scores


class ItemEncoder:
    """Token ids of the general items in a model's chat format (openft's one renderer, models.chat_template)."""

    def __init__(self, tokenizer, default_system_prompt: str | None) -> None:
        self.tokenizer, self.system = tokenizer, default_system_prompt

    def conversation(self, item: GeneralItem) -> tuple[list[int], list[int]]:
        from openft.models.chat_template import encode_chat

        messages = [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.reference}]
        encoded = encode_chat(self.tokenizer, messages, default_system_prompt=self.system)
        return encoded.input_ids, encoded.labels

    def question(self, item: GeneralItem) -> tuple[list[int], list[list[int]]]:
        from openft.models.chat_template import encode_chat, encode_prompt

        user = [{"role": "user", "content": item.prompt}]
        prompt = encode_prompt(self.tokenizer, user, default_system_prompt=self.system)
        options = []
        for option in item.options:
            full = encode_chat(self.tokenizer, [*user, {"role": "assistant", "content": option}],
                               default_system_prompt=self.system)  # fmt: skip
            # The prompt is encoded as its own segments, so it is a prefix of the full conversation.
            options.append([t for t, label in zip(full.input_ids, full.labels, strict=True) if label != -100])
        return prompt, options


def score_with_model(
    model,
    encoder: ItemEncoder,
    items: Sequence[GeneralItem],
    *,
    batch_size: int = 16,
    should_stop: Callable[[], bool] | None = None,
) -> ModelScores:
    """Per-item scores of one loaded model: general_loss per conversation, simple_qa_accuracy per question."""
    pad_id = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else 0
    conversations = [encoder.conversation(i) for i in items if i.kind == "conversation"]
    questions = [i for i in items if i.kind == "question"]
    asked = [encoder.question(i) for i in questions]
    prefix = SharedPrefix(model, common_prefix([c[0] for c in conversations] + [q[0] for q in asked]))
    # Batches of similar lengths waste little on padding; the losses go back to the set's order.
    order = sorted(range(len(conversations)), key=lambda i: (len(conversations[i][0]), i))
    losses = [0.0] * len(conversations)
    for start in range(0, len(order), batch_size):
        if should_stop is not None and should_stop():
            raise CheckCancelled()
        rows = order[start : start + batch_size]
        batch_losses = conversation_losses(model, [conversations[i] for i in rows], pad_id, prefix)
        for i, loss in zip(rows, batch_losses, strict=True):
            losses[i] = loss
    correct: list[float] = []
    for start in range(0, len(asked), batch_size):
        if should_stop is not None and should_stop():
            raise CheckCancelled()
        chunk = asked[start : start + batch_size]
        scores = option_logprobs(model, [q[0] for q in chunk], [q[1] for q in chunk], pad_id, prefix)
        for item, row in zip(questions[start : start + batch_size], scores, strict=True):
            correct.append(float(max(range(len(row)), key=row.__getitem__) == item.answer_index))
    return {"general_loss": losses, "simple_qa_accuracy": correct}


class LocalGeneralScorer:
    """Scores base models of the registry and an organization's fine-tuned models and checkpoints in this process.

    Each base is loaded once: it is scored, then each LoRA fine-tune of it is attached (PEFT), scored and
    detached again; a full fine-tune is loaded on its own. `before_loading` runs once before the first load
    (the worker frees the evaluation's serving engines there, so the weights are never held twice)."""

    def __init__(
        self, organization_id: str, before_loading: Callable[[], None] | None = None, batch_size: int = 16
    ) -> None:
        self.organization_id = organization_id
        self.before_loading = before_loading
        self.batch_size = batch_size

    def _weights(self, model: str) -> tuple[str, Path | None, bool]:
        """(base model, weights folder or None for a base model, is LoRA)."""
        from openft.evals.local_models import fine_tuned_weights
        from openft.models.registry import ModelNotFound, get_base_model

        try:
            get_base_model(model)
            return model, None, False
        except ModelNotFound:
            return fine_tuned_weights(self.organization_id, model)

    def base_of(self, model: str) -> str:
        return self._weights(model)[0]

    def score(
        self, models: Sequence[str], items: Sequence[GeneralItem], should_stop: Callable[[], bool] | None = None
    ) -> dict[str, ModelScores]:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from openft.models.registry import get_base_model, load_model, load_tokenizer

        if self.before_loading is not None:
            self.before_loading()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        weights = {m: self._weights(m) for m in models}
        out: dict[str, ModelScores] = {}
        for base in dict.fromkeys(w[0] for w in weights.values()):
            encoder = ItemEncoder(load_tokenizer(base), get_base_model(base).default_system_prompt)

            def score(loaded, encoder=encoder) -> ModelScores:
                return score_with_model(loaded, encoder, items, batch_size=self.batch_size, should_stop=should_stop)

            family = [m for m, w in weights.items() if w[0] == base]
            model = load_model(base).to(device).eval()
            if base in family:
                out[base] = score(model)
            for name in family:
                _, path, is_lora = weights[name]
                if path is None:
                    continue
                if is_lora:
                    wrapped = PeftModel.from_pretrained(model, str(path)).eval()
                    out[name] = score(wrapped)
                    model = wrapped.unload()  # the base again, for the next adapter
                else:
                    full = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
                    out[name] = score(full)
                    del full
            del model
        return out


# ----- the check and its comparisons ------------------------------------------------------------------------


def _estimate(scores: list[float]) -> dict[str, Any] | None:
    if not scores:
        return None
    e = mean_ci(scores, seed=0)
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n, "method": e.method}


def compare_scores(
    fine_tuned: str, base: str, measure: dict[str, Any], ft_scores: list[float], base_scores: list[float],
    settings: ForgettingSettings,
) -> dict[str, Any] | None:
    """The paired test of the fine-tuned model against its base on one measure, and whether it is a warning."""
    if not ft_scores or len(ft_scores) != len(base_scores):
        return None
    test = paired_test(ft_scores, base_scores, alpha=settings.alpha, seed=0)
    base_mean = sum(base_scores) / len(base_scores)
    change = test.mean_difference  # fine-tuned minus base
    worse = change > 0 if not measure["higher_is_better"] else change < 0
    tolerance = settings.loss_tolerance * abs(base_mean) if measure["name"] == "general_loss" else 0.0
    return {
        "fine_tuned": fine_tuned,
        "base": base,
        "measure": measure["name"],
        "label": measure["label"],
        "higher_is_better": measure["higher_is_better"],
        "base_mean": base_mean,
        "fine_tuned_mean": sum(ft_scores) / len(ft_scores),
        "change": change,
        "low": test.low,
        "high": test.high,
        "relative_change": change / base_mean if base_mean else None,
        "p_value": test.p_value,
        "method": test.method,
        "n": test.n,
        "significant": test.significant,
        "worse": worse,
        "tolerance": tolerance,
        "forgot": test.significant and worse and abs(change) > tolerance,
    }


def run_check(
    fine_tuned_models: Sequence[str],
    scorer: GeneralScorer,
    settings: ForgettingSettings,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Score every fine-tuned model and its base on the general set; JSON-ready (results["forgetting"])."""
    items = general_items(settings.n_items)
    bases = {name: scorer.base_of(name) for name in fine_tuned_models}
    models = list(dict.fromkeys([*bases.values(), *fine_tuned_models]))
    started = time.perf_counter()
    scores = scorer.score(models, items, should_stop)
    seconds = time.perf_counter() - started
    rows = []
    for name in models:
        role = "fine-tuned" if name in bases else "base"
        rows.append(
            {
                "model": name,
                "role": role,
                "base_model": bases.get(name),
                **{m["name"]: _estimate(scores[name].get(m["name"], [])) for m in MEASURES},
            }
        )
    comparisons = []
    for name, base in bases.items():
        for measure in MEASURES:
            row = compare_scores(name, base, measure, scores[name][measure["name"]],
                                 scores[base][measure["name"]], settings)  # fmt: skip
            if row is not None:
                comparisons.append(row)
    return {
        "set": describe(items),
        "measures": list(MEASURES),
        "alpha": settings.alpha,
        "loss_tolerance": settings.loss_tolerance,
        "seconds": seconds,
        "models": rows,
        "comparisons": comparisons,
        "scores": scores,
    }


def _fmt(value: float, measure: str) -> str:
    return f"{value:.3f}" if measure == "general_loss" else f"{value:.2f}"


def describe_change(c: dict[str, Any]) -> str:
    """One sentence on a fine-tuned model's change against its base on one measure."""
    test = "paired bootstrap" if c["method"] == "paired-bootstrap" else c["method"].replace("mcnemar-", "McNemar, ")
    numbers = (
        f"{_fmt(c['base_mean'], c['measure'])} -> {_fmt(c['fine_tuned_mean'], c['measure'])}, change "
        f"{c['change']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], {test}, p = {c['p_value']:.3g}, {c['n']} items"
    )
    if c["forgot"]:
        verdict = f"{c['fine_tuned']} lost general ability: its {c['label']} got significantly worse than {c['base']}'s"
    elif c["significant"] and c["worse"]:
        verdict = (f"{c['fine_tuned']}'s {c['label']} is slightly but significantly worse than {c['base']}'s, "
                   f"within the tolerance ({c['tolerance']:.3f})")  # fmt: skip
    elif c["significant"]:
        verdict = f"{c['fine_tuned']}'s {c['label']} is significantly better than {c['base']}'s"
    else:
        verdict = f"{c['fine_tuned']}'s {c['label']} shows no significant change from {c['base']}'s"
    return f"{verdict} ({numbers})."


def advice(results: dict[str, Any]) -> dict[str, Any] | None:
    """The advisor's forgetting section: one sentence per comparison and the warnings (None: no check ran)."""
    check = results.get("forgetting")
    if not check or not check.get("comparisons"):
        return None
    comparisons = check["comparisons"]
    return {
        "set": check["set"],
        "comparisons": [{**c, "verdict": describe_change(c)} for c in comparisons],
        "warnings": [describe_change(c) for c in comparisons if c["forgot"]],
        "forgetful_models": sorted({c["fine_tuned"] for c in comparisons if c["forgot"]}),
    }


def summary(results: dict[str, Any]) -> dict[str, Any] | None:
    """The check without its per-item scores, for an evaluation's API object and the dashboard."""
    check = results.get("forgetting")
    if not check:
        return None
    section = advice(results) or {"comparisons": [], "warnings": []}
    return {
        "set": check["set"],
        "seconds": check.get("seconds"),
        "models": check["models"],
        "comparisons": section["comparisons"],
        "warnings": section["warnings"],
    }
