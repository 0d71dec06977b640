"""Multi-task towers: shared-bottom, MMoE and DSelect-k gating.

Every tower maps an example's input vector ``x`` ``(B, D)`` to one logit per task ``(B, T)``:

- ``shared_bottom`` (Caruana 1997): one MLP shared by all tasks, then a small MLP per task.
- ``mmoe`` (Ma et al., KDD 2018): ``n`` expert MLPs; each task mixes them with its own
  softmax gate over ``x``.
- ``dselect_k`` (Hazimeh et al., NeurIPS 2021): the same experts; each task's gate is a
  DSelect-k gate: ``k`` selectors, each a smooth-step binary encoding over the ``n = 2^m``
  experts, mixed by softmax weights. An entropy regulariser (:meth:`DSelectKGate.entropy`)
  pushes every selector to a single expert, so that after training each task uses at most
  ``k`` experts with (exactly) zero weight on the others.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

__all__ = ["DSelectKGate", "MultiTaskTower", "mlp", "smooth_step"]


def mlp(dims: list[int], dropout: float, *, last_activation: bool = True) -> nn.Sequential:
    """ReLU MLP through the widths ``dims`` (input first), dropout after every hidden layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """The cubic smooth-step of DSelect-k (eq. 1): 0 below ``-gamma/2``, 1 above
    ``gamma/2``, ``-2/gamma^3 t^3 + 3/(2 gamma) t + 1/2`` in between (C^1, exactly 0 or 1
    outside the band, which is what makes the selection exactly sparse)."""
    mid = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t),
                       torch.where(t >= gamma / 2, torch.ones_like(t), mid))


class DSelectKGate(nn.Module):
    """One task's DSelect-k gate over ``n_experts = 2^m`` experts.

    Selector ``i`` has ``m`` logits ``z_i``; expert ``e`` (binary code ``b(e)``) gets
    ``r_i(e) = prod_j S(z_ij)^{b_j(e)} (1 - S(z_ij))^{1 - b_j(e)}`` (a distribution over the
    experts that is one-hot once every ``|z_ij| >= gamma/2``); the gate is
    ``sum_i softmax(w)_i r_i``.

    Args:
        n_experts: Number of experts, a power of two.
        k: Selectors (the most experts the task ends up using).
        gamma: Width of the smooth-step band.
        in_dim: Input width for a per-example gate (``z`` and ``w`` linear in ``x``); None
            for a static gate (trainable ``z`` and ``w``, the same for every example).
    """

    def __init__(self, n_experts: int, k: int, gamma: float, in_dim: int | None = None) -> None:
        super().__init__()
        m = max(1, round(math.log2(n_experts)))
        if 2**m != n_experts:
            raise ValueError(f"DSelect-k needs a power-of-two number of experts, got {n_experts}")
        self.k, self.m, self.gamma = k, m, gamma
        codes = (torch.arange(n_experts)[:, None] >> torch.arange(m)[None]) & 1
        self.register_buffer("codes", codes.float())                  # (n, m)
        if in_dim is None:
            self.z = nn.Parameter(torch.empty(k, m).uniform_(-gamma / 2, gamma / 2))
            self.w = nn.Parameter(torch.zeros(k))
        else:
            self.z_proj = nn.Linear(in_dim, k * m)
            self.w_proj = nn.Linear(in_dim, k)
            with torch.no_grad():
                self.z_proj.weight.normal_(0, 0.01)
                self.z_proj.bias.uniform_(-gamma / 2, gamma / 2)
                self.w_proj.weight.normal_(0, 0.01)
                self.w_proj.bias.zero_()
        self._last_r: torch.Tensor | None = None

    def selectors(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r, alpha)``: selector distributions ``(..., k, n)`` and mixing weights ``(..., k)``
        (leading batch dimension only for a per-example gate)."""
        if hasattr(self, "z"):
            z, w = self.z, self.w                                      # (k, m), (k,)
        else:
            assert x is not None
            z = self.z_proj(x).view(len(x), self.k, self.m)            # (B, k, m)
            w = self.w_proj(x)                                         # (B, k)
        s = smooth_step(z, self.gamma)[..., None, :]                   # (..., k, 1, m)
        bits = self.codes                                              # (n, m)
        r = (bits * s + (1 - bits) * (1 - s)).prod(-1)                 # (..., k, n)
        return r, torch.softmax(w, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expert weights ``(B, n)`` (the same row for every example with a static gate)."""
        r, alpha = self.selectors(x)
        self._last_r = r
        gate = (alpha[..., None] * r).sum(-2)                          # (..., n)
        return gate.expand(len(x), -1) if gate.dim() == 1 else gate

    def entropy(self) -> torch.Tensor:
        """Sum over selectors of the entropy of ``r_i`` (mean over examples for a
        per-example gate), from the last forward pass: the DSelect-k regulariser."""
        if self._last_r is None:
            return torch.zeros(())
        r = self._last_r.clamp_min(1e-12)
        ent = -(r * r.log()).sum(-1)                                   # (..., k)
        return ent.sum(-1).mean() if ent.dim() > 1 else ent.sum()


