"""The native single-row decode step (serving/native_decode.py) answers as the Python step does, fp32 or 4-bit."""

from __future__ import annotations

import asyncio
import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from openft.serving import kv_batch, lora_batch, native_decode
from openft.serving.decode_step import LlamaDecodeStep
from openft.serving.decode_weights import apply_decode_weights, native_decode_enabled
from openft.serving.engine import Engine
from openft.serving.lora_batch import BatchedLora
from openft.serving.q4_linear import use_q4_decode_weights
from openft.serving.types import GenerationRequest
from tests.serving.conftest import ADAPTER_KEYS
from tests.serving.test_decode_step import (
    MANY_ADAPTER_CASES,
    SMALL,
    _llama,
    _prefill,
    _with_adapters,
    check_many_adapters_against_peft,
    left_padded,
)
from tests.serving.test_q4_decode import _peaked_q4_1_model

# The first build on a machine compiles the extension (35-40 s idle, longer on a loaded CI machine).
BUILD_TIMEOUT = 900


@pytest.fixture(scope="module")
def built():
    native_decode.load_extension()  # compiled once per machine, then loaded from PyTorch's extension cache


def _decode_side_by_side(model, prompt: list[int], steps: int):
    """Greedy decode of one row through the native step and the Python step, each with its own cache."""
    native, python = LlamaDecodeStep(model, native=True), LlamaDecodeStep(model)
    assert native.native is not None and python.native is None
    ours_cache, mask, token, length = _prefill(model, [prompt])
    theirs_cache, _, _, _ = _prefill(model, [prompt])
    ours_token, theirs_token, pairs = token, token.clone(), []
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
        ours = native(ours_token, mask, length, ours_cache)
        theirs = python(theirs_token, mask, length, theirs_cache)
        pairs.append((ours, theirs))
        ours_token, theirs_token, length = ours.argmax(-1, keepdim=True), theirs.argmax(-1, keepdim=True), length + 1
    return pairs, ours_cache, theirs_cache


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("weights", ["fp32", "q4"])
def test_native_steps_give_the_python_steps_logits_to_float_rounding_past_the_caches_first_regrowth(built, weights):
    model = _llama()
    if weights == "q4":
        use_q4_decode_weights(model)
    with torch.inference_mode():
        # 80 steps: past the cache buffers' first spare room (64 positions), so they regrow mid-answer.
        pairs, ours_cache, theirs_cache = _decode_side_by_side(model, [5, 9, 13, 200, 31], steps=80)
    for ours, theirs in pairs:
        scale = theirs.abs().max()
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-4 * scale)
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
    for mine, reference in zip(ours_cache.layers, theirs_cache.layers, strict=True):
        assert mine.keys.shape == reference.keys.shape == (1, 2, 85, 16)
        assert torch.allclose(mine.keys, reference.keys, atol=1e-5)
        assert torch.allclose(mine.values, reference.values, atol=1e-5)


