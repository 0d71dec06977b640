"""Losses on tiny inputs whose values can be checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from genrec.training.losses import bce, bpr, sampled_softmax, softmax_cross_entropy


def close(value: torch.Tensor, expected: float) -> None:
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_softmax_cross_entropy_by_hand() -> None:
    close(softmax_cross_entropy(torch.zeros(1, 2), torch.tensor([0])), math.log(2))
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = ((math.log(math.e + math.e**2 + math.e**3) - 3.0) + math.log(3)) / 2
    close(softmax_cross_entropy(logits, torch.tensor([2, 1])), expected)


def test_sampled_softmax_by_hand() -> None:
    # One negative, equal scores, no correction: -log(1/2).
    close(sampled_softmax(torch.zeros(1), torch.zeros(1, 1)), math.log(2))
    # logQ: pos 0 - log(1/2) = log 2, neg 0 - log(1/4) = log 4 -> -log(2 / (2 + 4)) = log 3.
    close(sampled_softmax(torch.zeros(1), torch.zeros(1, 1),
                          pos_logq=torch.tensor([math.log(0.5)]),
                          neg_logq=torch.tensor([math.log(0.25)])), math.log(3))
    # An accidental hit is removed: only the positive is left, loss 0.
    close(sampled_softmax(torch.zeros(1), torch.zeros(1, 1), neg_is_pos=torch.tensor([[True]])),
          0.0)


def test_sampled_softmax_with_all_other_items_is_full_softmax() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5], [1.0, 1.5, -0.5, 0.0]])
    targets = torch.tensor([2, 0])
    pos = logits[torch.arange(2), targets]
    neg = torch.stack([logits[0, [0, 1, 3]], logits[1, [1, 2, 3]]])
    torch.testing.assert_close(sampled_softmax(pos, neg), softmax_cross_entropy(logits, targets))


def test_sampled_softmax_shared_negatives_broadcast() -> None:
    pos, neg = torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    logq = torch.log(torch.tensor([0.2, 0.8]))
    per_row = torch.stack([sampled_softmax(pos[i:i + 1], neg[i:i + 1], neg_logq=logq)
                           for i in range(2)]).mean()
    torch.testing.assert_close(sampled_softmax(pos, neg, neg_logq=logq), per_row)


def test_bpr_by_hand() -> None:
    close(bpr(torch.tensor([1.0]), torch.tensor([1.0])), math.log(2))
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    # Two negatives per row: mean over pairs of softplus(neg - pos).
    close(bpr(torch.tensor([2.0]), torch.tensor([[0.0, 2.0]])), (softplus(-2.0) + math.log(2)) / 2)


def test_bce_by_hand() -> None:
    close(bce(torch.tensor([0.0]), torch.tensor([0.0])), 2 * math.log(2))
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    # Row 0: pos 1, negs (-1, 0); row 1: pos -2, neg (3, 1). Negatives of a row are summed.
    expected = ((softplus(-1.0) + softplus(-1.0) + softplus(0.0))
                + (softplus(2.0) + softplus(3.0) + softplus(1.0))) / 2
    close(bce(torch.tensor([1.0, -2.0]), torch.tensor([[-1.0, 0.0], [3.0, 1.0]])), expected)


def test_losses_have_gradients() -> None:
    pos = torch.tensor([0.5, -0.2], requires_grad=True)
    neg = torch.tensor([[0.1, 0.3], [0.0, -1.0]], requires_grad=True)
    for loss in (sampled_softmax(pos, neg), bpr(pos, neg), bce(pos, neg)):
        g_pos, g_neg = torch.autograd.grad(loss, (pos, neg))
        assert (g_pos < 0).all() and (g_neg > 0).all()  # raise positives, lower negatives
