"""MTGRec pre-training for TIGER: several identifiers per item and a data curriculum.

MTGRec (Zheng et al., 2025, "Pre-training Generative Recommender with Multi-Identifier Item
Tokenization") trains a generative recommender in two stages:

1. **Pre-training on G identifier groups.** Every item has ``G`` semantic IDs from related
   tokenizers (:func:`genrec.semantic_ids.identifier_groups`: here, seeds ``s..s+G-1``), so
   each training sequence exists in ``G`` tokenized versions, one data group per tokenizer.
   Each training row is tokenized with a group drawn from the current sampling weights
   ``w`` (so an epoch costs what a TIGER epoch costs). All groups share the network and
   its token embeddings (same codebook sizes; the dedup level takes the largest size).
2. **Fine-tuning on one identifier** (group 0, the plain TIGER's), which is also the one
   decoded at inference.

**Curriculum** (``curriculum: influence``, the paper's scheme). Every ``update_every``
optimizer steps the influence of group ``g`` is estimated to first order as the dot product
of the gradient of the current batch tokenized with ``g`` and the gradient of a *probe* loss
(one SGD step on ``g`` lowers the probe loss by about ``lr * <grad_probe, grad_g>``); the
weights then take a multiplicative (exponentiated-gradient) step,
``w_g <- w_g * exp(step_size * I_g / max|I|)``, renormalised and mixed with ``floor`` of the
uniform distribution so no group is starved. The paper estimates influence on validation
data; genrec hands models only a validation *metric*, so the probe is the most recent
training example of (up to ``probe_size``) users, tokenized with group 0 -- the identifier
that is fine-tuned and decoded, and the example closest in time to the held-out ones.
``curriculum: uniform`` keeps ``w = 1/G`` (the ablation the benchmark measures against).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from genrec.data.interactions import Interactions

__all__ = ["MultiIDConfig", "MultiIDTask", "curriculum_update", "probe_examples"]

_log = logging.getLogger(__name__)


class MultiIDConfig(BaseModel):
    """MTGRec settings (TIGER's ``multi_id``; see :mod:`genrec.models.mtgrec`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    groups: int = Field(3, ge=2)
    """Identifiers per item ``G`` (tokenizer seeds ``seed .. seed + G - 1``; group 0 is the
    plain TIGER's identifier, used for fine-tuning and decoding)."""
    pretrain_epochs: int = Field(10, ge=1)
    """Epochs of multi-identifier pre-training (with ``train``'s other settings and early
    stopping on validation through group 0); ``train.epochs`` of fine-tuning follow."""
    curriculum: Literal["influence", "uniform"] = "influence"
    """How the groups' sampling weights move: first-order influence on the probe loss, or
    fixed uniform weights."""
    update_every: int = Field(50, ge=1)
    """Optimizer steps between two curriculum updates."""
    step_size: float = Field(1.0, gt=0)
    """Multiplicative step on influences scaled to ``max |I| = 1``."""
    floor: float = Field(0.1, ge=0, lt=1)
    """Share of the uniform distribution mixed into the weights after every update."""
    probe_size: int = Field(512, ge=1)
    """Users whose most recent training example forms the probe set."""


def curriculum_update(weights: torch.Tensor, influence: torch.Tensor, step_size: float,
                      floor: float) -> torch.Tensor:
    """One multiplicative-weights step: groups with higher influence gain weight.

    Args:
        weights: Current sampling weights ``(G,)`` (sum to 1).
        influence: First-order influence of each group ``(G,)`` (higher: its gradient lowers
            the probe loss more).
        step_size: Step on influences scaled to ``max |I| = 1``.
        floor: Share of the uniform distribution mixed in.

    Returns:
        New weights ``(G,)``, positive, summing to 1.
    """
    scale = influence.abs().max().clamp(min=1e-12)
    logits = torch.log(weights.clamp(min=1e-12)) + step_size * influence / scale
    w = torch.softmax(logits, 0)
    return (1 - floor) * w + floor / len(w)


def probe_examples(train: Interactions, max_len: int, size: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The most recent training example (history before the last item, and that item) of up
    to ``size`` users with at least two items, evenly spaced over the users.

    Returns:
        ``(histories (P, max_len) item ids + 1, left-padded, targets (P,))``.
    """
    hist = train.histories()
    users = np.flatnonzero(hist.lengths >= 2)
    if len(users) > size:
        users = users[np.linspace(0, len(users) - 1, size).round().astype(np.int64)]
    last = hist.indptr[users + 1] - 1                                  # row of the last item
    window = last[:, None] - np.arange(max_len, 0, -1)[None]           # (P, M) oldest first
    keep = window >= hist.indptr[users][:, None]
    seq = np.where(keep, hist.items[np.clip(window, 0, None)] + 1, 0)
    return (torch.from_numpy(seq.astype(np.int64)),
            torch.from_numpy(hist.items[last].astype(np.int64)))


class MultiIDTask(nn.Module):
    """Training wrapper: tokenizes each row with a sampled identifier group and runs the
    curriculum (``forward(seq, target) -> (None, loss)``, the training loop's contract).

    Args:
        net: The :class:`~genrec.models._tiger_net.TIGERNet` (built on group 0, vocabulary sizes
            covering every group).
        codes: Every group's codes ``(G, n_items, C)``.
        config: Curriculum settings.
        probe: ``(histories, targets)`` of the probe set (:func:`probe_examples`).

    Attributes:
        weights: Current sampling weights ``(G,)`` (a buffer, so checkpoints keep it).
        record: Per curriculum update: step, influences and the new weights.
    """

    weights: torch.Tensor
    group_tokens: torch.Tensor
    group_codes: torch.Tensor
    probe_seq: torch.Tensor
    probe_target: torch.Tensor

    def __init__(self, net: nn.Module, codes: torch.Tensor, config: MultiIDConfig,
                 probe: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.config = config
        g, _, c = codes.shape
        offsets = net.offsets.cpu()                                    # (C,)
        tokens = torch.cat([torch.zeros(g, 1, c, dtype=torch.long), codes.long() + offsets],
                           1)                                          # (G, I + 1, C)
        self.register_buffer("group_tokens", tokens, persistent=False)
        self.register_buffer("group_codes", codes.long(), persistent=False)
        self.register_buffer("weights", torch.full((g,), 1.0 / g))
        self.register_buffer("probe_seq", probe[0], persistent=False)
        self.register_buffer("probe_target", probe[1], persistent=False)
        self.steps = 0
        self.record: list[dict[str, float | list[float]]] = []

    def _loss(self, group: torch.Tensor | int, seq: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
        if isinstance(group, int):
            tokens = self.group_tokens[group][seq]                     # (B, M, C)
            codes = self.group_codes[group][target]                    # (B, C)
        else:
            tokens = self.group_tokens[group[:, None], seq]
            codes = self.group_codes[group, target]
        return self.net.loss_on(tokens, codes)[1]

    def influences(self, seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """First-order influence of each group on the probe loss, from the batch
        ``(seq, target)`` tokenized with that group: ``<grad probe, grad group>``, ``(G,)``."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        probe = torch.autograd.grad(self._loss(0, self.probe_seq, self.probe_target), params,
                                    allow_unused=True)
        out = []
        for g in range(len(self.weights)):
            grads = torch.autograd.grad(self._loss(g, seq, target), params, allow_unused=True)
            out.append(sum(((a * b).sum() for a, b in zip(probe, grads, strict=True)
                            if a is not None and b is not None),
                           torch.zeros((), device=seq.device)))
        return torch.stack(out).detach()

    def forward(self, seq: torch.Tensor, target: torch.Tensor) -> tuple[None, torch.Tensor]:
        """Loss of a batch, each row tokenized with a group drawn from ``weights``."""
        cfg = self.config
        if self.training:
            if cfg.curriculum == "influence" and self.steps % cfg.update_every == 0:
                infl = self.influences(seq, target)
                self.weights.copy_(curriculum_update(self.weights, infl, cfg.step_size,
                                                     cfg.floor))
                self.record.append({"step": self.steps, "influence": infl.tolist(),
                                    "weights": self.weights.tolist()})
                _log.debug("curriculum step %d: influence %s -> weights %s", self.steps,
                           infl.tolist(), self.weights.tolist())
            self.steps += 1
        group = torch.multinomial(self.weights, len(seq), replacement=True)   # (B,)
        return None, self._loss(group, seq, target)
