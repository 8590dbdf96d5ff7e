"""The training fast paths give the numbers the plain paths give: what makes them safe to turn on by default.

Per-example attention over a padding-free batch must equal running each example alone, and the loss on
trained positions only must equal TRL's full-vocabulary loss, metric and gradient included.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM
from trl import SFTTrainer

from openft.config import reset_settings
from openft.training import fast_dropout
from openft.training.callbacks import NullReporter
from openft.training.fast_dropout import FastLoraDropout
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.rms_norm import use_fast_rms_norm
from openft.training.sft_loss import TrainedPositionsSFTTrainer
from openft.training.short_attention import short_causal_attention
from openft.training.trainer import build_trainer, use_bf16
from openft.training.trainer_config import TrainerRunConfig
from openft.training.varlen_attention import register_varlen_attention


def _model(model_dir, attention: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention).eval()


def test_packed_batch_logits_equal_each_example_run_alone(tiny_model_dir):
    varlen = _model(tiny_model_dir, register_varlen_attention())
    plain = _model(tiny_model_dir, "sdpa")
    examples = [torch.randint(5, 1000, (n,)) for n in (7, 3, 12)]
    packed = torch.cat(examples)[None]
    boundaries = torch.tensor([0, 7, 10, 22], dtype=torch.int32)
    positions = torch.cat([torch.arange(len(e)) for e in examples])[None]
    with torch.no_grad():
        out = varlen(
            input_ids=packed, position_ids=positions, cu_seq_lens_q=boundaries, cu_seq_lens_k=boundaries,
            max_length_q=12, max_length_k=12,
        ).logits  # fmt: skip
        alone = torch.cat([plain(input_ids=e[None]).logits for e in examples], dim=1)
    torch.testing.assert_close(out, alone, rtol=1e-4, atol=1e-4)


def test_padded_batches_take_the_ordinary_sdpa_path(tiny_model_dir):
    varlen = _model(tiny_model_dir, register_varlen_attention())
    plain = _model(tiny_model_dir, "sdpa")
    ids = torch.randint(5, 1000, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        got = varlen(input_ids=ids, attention_mask=mask).logits
        expected = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=1e-5, atol=1e-5)


def _trainer(tmp_path, model_dir, lora_dropout: float = 0.0) -> TrainedPositionsSFTTrainer:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"What is {i} plus {i}? " * (1 + i % 3)},
                {"role": "assistant", "content": f"It is {2 * i}." + " Really." * (i % 4)},
            ]
        }
        for i in range(6)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    hparams = resolve_hyperparameters(
        "supervised",
        {"n_epochs": 1, "batch_size": 3, "lora_dropout": lora_dropout},
        n_train_examples=6,
        context_length=256,
    )
    config = TrainerRunConfig(
        base_model=str(model_dir), training_file=str(train), output_dir=str(tmp_path / "out"),
        hyperparameters=hparams, seed=3, report_to=[],
    )  # fmt: skip
    trainer = build_trainer(config, NullReporter()).trainer
    assert isinstance(trainer, TrainedPositionsSFTTrainer)
    return trainer


def _loss_and_grads(compute, trainer, batch, num_items):
    trainer.model.zero_grad()
    loss = compute(trainer, trainer.model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("num_items", [None, 40])
def test_loss_on_trained_positions_equals_trls_loss_metric_and_gradient(tmp_path, tiny_model_dir, num_items):
    trainer = _trainer(tmp_path, tiny_model_dir)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "cu_seq_lens_q" in batch and batch["input_ids"].shape[0] == 1  # padding-free

    ours, our_grads = _loss_and_grads(TrainedPositionsSFTTrainer.compute_loss, trainer, batch, num_items)
    our_accuracy = trainer._metrics["train"]["mean_token_accuracy"][-1]
    theirs, their_grads = _loss_and_grads(SFTTrainer.compute_loss, trainer, batch, num_items)
    their_accuracy = trainer._metrics["train"]["mean_token_accuracy"][-1]

    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert our_accuracy == pytest.approx(their_accuracy)
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name, grad in our_grads.items():
        # To rounding at the tensor's own scale: the two paths take the LM head through different matmuls, and
        # under bf16 autocast attention's backward rounds its products' inputs to bf16 (short_attention.py),
        # where a last-bit difference from the head can round the other way (measured up to 3.5e-4).
        scale = their_grads[name].abs().max().item()
        tolerance = 1e-3 if use_bf16() else 1e-4
        torch.testing.assert_close(grad, their_grads[name], rtol=1e-4, atol=max(1e-6, tolerance * scale), msg=name)


def test_trainable_weights_stay_fp32_and_frozen_ones_use_the_compute_dtype(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir)
    frozen_dtype = torch.bfloat16 if use_bf16() else torch.float32
    trainable = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32}
    assert frozen == {frozen_dtype}
    assert trainer.args.bf16 == use_bf16()


@pytest.fixture
def precision(monkeypatch):
    def set_to(value: str) -> None:
        monkeypatch.setenv("OPENFT_TRAINING_PRECISION", value)
        reset_settings()

    yield set_to
    monkeypatch.delenv("OPENFT_TRAINING_PRECISION", raising=False)
    reset_settings()


def test_fp32_can_be_forced_and_then_every_weight_and_step_is_fp32(tmp_path, tiny_model_dir, precision):
    precision("fp32")
    trainer = _trainer(tmp_path, tiny_model_dir)
    assert not trainer.args.bf16
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def test_an_unknown_precision_is_refused_naming_the_variable(precision):
    precision("fp8")
    with pytest.raises(ValueError, match="OPENFT_TRAINING_PRECISION must be one of auto, bf16, fp32"):
        use_bf16()


@pytest.fixture(params=["native", "pytorch"])
def mask_source(request, monkeypatch):
    """FastLoraDropout's masks from native/dropout.c, or from PyTorch's generator where no compiler is."""
    if request.param == "native":
        if fast_dropout.dropout_library() is None:
            pytest.skip("no C compiler here")
    else:
        monkeypatch.setattr(fast_dropout, "dropout_library", lambda: None)
    return request.param


def test_fast_lora_dropout_drops_like_pytorchs_and_backward_uses_the_same_mask(mask_source):
    dropout = FastLoraDropout(0.05).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(7)
    y = dropout(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.05) < 0.0015  # 1e6 draws: ~7 standard deviations
    assert y[y != 0].unique().tolist() == [pytest.approx(1 / 0.95)]
    rows, columns = (y == 0).float().mean(1), (y == 0).float().mean(0)
    assert rows.std() < 0.03 and columns.std() < 0.03  # no row or column pattern in the mask
    y.backward(torch.full_like(y, 2.0))
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() * 2 / 0.95)
    torch.manual_seed(7)
    assert torch.equal(dropout(x.detach()), y.detach())  # the seed fixes the mask
    assert dropout.eval()(x) is x
    # bf16 (training under autocast): the same numbers as multiplying by a boolean mask, then by the scale
    activations = torch.randn(64, 576).to(torch.bfloat16)
    dropped_out = dropout.train()(activations)
    assert dropped_out.dtype == torch.bfloat16
    assert torch.equal(dropped_out, activations.mul(dropped_out != 0).mul_(1 / 0.95))


def test_fast_lora_dropout_masks_every_element_of_odd_sized_inputs(mask_source):
    dropout = FastLoraDropout(0.5).train()
    torch.manual_seed(1)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = torch.ones(7, 333, dtype=dtype)  # 2,331 elements: the last draw is split over three of them
        y = dropout(x)
        assert y.unique().tolist() == [0.0, pytest.approx(2.0)]
        assert abs((y == 0).float().mean().item() - 0.5) < 0.05
        tails = torch.stack([dropout(x).flatten()[-3:] for _ in range(300)])
        assert ((tails == 0).float().mean(0) - 0.5).abs().max() < 0.12  # the tail is drawn like the rest
    torch.manual_seed(2)
    first = dropout(torch.ones(5, 9))
    assert not torch.equal(first, dropout(torch.ones(5, 9)))  # each call draws afresh


def test_without_a_working_compiler_dropout_falls_back_to_pytorchs_draws(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    fast_dropout.dropout_library.cache_clear()
    try:
        with caplog.at_level("INFO", logger="openft.training.native_build"):
            assert fast_dropout.dropout_library() is None
        assert "no-such-compiler" in caplog.text
        torch.manual_seed(3)
        y = FastLoraDropout(0.5).train()(torch.ones(40, 50))
        assert abs((y == 0).float().mean().item() - 0.5) < 0.1 and list(tmp_path.iterdir()) == []
    finally:
        fast_dropout.dropout_library.cache_clear()


def test_the_native_dropout_builds_where_a_compiler_is():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    assert fast_dropout.dropout_library() is not None


def test_cpu_lora_trainer_uses_fast_dropout_on_every_lora_layer(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir, lora_dropout=0.1)
    fast = [m for m in trainer.model.modules() if isinstance(m, FastLoraDropout)]
    lora_layers = [m for m in trainer.model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)]
    assert fast and len(fast) == len(lora_layers) and all(m.p == 0.1 for m in fast)
    assert not any(type(m) is torch.nn.Dropout and m.p > 0 for m in trainer.model.modules())


def test_short_bf16_examples_attend_through_batched_products_and_long_ones_through_flash():
    from openft.training import varlen_attention

    lengths = (40, varlen_attention.CPU_SHORT_ATTENTION_MAX_TOKENS + 30)
    total = sum(lengths)
    torch.manual_seed(0)
    query = torch.randn(1, 4, total, 16, dtype=torch.bfloat16)
    key, value = torch.randn(1, 2, total, 16, dtype=torch.bfloat16), torch.randn(1, 2, total, 16, dtype=torch.bfloat16)
    boundaries = torch.tensor([0, lengths[0], total], dtype=torch.int32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in training
        out, _ = varlen_attention.varlen_sdpa_attention_forward(
            torch.nn.Module(), query, key, value, None, cu_seq_lens_q=boundaries
        )
    assert out.dtype == torch.bfloat16 and out.shape == (1, total, 4, 16)

    def alone(start, end, dtype):
        q, k, v = (t[:, :, start:end].to(dtype) for t in (query, key, value))
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return expected.to(torch.bfloat16).transpose(1, 2)

    short = (t[:, :, : lengths[0]] for t in (query, key, value))
    assert torch.equal(out[:, : lengths[0]], short_causal_attention(*short, None).transpose(1, 2))
    exact = alone(0, lengths[0], torch.float64).float()
    torch.testing.assert_close(out[:, : lengths[0]].float(), exact, rtol=0, atol=0.02 * exact.abs().max().item())
    assert torch.equal(out[:, lengths[0] :], alone(lengths[0], total, torch.bfloat16))


@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 2), (3, 3)])
def test_short_attention_gives_attentions_outputs_and_gradients_to_bf16_rounding(heads, kv_heads):
    torch.manual_seed(4)
    length, dim = 70, 32
    inputs = [torch.randn(1, n, length, dim, dtype=torch.bfloat16) for n in (heads, kv_heads, kv_heads)]
    grad = torch.randn(1, heads, length, dim, dtype=torch.bfloat16)
    ours = [t.clone().requires_grad_() for t in inputs]
    out = short_causal_attention(*ours, 0.2)
    out.backward(grad)
    exact = [t.double().requires_grad_() for t in inputs]
    reference = torch.nn.functional.scaled_dot_product_attention(
        *exact, is_causal=True, scale=0.2, enable_gqa=heads != kv_heads
    )
    reference.backward(grad.double())
    for got, want in zip([out, *(t.grad for t in ours)], [reference, *(t.grad for t in exact)], strict=True):
        assert got.dtype == torch.bfloat16 and got.shape == want.shape
        # bf16 products and probabilities: measured within 0.6% of each tensor's largest value
        torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=0.015 * want.abs().max().item())


def test_under_autocast_lora_inputs_skip_the_fp32_round_trip_with_the_same_logits(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir)
    model = trainer.model.eval()
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    ids = torch.randint(5, 1000, (1, 12))
    with torch.no_grad():
        model(input_ids=ids)
        assert layers and all(layer.cast_input_dtype_enabled for layer in layers)  # no autocast: PEFT casts
        with torch.autocast("cpu", dtype=torch.bfloat16):
            skipped = model(input_ids=ids).logits
            assert not any(layer.cast_input_dtype_enabled for layer in layers)
            for layer in layers:  # what PEFT alone would do: the round trip, forced back on for one pass
                layer.cast_input_dtype_enabled = True
            decoder = model.get_base_model().model
            hooks = dict(decoder._forward_pre_hooks)
            decoder._forward_pre_hooks.clear()
            cast = model(input_ids=ids).logits
            decoder._forward_pre_hooks.update(hooks)
        model(input_ids=ids)
        assert all(layer.cast_input_dtype_enabled for layer in layers)  # back on once autocast is off
    assert torch.equal(skipped, cast)


@pytest.mark.parametrize("lora_dropout", [0.0, 0.3])  # with dropout, its scale joins the product's alpha
def test_lora_updates_summed_by_one_product_give_peft_numbers_to_rounding(tmp_path, tiny_model_dir, lora_dropout):
    from peft.tuners.lora import Linear as LoraLinear

    trainer = _trainer(tmp_path, tiny_model_dir, lora_dropout=lora_dropout)
    model = trainer.model.train()
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert layers and all("forward" in vars(layer) for layer in layers)  # every LoRA layer got the fused sum
    for layer in layers:  # an update big enough to show: PEFT initialises B to zero
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.05)
    ids = torch.randint(5, 1000, (2, 12))

    def logits_and_grads(fused: bool, *, autocast: bool):
        saved = {layer: vars(layer).pop("forward") for layer in layers} if not fused else {}
        model.zero_grad()
        torch.manual_seed(11)  # the same dropout masks on both paths
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=ids).logits
        logits.float().square().mean().backward()
        grads = [layer.lora_B["default"].weight.grad.clone() for layer in layers]
        for layer, forward in saved.items():
            layer.forward = forward
        return logits.detach().float(), grads

    fused, fused_grads = logits_and_grads(True, autocast=False)
    peft, peft_grads = logits_and_grads(False, autocast=False)
    assert torch.allclose(fused, peft, rtol=0, atol=1e-5 * peft.abs().max().item())  # fp32: an ulp per sum
    for got, expected in zip(fused_grads, peft_grads, strict=True):
        assert torch.allclose(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item() + 1e-12)

    # bf16 autocast: rounding through the tiny model's layers moves PEFT's own numbers ~4% (gradients, 8% with
    # dropout) from its fp32 ones, the same rounding in another order moves the fused path's; so the fused path
    # must be no further from the fp32 numbers than PEFT's is. (A dropout scale left out would be 1 / 0.7 off.)
    def off(got, reference) -> float:
        got, reference = torch.cat([t.flatten() for t in got]), torch.cat([t.flatten() for t in reference])
        return ((got - reference).norm() / reference.norm()).item()

    fused_bf16, fused_bf16_grads = logits_and_grads(True, autocast=True)
    peft_bf16, peft_bf16_grads = logits_and_grads(False, autocast=True)
    assert off([fused_bf16], [peft]) <= 1.25 * off([peft_bf16], [peft]) + 1e-3
    assert off(fused_bf16_grads, peft_grads) <= 1.25 * off(peft_bf16_grads, peft_grads) + 1e-3
    with torch.no_grad(), model.disable_adapter():  # disabled adapters: PEFT's own forward, the same numbers
        fused_off = model(input_ids=ids).logits
        saved = {layer: vars(layer).pop("forward") for layer in layers}
        peft_off = model(input_ids=ids).logits
        for layer, forward in saved.items():
            layer.forward = forward
    assert torch.equal(fused_off, peft_off) and not torch.allclose(fused_off.float(), fused)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fast_rms_norm_gives_transformers_output_bit_for_bit_and_its_gradients_to_rounding(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    plain = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    with torch.no_grad():
        plain.weight.copy_(torch.rand(48) + 0.5)
    fast = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    fast.load_state_dict(plain.state_dict())
    assert use_fast_rms_norm(nn.Sequential(fast)) == 1
    x = (torch.randn(3, 17, 48) * 3).to(dtype)
    grad = torch.randn(3, 17, 48).to(dtype)
    results = []
    for norm in (plain, fast):  # trainable weight, as in a full fine-tune: both gradients
        inputs = x.clone().requires_grad_(True)
        output = norm(inputs)
        output.backward(grad)
        results.append((output.detach(), inputs.grad, norm.weight.grad))
    (expected, expected_dx, expected_dw), (got, dx, dw) = results
    assert torch.equal(got, expected)  # the forward is transformers' own arithmetic
    # transformers rounds grad * weight to bf16 before its fp32 steps, the fast backward does not: in bf16 the
    # gradients may differ in the last of their 8 bits; in fp32 in the last digits.
    tolerance = 2**-7 if dtype == torch.bfloat16 else 1e-6
    for got_grad, expected_grad in ((dx, expected_dx), (dw, expected_dw)):
        error = (got_grad.float() - expected_grad.float()).abs().max()
        assert error <= tolerance * expected_grad.float().abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast changes nothing inside the norm
        assert torch.equal(fast(x), plain(x))


def test_cpu_trainer_gives_every_rms_norm_the_fast_path(tmp_path, tiny_model_dir):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    trainer = _trainer(tmp_path, tiny_model_dir)
    norms = [m for m in trainer.model.modules() if isinstance(m, LlamaRMSNorm)]
    assert norms and all("forward" in vars(norm) for norm in norms)