@pytest.mark.parametrize("weights", ["fp32", "q4"])
@pytest.mark.parametrize("loaded", [1, 2, 8], ids=["one-loaded", "two-side-by-side", "eight-grouped"])
def test_a_row_with_an_adapter_gets_the_python_steps_logits(built, weights, loaded):
    """BatchedLora holds one adapter as PEFT's transposed weights, several side by side, and 8 or more of one
    rank as a grouped stack: the native step reads each layout's views. fp32 to float rounding; with q4 the
    updates' fp32 sums in another order can round a layer's bf16 input the other way, which moved these
    logits (themselves bf16, from the output layer's bf16 copy) by one bf16 step, 0.4% at most, when measured."""
    tolerance = 1e-4 if weights == "fp32" else 1e-2
    model = _llama()
    if weights == "q4":
        use_q4_decode_weights(model)
    names = [f"adapter{index}" for index in range(loaded)]
    peft_model = _with_adapters(model, names, seed=10, alpha=16)
    batched = BatchedLora(peft_model)
    batched.rebuild(names)
    native, python = LlamaDecodeStep(model, native=True), LlamaDecodeStep(model)
    with torch.inference_mode():
        for name in {names[0], names[-1]}:
            batched.set_rows([name])
            ours_cache, mask, token, length = _prefill(peft_model, [[5, 9, 13, 200, 31]])
            theirs_cache = _prefill(peft_model, [[5, 9, 13, 200, 31]])[0]
            for _ in range(8):
                mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
                theirs = python(token, mask, length, theirs_cache, batched)
                ours = native(token, mask, length, ours_cache, batched)
                assert torch.allclose(ours, theirs, rtol=0, atol=tolerance * theirs.abs().max())
                token, length = theirs.argmax(-1, keepdim=True), length + 1
    assert native.native_steps == 8 * len({names[0], names[-1]})

    def first_step(row: str):
        batched.set_rows([row])
        cache, mask, token, length = _prefill(peft_model, [[5, 9, 13, 200, 31]])
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
        return native(token, mask, length, cache, batched)

    with torch.inference_mode():
        with batched.base_only():  # a base row while adapters are loaded, as the engine runs it
            base = first_step("__base__")
        adapted = first_step(names[0])
    assert native.native_steps == 8 * len({names[0], names[-1]}) + 2
    assert not torch.allclose(base, adapted, atol=1e-3)  # the adapter really changes the logits


def test_only_single_unpadded_rows_of_models_it_can_read_take_it(built):
    torch.manual_seed(0)
    biased = LlamaForCausalLM(LlamaConfig(**SMALL, attention_bias=True)).eval()
    assert LlamaDecodeStep(biased, native=True).native is None  # projections with biases: the Python step
    model = _llama()
    use_q4_decode_weights(model)
    step = LlamaDecodeStep(model, native=True)
    calls = []
    real = step.native
    step.native = type("Spy", (), {"step": lambda self, *args: calls.append(1) or real.step(*args)})()
    with torch.inference_mode():
        cache, mask, token, length = _prefill(model, [[7, 8], [100, 101, 102]])  # two rows, one padded
        mask = torch.cat([mask, torch.ones((2, 1), dtype=mask.dtype)], dim=1)
        step(token, mask, length, cache)
        assert calls == []
        cache, mask, token, length = _prefill(model, [[7, 8, 9]])
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
        step(token, mask, length, cache)
        assert calls == [1]


class _CountingKernel:
    """The extension, counting its ``lora_rows`` calls."""

    def __init__(self) -> None:
        self.module, self.calls = native_decode.load_extension(), 0
        self.bf16_products: set[bool] = set()  # what the calls asked for

    def lora_rows(self, *args) -> None:
        self.calls += 1
        self.bf16_products.add(bool(args[8]) if len(args) > 8 else False)
        self.module.lora_rows(*args)

    def lora_rows_has_bf16_products(self) -> bool:
        return self.module.lora_rows_has_bf16_products()


@MANY_ADAPTER_CASES
@pytest.mark.parametrize("rank", [4, 6, 16])
def test_the_native_kernel_gives_rows_on_many_adapters_peft_s_own_outputs(built, loaded, row_slots, path, rank):
    """Decode rows on adapters through ``lora_rows`` in every stack layout (one adapter's own weights, several
    side by side, a subset of them, grouped), ranks in its blocks of 4 and not (6): PEFT's numbers."""
    kernel = _CountingKernel()
    batched = check_many_adapters_against_peft(loaded, row_slots, kernel=kernel, rank=rank)
    assert kernel.calls > 0
    # The kernel reads the full stacks' used slots: no copies of a batch's subset were made.
    assert all(stack._subset is None for stack in batched._stacks.values())


