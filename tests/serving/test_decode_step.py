"""The engine's own Llama decode step gives transformers' logits bit for bit: padded rows, GQA, 4-bit, LoRA."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from openft.serving import kv_batch
from openft.serving.decode_step import LlamaDecodeStep
from openft.serving.lora_batch import PREFILL_GATHER_MIN_ADAPTERS, BatchedLora
from openft.serving.q4_linear import use_q4_decode_weights

SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in the bundled model (9 query, 3 key/value heads)
    "intermediate_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 256,
}
PROMPTS = [[5, 9, 13, 200, 31], [7, 8], [100, 101, 102, 103, 104, 105, 106, 107, 108]]


def _llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()


def _with_adapters(model, names: list[str], seed: int, alpha: int, rank: int = 4):
    """``model`` wrapped by PEFT with one random all-linear adapter per name (seeded in turn), in eval mode.
    Their scalings differ (``alpha``, 2x, 3x, in turn), so each row must get its own adapter's."""
    peft_model = None
    for index, name in enumerate(names):
        torch.manual_seed(seed + index)
        scaled = alpha * (1 + index % 3)
        config = LoraConfig(r=rank, lora_alpha=scaled, target_modules="all-linear", init_lora_weights=False)
        if peft_model is None:
            peft_model = get_peft_model(model, config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
    return peft_model.eval()


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention mask, position ids) of the prompts left-padded to the longest, as the engine pads."""
    longest = max(len(p) for p in prompts)
    input_ids = torch.zeros((len(prompts), longest), dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt)
        mask[row, longest - len(prompt) :] = 1
    return input_ids, mask, (mask.cumsum(dim=1) - 1).clamp(min=0)


def _prefill(model, prompts: list[list[int]], **forward_kwargs):
    """Left-padded prompts through transformers' forward, as the engine's prefill does; returns cache, mask, tokens."""
    input_ids, mask, position_ids = left_padded(prompts)
    cache = kv_batch.new_cache(model.config)
    logits = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        **forward_kwargs,
    ).logits[:, -1]
    kv_batch.zero_padding(cache, mask)
    return cache, mask, logits.argmax(-1, keepdim=True), mask.sum(dim=1, keepdim=True)


def _decode_both_ways(forward_model, step: LlamaDecodeStep, prompts: list[list[int]], steps: int = 6, lora=None):
    """Greedy decode with transformers' forward and with ``step`` side by side; every step's logits of both."""
    ours_cache, mask, token, length = _prefill(forward_model, prompts)
    theirs_cache, _, _, _ = _prefill(forward_model, prompts)
    ours_token, theirs_token = token, token.clone()
    pairs = []
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype)], dim=1)
        ours = step(ours_token, mask, length, ours_cache, lora)
        theirs = forward_model(
            input_ids=theirs_token,
            attention_mask=mask,
            position_ids=length,
            past_key_values=theirs_cache,
            use_cache=True,
        ).logits[:, -1]
        pairs.append((ours, theirs))
        ours_token, theirs_token = ours.argmax(-1, keepdim=True), theirs.argmax(-1, keepdim=True)
        length = length + 1
    return pairs


def test_logits_of_padded_rows_equal_transformers_forward_bit_for_bit():
    model = _llama()
    with torch.inference_mode():
        pairs = _decode_both_ways(model, LlamaDecodeStep(model), PROMPTS)
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)


def test_a_row_without_padding_gets_transformers_logits_to_float_rounding():
    """Without a mask transformers uses SDPA's enable_gqa, the step packs query groups (faster on the CPU):
    the same sums in another order."""
    model = _llama()
    with torch.inference_mode():
        pairs = _decode_both_ways(model, LlamaDecodeStep(model), PROMPTS[:1], steps=12)
    for ours, theirs in pairs:
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_with_4_bit_decode_weights_the_stacked_products_give_the_layers_own_logits():
    model = _llama()
    assert use_q4_decode_weights(model)["sibling_groups"] == 4  # q/k/v and gate/up in each of 2 layers
    with torch.inference_mode():
        pairs = _decode_both_ways(model, LlamaDecodeStep(model), PROMPTS)
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("four_bit", [False, True], ids=["fp32", "q4"])
def test_batched_lora_rows_get_their_adapters_without_peft_wrappers(four_bit):
    model = _llama()
    if four_bit:
        use_q4_decode_weights(model)
    peft_model = _with_adapters(model, ["one", "two"], seed=10, alpha=16)
    batched = BatchedLora(peft_model)
    batched.rebuild(["one", "two"])
    batched.set_rows(["one", "__base__", "two"])
    step = LlamaDecodeStep(model)  # the base model PEFT wrapped in place
    with torch.inference_mode():
        pairs = _decode_both_ways(peft_model, step, PROMPTS, lora=batched)
        plain = _decode_both_ways(_llama(), LlamaDecodeStep(_llama()), PROMPTS)
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)
    if not four_bit:
        first_step, first_plain = pairs[0][0], plain[0][0]
        assert torch.equal(first_step[1], first_plain[1])  # the base row is the plain model's
        assert not torch.allclose(first_step[0], first_plain[0]) and not torch.allclose(first_step[2], first_plain[2])
    # The step called each LoRA layer's base layer and BatchedLora's delta itself, never PEFT's wrapper.
    wrapper_calls = []
    lora_layer = model.model.layers[0].self_attn.q_proj
    handle = lora_layer.register_forward_pre_hook(lambda *_: wrapper_calls.append(1))
    cache, mask, token, length = _prefill(peft_model, PROMPTS)
    wrapper_calls.clear()
    with torch.inference_mode():
        step(token, torch.cat([mask, torch.ones((3, 1), dtype=mask.dtype)], dim=1), length, cache, batched)
    handle.remove()
    assert wrapper_calls == []


MANY_ADAPTER_CASES = pytest.mark.parametrize(
    ("loaded", "row_slots", "path"),
    [
        (9, [0, 1, None, 2, 1, 3, 4], "grouped"),
        (20, [3, 17, 5, 8, 11, 0, 19, 2, None], "grouped"),
        (18, [*range(17), None, 4], "grouped"),  # 17 adapters in the prefill pass: each row's weights gathered
        (3, [1, 1, 1], "one adapter"),
        (1, [0, None, 0], "masked"),  # the only adapter loaded (a base row beside): its stack is PEFT's own weights
        (4, [0, 2, None, 1, 3, 0], "masked"),
        (6, [4, None, 1, 4], "masked"),  # two of six in use: the masked stack of just those two
    ],
    ids=[
        "all-loaded-stack",
        "subset-stack",
        "prefill-gathered",
        "one-adapter-every-row",
        "only-one-loaded",
        "masked",
        "masked-subset",
    ],  # fmt: skip
)


@MANY_ADAPTER_CASES
def test_many_adapters_in_one_batch_give_each_row_peft_s_own_adapter_output(loaded, row_slots, path):
    """From GROUPED_MIN_SLOTS adapters in the multiplied stack, decode steps run each adapter on its own rows
    (batched products); below, one masked product. Either way a row using an adapter twice, a base row and
    unused slots get what PEFT's own per-adapter loop (``adapter_names``) gives them, each with its own
    adapter's scaling. With one adapter on every row the step skips the mask."""
    batched = check_many_adapters_against_peft(loaded, row_slots)
    assert bool(batched._groupings) == (path == "grouped")  # the batched products served these steps
    assert batched._one_adapter == (path == "one adapter")
    distinct = len({slot for slot in row_slots if slot is not None})
    assert (batched._adapter_rows is not None) == (distinct >= PREFILL_GATHER_MIN_ADAPTERS)


