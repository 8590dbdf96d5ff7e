"""The supervised loss's native cross-entropy gives PyTorch's loss, gradient and predictions to rounding.

A user would notice a wrong loss curve, a wrong accuracy or training that drifts: so the kernel's numbers
are checked against float64 arithmetic, on rows wide and narrow, with ties, extreme and non-finite logits,
and split between threads; and bad targets still get PyTorch's error.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from openft.training import native_cross_entropy
from openft.training.native_cross_entropy import cross_entropy_and_predictions


@pytest.fixture(params=["native", "pytorch"])
def kernel(request, monkeypatch):
    if request.param == "native":
        if native_cross_entropy.cross_entropy_library() is None:
            pytest.skip("no C compiler here")
    else:
        monkeypatch.setattr(native_cross_entropy, "cross_entropy_library", lambda: None)
    return request.param


def _reference(logits: torch.Tensor, targets: torch.Tensor, row_grads: torch.Tensor):
    wide = logits.double()
    log_probs = torch.log_softmax(wide, dim=-1)
    losses = -log_probs.gather(1, targets[:, None])[:, 0]
    grad = (log_probs.exp() - torch.nn.functional.one_hot(targets, logits.shape[1])) * row_grads[:, None]
    return losses, grad


def _run(logits: torch.Tensor, targets: torch.Tensor, row_grads: torch.Tensor):
    leaf = logits.detach().requires_grad_()
    loss_sum, predictions = cross_entropy_and_predictions(leaf, targets)
    # a per-row weight through the sum's gradient: the kernel takes one scale a row
    loss_sum.backward(row_grads.mean())
    return loss_sum.detach(), predictions, leaf.grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(("rows", "vocab"), [(5, 7), (37, 1001), (48, 49152)])  # the last splits between threads
def test_loss_gradient_and_predictions_match_float64_to_rounding(kernel, dtype, rows, vocab):
    torch.manual_seed(rows)
    logits = (torch.randn(rows, vocab) * 4).to(dtype)
    logits[0, 1] = -200.0  # far below the row's maximum: exp underflows to 0
    logits[1, : min(3, vocab)] = logits[1].max() + 1  # a tie for the maximum: the first one is the prediction
    targets = torch.randint(0, vocab, (rows,))
    targets[2] = logits[2].argmax()  # a confident, correct row
    loss, predictions, grad = _run(logits, targets, torch.full((rows,), 0.25))

    losses, expected_grad = _reference(logits, targets, torch.full((rows,), 0.25))
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert loss.item() == pytest.approx(losses.sum().item(), rel=2e-6)
    assert torch.equal(predictions, logits.float().max(dim=-1).indices) and predictions[1] == 0
    # bf16: the gradient rounds once to bf16, within half a unit of its last place (2^-8 of the value at most).
    # fp32: exp(x - lse) carries the fp32 rounding of x - lse (lse ~ 10 here), ~1e-6 of the value, and the
    # target's p - 1 that of p (an ulp of 1.0), in PyTorch too.
    relative, absolute = (2.0**-8, 1e-30) if dtype == torch.bfloat16 else (1e-5, 2.0**-22 * 0.25)
    error = (grad.double() - expected_grad).abs()
    assert (error <= relative * expected_grad.abs() + absolute).all(), error.max()
    assert grad[0, 1] == 0


def test_non_finite_logits_give_what_pytorch_gives(kernel):
    logits = torch.randn(4, 300).to(torch.bfloat16)
    logits[0, 5] = float("nan")
    logits[1, 9] = float("inf")
    logits[2, 11] = float("-inf")
    targets = torch.tensor([1, 2, 3, 4])
    leaf = logits.detach().requires_grad_()
    native_losses = []
    for row in range(4):
        loss, _, grad = _run(logits[row : row + 1], targets[row : row + 1], torch.ones(1))
        native_losses.append(loss.item())
        if row == 2:
            assert grad[0, 11] == 0 and torch.isfinite(grad).all()
    assert torch.isnan(torch.tensor(native_losses[:2])).all()  # NaN or +inf in the row: NaN, as PyTorch's
    reference = torch.nn.functional.cross_entropy(leaf[2:].float(), targets[2:], reduction="none")
    assert native_losses[2:] == pytest.approx(reference.tolist(), rel=1e-5)


def test_targets_outside_the_vocabulary_get_pytorchs_error(kernel):
    with pytest.raises(IndexError, match="out of bounds"):
        cross_entropy_and_predictions(torch.randn(3, 10).to(torch.bfloat16), torch.tensor([0, 10, 2]))


def test_the_native_cross_entropy_builds_where_a_compiler_is():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    assert native_cross_entropy.cross_entropy_library() is not None


def test_spent_logits_take_the_gradient_and_a_second_backward_is_refused():
    if native_cross_entropy.cross_entropy_library() is None:
        pytest.skip("no C compiler here")
    leaf = torch.randn(3, 50).to(torch.bfloat16).requires_grad_()
    logits = leaf * 1
    loss, _ = cross_entropy_and_predictions(logits, torch.tensor([1, 2, 3]), spend_logits=True)
    loss.backward(retain_graph=True)
    assert torch.equal(leaf.grad, logits)  # the gradient was written over the spent logits
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()