def _reference_update(x, a, b, ranks, scales, row_slots, bf16_products=False):
    """Each row's own adapter's ``scale * (x @ A) @ B`` in PyTorch, a row at a time; ``bf16_products``: with x
    and ``scale * (x @ A)`` rounded to bf16, as the kernel's vdpbf16ps path takes them."""
    out = torch.zeros(x.shape[0], b.shape[-1])
    starts = [0, *torch.cumsum(ranks, 0).tolist()]
    for row, slot in enumerate(row_slots.tolist()):
        if slot == 0 or ranks[slot - 1] == 0:
            continue
        s = slot - 1
        if a.dim() == 3:
            a_s, b_s = a[s], b[s]
        else:
            a_s, b_s = a[:, starts[s] : starts[s + 1]], b[starts[s] : starts[s + 1]]
        if bf16_products:
            out[row] = (scales[s] * (x[row].bfloat16().float() @ a_s)).bfloat16().float() @ b_s
        else:
            out[row] = scales[s] * (x[row] @ a_s) @ b_s
    return out


@pytest.mark.parametrize("bf16_products", [False, True], ids=["widened", "bf16-products"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("grouped", [False, True], ids=["side-by-side", "grouped"])
@pytest.mark.parametrize("inputs", [24, 37])
@pytest.mark.parametrize("outputs", [64, 150])
def test_the_native_kernel_adds_each_rows_update_into_a_part_of_a_wider_output(
    built, grouped, inputs, outputs, dtype, bf16_products
):
    """Widths off the kernel's blocks, base rows, a slot without weights on this layer (masked only), a row
    on a slot the batch reuses, and two layers' outputs side by side inside a wider output (as q and k in a
    stacked projection's output; the columns around them untouched). bf16 stacks (q4 engines' copies) give
    the update of their own rounded weights, summed in fp32; asked for ``bf16_products`` (prefill passes) on a
    CPU with AVX512-BF16, the kernel multiplies them with vdpbf16ps, and x and ``scale * (x @ A)`` are rounded
    to bf16 as well (fp32 stacks ignore the flag)."""
    torch.manual_seed(0)
    ranks = torch.tensor([8, 8, 8] if grouped else [8, 0, 5], dtype=torch.long)
    scales = torch.tensor([2.0, 0.5, 1.5])
    if grouped:
        a = torch.randn(3, 8, inputs).transpose(1, 2)  # stored [slots, r, in], used as [slots, in, r]
        b = torch.randn(3, 8, outputs)
    else:
        a = torch.randn(13, inputs).t()
        b = torch.randn(13, outputs)
    row_slots = torch.tensor([1, 0, 3, 2, 1, 3, 1], dtype=torch.long)
    x = torch.randn(7, 1, inputs)  # a decode step's rows
    # A second layer on the same input in the same call (as k beside q), its own stack and 30 columns.
    other_ranks = torch.tensor([0, 3, 2], dtype=torch.long)
    other_a, other_b = torch.randn(5, inputs).t(), torch.randn(5, 30)
    wide = torch.randn(7, 1, 20 + outputs + 30 + 10)
    before = wide.clone()
    # The weights as the kernel reads them (the same strides), and those it then stands for in fp32.
    a, b, other_a, other_b = (w.to(dtype).float() for w in (a, b, other_a, other_b))
    kernel = native_decode.load_extension()
    kernel.lora_rows(
        x, wide, [20, 20 + outputs], [w.to(dtype) for w in (a, other_a)], [w.to(dtype) for w in (b, other_b)],
        [ranks, other_ranks], [scales, scales], row_slots, bf16_products,
    )  # fmt: skip
    rounded = bf16_products and dtype == torch.bfloat16 and kernel.lora_rows_has_bf16_products()
    for start, width, (a_, b_, ranks_) in (
        (20, outputs, (a, b, ranks)),
        (20 + outputs, 30, (other_a, other_b, other_ranks)),
    ):
        _assert_update(
            wide[:, 0, start : start + width],
            before[:, 0, start : start + width],
            x[:, 0],
            a_,
            b_,
            ranks_,
            scales,
            row_slots,
            rounded,
        )
    assert torch.equal(wide[..., :20], before[..., :20])
    assert torch.equal(wide[..., 50 + outputs :], before[..., 50 + outputs :])
    assert torch.equal(wide[1], before[1])  # the base row


def _assert_update(after, before, x, a, b, ranks, scales, row_slots, rounded):
    """``after`` is ``before`` plus each row's update (``_reference_update``): to float rounding, or where the kernel
    rounded to bf16 (``rounded``) to 0.2% of the largest update (the sums' order can move a hidden value to its
    other bf16 neighbour)."""
    update = _reference_update(x, a, b, ranks, scales, row_slots, bf16_products=rounded)
    if rounded:
        assert torch.allclose(after, before + update, rtol=0, atol=2e-3 * float(update.abs().max()))
    else:
        assert torch.allclose(after, before + update, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_native_kernel_splits_many_rows_of_one_adapter_by_rows(built, dtype):
    """A prefill pass's positions on one adapter (more than 64 rows: more than a decode step has) are split
    between the threads by rows, each part all the columns: every row still gets exactly its update, base rows
    none."""
    torch.manual_seed(2)
    a, b = torch.randn(6, 45).t().to(dtype), torch.randn(6, 70).to(dtype)
    ranks, scales = torch.tensor([6], dtype=torch.long), torch.tensor([0.75])
    row_slots = torch.tensor([1] * 60 + [0] * 3 + [1] * 17, dtype=torch.long)
    x, out = torch.randn(80, 45), torch.randn(80, 70)
    before = out.clone()
    kernel = native_decode.load_extension()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the split needs two threads (make test runs one per process)
    try:
        kernel.lora_rows(x, out, [0], [a], [b], [ranks], [scales], row_slots, bf16_products=True)
    finally:
        torch.set_num_threads(threads)
    rounded = dtype == torch.bfloat16 and kernel.lora_rows_has_bf16_products()
    _assert_update(out, before, x, a.float(), b.float(), ranks, scales, row_slots, rounded)
    assert torch.equal(out[60:63], before[60:63])


@pytest.mark.parametrize("rows", [1, 3, 6])
def test_linear_rows_writes_x_times_the_weights_into_a_part_of_a_wider_output(built, rows):
    """Rows, inputs and outputs off the kernel's tiles (4 x 4 x 16), into a column slice of a stacked output."""
    torch.manual_seed(1)
    weight, x = torch.randn(37, 45), torch.randn(rows, 1, 45)
    wide = torch.randn(rows, 1, 60)
    before = wide.clone()
    native_decode.load_extension().linear_rows(x, weight, wide[..., 10:47])
    assert torch.allclose(wide[..., 10:47], x @ weight.t(), rtol=1e-5, atol=1e-5)
    assert torch.equal(wide[..., :10], before[..., :10]) and torch.equal(wide[..., 47:], before[..., 47:])


@pytest.mark.parametrize("adapters", [False, True], ids=["base", "mixed-adapters"])
def test_a_batch_of_fp32_rows_gets_the_python_steps_logits_through_the_native_products(built, adapters):
    """Several rows (padded, so the single-row step does not take them): fp32 products through ``linear_rows``
    and, with a BatchedLora given the extension, the rows' adapter updates through ``lora_rows``."""
    model = _llama()
    batched = None
    forward_model = model
    if adapters:
        forward_model = _with_adapters(model, ["one", "two"], seed=3, alpha=8)
        batched = BatchedLora(forward_model, kernel=native_decode.load_extension())
        batched.rebuild(["one", "two"])
        batched.set_rows(["two", "__base__", "one"])
    native, python = LlamaDecodeStep(model, native=True), LlamaDecodeStep(model)
    assert native.extension is not None
    prompts = [[5, 9, 13, 200, 31], [7, 8], [100, 101, 102]]
    with torch.inference_mode():
        ours_cache, mask, token, length = _prefill(forward_model, prompts)
        theirs_cache = _prefill(forward_model, prompts)[0]
        for _ in range(6):
            mask = torch.cat([mask, torch.ones((3, 1), dtype=mask.dtype)], dim=1)
            kernel = batched.kernel if batched is not None else None
            if batched is not None:
                batched.kernel = None  # the Python step's updates: PyTorch's products
            theirs = python(token, mask, length, theirs_cache, batched)
            if batched is not None:
                batched.kernel = kernel
            ours = native(token, mask, length, ours_cache, batched)
            assert torch.allclose(ours, theirs, rtol=0, atol=1e-5 * theirs.abs().max())
            token, length = theirs.argmax(-1, keepdim=True), length + 1
    assert native.native_steps == 0


def _q4_model_on_three_adapters(seed: int, alpha: int = 8):
    """(tiny q4 model, its PEFT model with adapters "one", "two", "three", a counting kernel, a BatchedLora on
    them with that kernel)."""
    model = _llama()
    use_q4_decode_weights(model)
    names = ["one", "two", "three"]
    peft_model = _with_adapters(model, names, seed=seed, alpha=alpha)
    kernel = _CountingKernel()
    batched = BatchedLora(peft_model, kernel=kernel)
    batched.rebuild(names)
    return model, peft_model, kernel, batched


def test_a_q4_batch_on_adapters_reads_bf16_copies_and_gets_the_python_steps_logits(built):
    """q4 engines give the kernel bf16 copies of their adapters (half the bytes a step reads), which decode
    steps ask it to multiply with vdpbf16ps (x and ``x @ A`` rounded to bf16 too, as the base's own bf16 and
    4-bit products round x): the step's logits then stay within the q4 path's own bf16 rounding of PyTorch's
    fp32 updates, and the copies count toward the adapters' bytes."""
    model, peft_model, extension, batched = _q4_model_on_three_adapters(seed=5)
    stacked = next(iter(batched._stacks.values())).full
    assert stacked.kernel_a.dtype == stacked.kernel_b.dtype == torch.bfloat16 and stacked.a.dtype == torch.float32
    assert torch.equal(stacked.kernel_a.float(), stacked.a.to(torch.bfloat16).float())
    fp32_bytes = sum(p.numel() * 4 for key, p in peft_model.named_parameters() if ".two." in key)
    assert lora_batch.kernel_copy_bytes(peft_model, "two", extension) == fp32_bytes // 2
    assert lora_batch.kernel_copy_bytes(peft_model, "two", None) == 0  # no kernel, no copies
    batched.set_rows(["two", "__base__", "one", "three", "two"])
    step = LlamaDecodeStep(model)
    prompts = [[5, 9, 13, 200, 31], [7, 8], [100, 101, 102], [4, 4, 4, 4], [9]]
    with torch.inference_mode():
        ours_cache, mask, token, length = _prefill(peft_model, prompts)
        theirs_cache = _prefill(peft_model, prompts)[0]
        for _ in range(4):
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype)], dim=1)
            batched.kernel = None  # PyTorch's updates from the fp32 stacks
            theirs = step(token, mask, length, theirs_cache, batched)
            batched.kernel = extension
            ours = step(token, mask, length, ours_cache, batched)
            assert torch.allclose(ours, theirs, rtol=0, atol=1e-2 * theirs.abs().max())
            token, length = theirs.argmax(-1, keepdim=True), length + 1
    assert extension.calls > 0 and extension.bf16_products == {True}


