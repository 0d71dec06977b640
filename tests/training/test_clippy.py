"""Clippy: one step against a hand-computed update, and its limits."""

from __future__ import annotations

import math

import pytest
import torch

from genrec.training.clippy import Clippy


def test_one_step_matches_hand_computed_update() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.0]))
    w.grad = torch.tensor([0.5, 1.0, -3.0])
    opt = Clippy([w], lr=0.1, lambda_rel=0.1, lambda_abs=0.01, initial_accumulator=0.1, eps=0.0)
    opt.step()
    # Adagrad update: 0.1 * g / sqrt(0.1) = g * 0.31623 -> [0.15811, 0.31623, -0.94868]
    # limits 0.1 |w| + 0.01 = [0.11, 0.21, 0.01]; room = [0.6957, 0.6641, 0.010541]
    # factor = 0.01 / 0.94868 = 0.010541: the third coordinate moves by exactly its limit,
    # every coordinate is scaled by the same factor: delta = g * 0.01 / 3
    expected = torch.tensor([1.0 - 0.5 / 300, -2.0 - 1.0 / 300, 0.01])
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-7)
    assert math.isclose(float(opt.state[w]["clip_factor"]), 0.01 / (3 * math.sqrt(0.1)),
                        rel_tol=1e-6)
    # the accumulator takes the unclipped gradient after the step
    torch.testing.assert_close(opt.state[w]["accumulator"], torch.tensor([0.35, 1.1, 9.1]))


def test_second_step_uses_the_updated_accumulator_and_no_clip_when_room() -> None:
    w = torch.nn.Parameter(torch.tensor([10.0]))
    opt = Clippy([w], lr=0.5, lambda_rel=1.0, lambda_abs=0.0, initial_accumulator=1.0, eps=0.0)
    for g, acc_before in ((2.0, 1.0), (1.0, 5.0)):
        before = float(w.detach())
        w.grad = torch.tensor([g])
        opt.step()
        # room is |w| = ~10 >> the update: plain Adagrad with the delayed accumulator
        step = 0.5 * g / math.sqrt(acc_before)
        assert float(w.detach()) == pytest.approx(before - step, abs=1e-6)
        assert float(opt.state[w]["clip_factor"]) == 1.0


def test_no_coordinate_moves_beyond_its_limit() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50, 20))
    opt = Clippy([w], lr=10.0, lambda_rel=0.05, lambda_abs=1e-3)
    for _ in range(5):
        before = w.detach().clone()
        w.grad = torch.randn_like(w) * 100
        opt.step()
        assert ((w.detach() - before).abs() <= 0.05 * before.abs() + 1e-3 + 1e-6).all()


def test_rejects_negative_settings() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="lambda_rel"):
        Clippy([w], lambda_rel=-1.0)