def check_many_adapters_against_peft(loaded: int, row_slots: list[int | None], kernel=None, rank: int = 4):
    """Decode rows on ``loaded`` adapters (each row's slot, None for the base model) through BatchedLora and
    through PEFT's ``adapter_names``, fed the same tokens: the logits agree to float rounding. Returns the
    BatchedLora."""
    model = _llama()
    names = [f"adapter{index}" for index in range(loaded)]
    peft_model = _with_adapters(model, names, seed=100, alpha=8, rank=rank)
    rows = ["__base__" if slot is None else names[slot] for slot in row_slots]
    prompts = [PROMPTS[index % len(PROMPTS)] + [index + 1] for index in range(len(rows))]
    with torch.inference_mode():
        cache, mask, token, length = _prefill(peft_model, prompts, adapter_names=rows)
        expected, tokens = [], []
        for _ in range(4):
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
            logits = peft_model(
                input_ids=token, attention_mask=mask, position_ids=length, past_key_values=cache,
                use_cache=True, adapter_names=rows,
            ).logits[:, -1]  # fmt: skip
            expected.append(logits)
            tokens.append(token)
            token, length = logits.argmax(-1, keepdim=True), length + 1
        batched = BatchedLora(peft_model, kernel=kernel)
        batched.rebuild(names)
        batched.set_rows(rows)
        step = LlamaDecodeStep(model)
        cache, mask, _, length = _prefill(peft_model, prompts)
        for token, logits in zip(tokens, expected, strict=True):  # fed the reference's tokens, step by step
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
            ours = step(token, mask, length, cache, batched)
            assert torch.allclose(ours, logits, rtol=0, atol=1e-5)
            assert torch.equal(ours.argmax(-1), logits.argmax(-1))
            length = length + 1
    return batched


def test_only_plain_fp32_llama_models_take_the_step():
    assert LlamaDecodeStep.supports(_llama())
    assert not LlamaDecodeStep.supports(_llama().to(torch.bfloat16))

    class Tweaked(LlamaForCausalLM):  # a subclass may compute differently
        pass

    torch.manual_seed(0)
    assert not LlamaDecodeStep.supports(Tweaked(LlamaConfig(**SMALL)))
    assert not LlamaDecodeStep.supports(MistralForCausalLM(MistralConfig(**SMALL)))
    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        LlamaDecodeStep(_llama().to(torch.bfloat16))