@pytest.mark.parametrize("weights", ["fp32", "q4"])
def test_adapters_on_different_modules_share_a_batch_through_the_kernel(built, weights):
    """One adapter on q/v only, one on every linear layer, one on gate/down only (so k has an adapter in one
    slot, up in one, and no layer in all three), ranks 4/6/8, beside a base row: PEFT's numbers (q4: within the
    bf16 copies' rounding)."""
    model = _llama()
    if weights == "q4":
        use_q4_decode_weights(model)
    targets = {"qv": ["q_proj", "v_proj"], "all": "all-linear", "mlp": ["gate_proj", "down_proj"]}
    peft_model = None
    for index, (name, modules) in enumerate(targets.items()):
        torch.manual_seed(index)
        config = LoraConfig(r=4 + 2 * index, lora_alpha=8, target_modules=modules, init_lora_weights=False)
        if peft_model is None:
            peft_model = get_peft_model(model, config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
    peft_model.eval()
    rows = ["qv", "all", "__base__", "mlp", "qv", "mlp"]
    prompts = [[5 + index, 9, 13, 200 + index] for index in range(len(rows))]
    kernel = _CountingKernel()
    with torch.inference_mode():
        cache, mask, token, length = _prefill(peft_model, prompts, adapter_names=rows)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
        expected = peft_model(
            input_ids=token, attention_mask=mask, position_ids=length, past_key_values=cache, use_cache=True,
            adapter_names=rows,
        ).logits[:, -1]  # fmt: skip
        batched = BatchedLora(peft_model, kernel=kernel)
        batched.rebuild(list(targets))
        batched.set_rows(rows)
        cache = _prefill(peft_model, prompts)[0]
        ours = LlamaDecodeStep(model)(token, mask, length, cache, batched)
    tolerance = 1e-5 if weights == "fp32" else 1e-2 * float(expected.abs().max())
    assert torch.allclose(ours, expected, rtol=0, atol=tolerance)
    assert kernel.calls > 0


def test_the_native_kernel_refuses_rows_it_cannot_place(built):
    kernel = native_decode.load_extension()
    a, b, x, out = torch.randn(4, 16).t(), torch.randn(4, 8), torch.randn(2, 16), torch.zeros(2, 8)
    ranks, scales = torch.tensor([4], dtype=torch.long), torch.tensor([1.0])
    with pytest.raises(RuntimeError, match="names no slot"):
        kernel.lora_rows(x, out, [0], [a], [b], [ranks], [scales], torch.tensor([1, 2], dtype=torch.long))
    with pytest.raises(RuntimeError, match="add up"):
        kernel.lora_rows(x, out, [0], [a], [b], [torch.tensor([3], dtype=torch.long)], [scales], torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="one A, B"):
        kernel.lora_rows(x, out, [0, 0], [a], [b], [ranks], [scales], torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="do not fit"):
        kernel.lora_rows(x, out, [1], [a], [b], [ranks], [scales], torch.tensor([1, 1]))
    assert torch.equal(out, torch.zeros(2, 8))


def _engine(model_dir, adapters, weights: str, native: bool) -> Engine:
    def load():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return apply_decode_weights(model, weights), AutoTokenizer.from_pretrained(model_dir)

    engine = Engine(load, adapters.__getitem__, max_batch_size=16, native_decode=native)
    engine.wait_ready(timeout=BUILD_TIMEOUT)
    return engine


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("loaded", [1, 2], ids=["one-adapter", "two-adapters"])
@pytest.mark.parametrize("weights", ["fp32", "q4"])
def test_an_engine_with_it_answers_as_without_alone_joined_by_others_and_with_adapters_loaded(
    built, tiny_model_dir, lora_adapter_dirs, tmp_path, weights, loaded
):
    """With one adapter loaded, its stack is PEFT's own weights: several rows on it in one step once crashed
    the kernel, which then read B in PEFT's [out, r] layout."""
    model_dir = _peaked_q4_1_model(tiny_model_dir, tmp_path / "model")
    adapters = {key: lora_adapter_dirs[key] for key in ADAPTER_KEYS[:loaded]}
    choices = [None, *adapters] if loaded == 1 else [None, None, *adapters]
    requests = [
        GenerationRequest(prompt_ids=[5 + i, 300 + 7 * i, 42], adapter=choices[i % len(choices)],
                          max_new_tokens=24 - 2 * i, temperature=0)
        for i in range(8)
    ]  # fmt: skip

    def answers(engine: Engine):
        async def run():
            alone = [await engine.complete(r) for r in requests]
            # Rows join and leave: steps go from one row (native) to several (Python) and back.
            together = await asyncio.gather(*(engine.complete(r) for r in requests))
            return [c.token_ids for c in alone], [c.token_ids for c in together]

        try:
            return asyncio.run(run()), engine.stats()
        finally:
            engine.close()

    python_engine = _engine(model_dir, adapters, weights, native=False)
    (python_alone, python_together), _ = answers(python_engine)
    engine = _engine(model_dir, adapters, weights, native=True)
    assert engine._decode_step.native is not None
    (native_alone, native_together), stats = answers(engine)
    assert native_alone == python_alone
    assert native_together == python_together
    # With q4 the kernel's bf16 copies of the adapters count toward their bytes: half their fp32 bytes again.
    fp32_bytes = python_engine.adapters.loaded_bytes
    assert engine.adapters.loaded_bytes == (fp32_bytes + fp32_bytes // 2 if weights == "q4" else fp32_bytes)
    assert 0 < stats["native_decode_steps"] < stats["decode_steps"]  # alone natively, together in Python


def test_an_engine_whose_build_fails_serves_through_the_python_step(tiny_model_dir, monkeypatch, caplog):
    def no_compiler():
        raise RuntimeError("the native decode step could not be built (OSError: no C++ compiler)")

    monkeypatch.setattr(native_decode, "load_extension", no_compiler)

    def load():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return apply_decode_weights(model, "q4"), AutoTokenizer.from_pretrained(tiny_model_dir)

    engine = Engine(load, max_batch_size=4, native_decode=True)
    try:
        with caplog.at_level(logging.WARNING):
            engine.wait_ready(timeout=120)
        request = GenerationRequest(prompt_ids=[5, 300, 42], max_new_tokens=6, temperature=0)
        assert len(asyncio.run(engine.complete(request)).token_ids) == 6
    finally:
        engine.close()
    assert engine._decode_step.native is None
    assert "no C++ compiler" in caplog.text


def test_the_setting_names_itself_when_wrong(monkeypatch):
    from openft.api.serving_state import ServingLimits

    monkeypatch.delenv("OPENFT_SERVING_NATIVE_DECODE", raising=False)
    assert native_decode_enabled()
    monkeypatch.setenv("OPENFT_SERVING_NATIVE_DECODE", "OFF")
    assert not native_decode_enabled()
    monkeypatch.setenv("OPENFT_SERVING_NATIVE_DECODE", "fast")
    with pytest.raises(ValueError, match="OPENFT_SERVING_NATIVE_DECODE must be on or off, got 'fast'"):
        ServingLimits.from_env()


def test_a_cache_layer_makes_room_and_takes_the_positions_written_into_it():
    layer = kv_batch.GrowingLayer()
    keys, values = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    layer.update(keys, values)
    for step in range(70):  # past the spare room: the buffers regrow and keep what they held
        length = layer.make_room(1)
        assert length == 5 + step
        layer._key_buffer[:, :, length] = float(step)
        layer._value_buffer[:, :, length] = -float(step)
        layer.grow_views(length + 1)
    assert torch.equal(layer.keys[:, :, :5], keys) and torch.equal(layer.values[:, :, :5], values)
    assert torch.equal(layer.keys[0, 1, 5:, 0], torch.arange(70.0))
    assert layer.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))[0].shape == (1, 2, 76, 4)


