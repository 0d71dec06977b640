"""Clippy: Adagrad with the update clipped relative to the weights.

From "Improving Training Stability for Multitask Ranking Models in Recommender Systems"
(Tang et al., KDD 2023, arXiv:2302.09178), Algorithm 1, in the form of the authors' reference
implementation (TensorFlow Recommenders' ``ClippyAdagrad``). For every parameter tensor
``w`` with gradient ``g`` and Adagrad accumulator ``v`` (initial value ``v_0``):

.. math::

    \\Delta_t &= \\eta \\, g_t / \\sqrt{v_{t-1} + \\epsilon}
        \\qquad \\text{(the Adagrad update)} \\\\
    \\sigma_t &= \\min\\Big(1, \\min_j \\frac{\\lambda_{rel} |w_{t,j}| + \\lambda_{abs}}
        {|\\Delta_{t,j}|}\\Big) \\qquad \\text{(one clip factor per tensor)} \\\\
    w_{t+1} &= w_t - \\sigma_t \\Delta_t, \\qquad v_t = v_{t-1} + g_t^2

so no coordinate moves by more than ``lambda_rel * |w_j| + lambda_abs`` in one step, and the
whole tensor's update is scaled by the same factor (its direction is kept). The clip looks at
the *update* (it knows the learning rate and the preconditioner) with an L-infinity measure,
which is what makes it catch a few exploding coordinates that an L2 gradient norm misses.
Like the reference implementation, the accumulator is updated after the step (the step uses
``v_{t-1}``), with the unclipped gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["Clippy"]


class Clippy(torch.optim.Optimizer):
    """Clippy-Adagrad (see the module docstring for the update rule).

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate ``eta``.
        lambda_rel: Relative threshold: a coordinate moves by at most this fraction of its
            magnitude (plus ``lambda_abs``) per step.
        lambda_abs: Absolute threshold (lets weights at zero move).
        initial_accumulator: Starting value ``v_0`` of the Adagrad accumulators.
        eps: Added under the square root.
        weight_decay: L2 penalty added to the gradient (0: none).

    Raises:
        ValueError: For a negative setting.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01, *, lambda_rel: float = 0.5,
                 lambda_abs: float = 1e-2, initial_accumulator: float = 0.1,
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        for name, value in (("lr", lr), ("lambda_rel", lambda_rel), ("lambda_abs", lambda_abs),
                            ("initial_accumulator", initial_accumulator), ("eps", eps),
                            ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"Clippy: {name} must be >= 0, got {value}")
        super().__init__(params, {"lr": lr, "lambda_rel": lambda_rel, "lambda_abs": lambda_abs,
                                  "initial_accumulator": initial_accumulator, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(  # type: ignore[override]
            self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient.

        Returns:
            The closure's loss, if a closure was given.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["accumulator"] = torch.full_like(p, group["initial_accumulator"])
                    state["clip_factor"] = torch.ones((), device=p.device)
                acc = state["accumulator"]
                delta = group["lr"] * g * torch.rsqrt(acc + group["eps"])
                limit = group["lambda_rel"] * p.abs() + group["lambda_abs"]
                # per-coordinate room; coordinates that do not move impose nothing
                room = torch.where(delta == 0, torch.ones_like(delta),
                                   limit / delta.abs().clamp_min(torch.finfo(delta.dtype).tiny))
                factor = room.min().clamp(max=1.0) if room.numel() else torch.ones(())
                p.sub_(delta * factor)
                acc.add_(g * g)
                state["clip_factor"] = factor.detach()
        return loss