class MultiTaskTower(nn.Module):
    """Input vector ``(B, D)`` -> one logit per task ``(B, T)``.

    Args:
        in_dim: Input width ``D``.
        n_tasks: Number of tasks ``T``.
        kind: ``shared_bottom``, ``mmoe`` or ``dselect_k``.
        expert_dims: Hidden widths of the shared bottom / of every expert.
        tower_dims: Hidden widths of every task tower.
        n_experts: Experts (mmoe, dselect_k).
        k: Selectors per task (dselect_k).
        gamma: Smooth-step width (dselect_k).
        gate: ``static`` or ``per_example`` DSelect-k gates.
        dropout: Dropout after hidden layers.
    """

    def __init__(self, in_dim: int, n_tasks: int, kind: str, expert_dims: list[int],
                 tower_dims: list[int], n_experts: int, k: int, gamma: float, gate: str,
                 dropout: float) -> None:
        super().__init__()
        self.kind = kind
        n = 1 if kind == "shared_bottom" else n_experts
        self.experts = nn.ModuleList(mlp([in_dim, *expert_dims], dropout) for _ in range(n))
        width = expert_dims[-1] if expert_dims else in_dim
        if kind == "mmoe":
            self.gates = nn.ModuleList(nn.Linear(in_dim, n_experts) for _ in range(n_tasks))
        elif kind == "dselect_k":
            self.gates = nn.ModuleList(
                DSelectKGate(n_experts, k, gamma, in_dim if gate == "per_example" else None)
                for _ in range(n_tasks))
        self.towers = nn.ModuleList(
            nn.Sequential(mlp([width, *tower_dims], dropout), nn.Linear(
                tower_dims[-1] if tower_dims else width, 1)) for _ in range(n_tasks))

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor | None:
        """Expert weights of every task ``(B, T, n)``; None for shared-bottom."""
        if self.kind == "shared_bottom":
            return None
        if self.kind == "mmoe":
            return torch.stack([torch.softmax(g(x), -1) for g in self.gates], 1)
        return torch.stack([g(x) for g in self.gates], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Task logits ``(B, T)``."""
        experts = torch.stack([e(x) for e in self.experts], 1)        # (B, n, H)
        gates = self.gate_weights(x)
        if gates is None:
            mixed = experts.expand(-1, len(self.towers), -1)           # (B, T, H)
        else:
            mixed = gates @ experts                                    # (B, T, H)
        return torch.cat([t(mixed[:, i]) for i, t in enumerate(self.towers)], 1)

    def regulariser(self) -> torch.Tensor:
        """DSelect-k entropy of the last forward pass summed over tasks (0 otherwise)."""
        if self.kind != "dselect_k":
            return torch.zeros(())
        return sum((g.entropy() for g in self.gates), torch.zeros(()))  # type: ignore[union-attr]