@pytest.mark.real_model
@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("weights", ["fp32", "q4"])
def test_on_the_bundled_model_native_steps_follow_the_python_steps(built, real_model_dir, weights):
    """Teacher-forced on the Python step's own greedy answers, the native step picks the same token wherever the
    top two are apart. fp32: logits within float rounding (6e-5 when measured; they span ~50). q4: the 4-bit
    kernel takes bf16 inputs, and a last-bit difference in a norm's fp32 sum can round an input to the other
    bf16 neighbour, so logits move more (0.41 at most when measured, against the 0.47 q4 itself moves them
    from fp32) and still chose the same token at all 125 steps whose top two were 0.01 or more apart."""
    from openft.models.chat_template import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    if weights == "q4":
        use_q4_decode_weights(model)
    native, python = LlamaDecodeStep(model, native=True), LlamaDecodeStep(model)
    assert native.native is not None
    largest, compared = 0.0, 0
    with torch.inference_mode():
        for topic in ["the sea", "bread", "winter", "trains"]:
            prompt = encode_prompt(tokenizer, [{"role": "user", "content": f"Write two sentences about {topic}."}])
            ours_cache, mask, token, length = _prefill(model, [prompt])
            theirs_cache = _prefill(model, [prompt])[0]
            for _ in range(32):
                mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
                theirs = python(token, mask, length, theirs_cache)
                ours = native(token, mask, length, ours_cache)
                largest = max(largest, (ours - theirs).abs().max().item())
                top2 = theirs.topk(2).values[0]
                if top2[0] - top2[1] > 1e-2:
                    compared += 1
                    assert ours.argmax().item() == theirs.argmax().item()
                token, length = theirs.argmax(-1, keepdim=True), length + 1
    assert largest < (1e-3 if weights == "fp32" else 1.0) and compared > 100
    assert native.native_steps == 4 * 32


def test_a_q4_prefill_on_several_adapters_takes_its_updates_from_the_kernel(built):
    """A prefill pass whose rows use two or more adapters takes their updates from ``lora_rows`` where it
    multiplies q4 engines' bf16 copies with vdpbf16ps (each adapter's rows read its weights from cache, at twice
    MKL's speed for a few hundred positions an adapter). Every position's logits stay within 2% of the largest
    of PyTorch's fp32 products: x, ``x @ A`` and the weights are all bf16 there, as the base's own bf16 product
    takes them (0.6-1.3% on this model over five seeds; the bundled model's logits moved by at most 0.5 of 33
    on the serving bench's prompts and random rank-16 adapters, about what q4 itself moves them). One adapter
    on every row keeps MKL's one large product, which is faster there: the same logits bit for bit."""
    _, peft_model, kernel, batched = _q4_model_on_three_adapters(seed=7, alpha=2)
    _check_prefill_through_kernel(peft_model, kernel, batched, kernel.lora_rows_has_bf16_products(), 2e-2)


def test_an_fp32_prefill_on_several_adapters_takes_its_updates_from_the_kernel(built):
    """fp32 engines' prefill passes on two or more adapters also get their updates from ``lora_rows``, from the
    fp32 stacks with fp32 sums (faster than MKL's thin products per adapter: 16 rows x 39 tokens on 4 adapters
    of the bundled model, 63-129 -> 36-72 ms a pass): PyTorch's logits to float rounding. One adapter on every
    row keeps MKL's one large product: the same logits bit for bit."""
    names = ["one", "two", "three"]
    peft_model = _with_adapters(_llama(), names, seed=11, alpha=8)
    kernel = _CountingKernel()
    batched = BatchedLora(peft_model, kernel=kernel)
    batched.rebuild(names)
    _check_prefill_through_kernel(peft_model, kernel, batched, True, 1e-4)


def _check_prefill_through_kernel(peft_model, kernel, batched, mixed_through_kernel: bool, tolerance: float):
    """A prefill pass on three adapters (and base rows) against PyTorch's products of the fp32 stacks, within
    ``tolerance`` of the largest logit, through the kernel when ``mixed_through_kernel``; one adapter on every
    row: PyTorch's products, the same logits bit for bit."""
    prompts = [[5, 9, 13, 200, 31], [7, 8], [100, 101, 102], [4, 4, 4, 4], [9], [11, 12, 13]]
    for rows, through_kernel in (
        (["two", "__base__", "one", "three", "two", "one"], mixed_through_kernel),
        (["one"] * len(prompts), False),
    ):
        batched.set_rows(rows)
        with torch.inference_mode():
            batched.kernel = None  # PyTorch's products of the fp32 stacks
            theirs = _prefill_logits(peft_model, prompts)
            batched.kernel, kernel.calls = kernel, 0
            ours = _prefill_logits(peft_model, prompts)
        assert (kernel.calls > 0) == through_kernel
        assert torch.allclose(ours, theirs, rtol=0, atol=tolerance * float(theirs.abs().max()))
        if not through_kernel:
            assert torch.equal(ours, theirs)


def _prefill_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    """Every position's logits of a left-padded prefill pass (padding positions zeroed: they differ freely)."""
    input_ids, mask, position_ids = left_padded(prompts)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
    return logits * mask[..., None]
