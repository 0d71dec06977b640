"""LETTER-style collaborative-aware semantic IDs (Wang et al., CIKM 2024, "Learnable Item
Tokenization for Generative Recommendation").

An RQ-VAE over the item's text vector (:mod:`genrec.semantic_ids.rqvae`: reconstruction,
codebook and commitment terms; the *semantic* regulariser) with two more terms:

- **collaborative alignment** (weight ``collab_weight``): an in-batch InfoNCE loss between
  the item's quantised latent (the sum of its codewords) and a learned linear projection of
  its collaborative vector (e.g. :func:`~genrec.semantic_ids.collaborative_item_vectors`,
  SASRec or EASE item factors), temperature ``temperature``. Items that interact alike are
  pulled onto the same codewords, so a code prefix means "bought together" as well as
  "described alike". Items without a collaborative vector (all zeros: never interacted,
  cold) are left out of this term, so their codes come from text alone.
- **code balance** (weight ``balance_weight``): per level, the KL divergence between the
  batch's mean soft assignment to the codes and the uniform distribution (``log K - H``).
  This departs from LETTER's diversity loss (which clusters the codewords and pushes items
  of one cluster apart): the same aim, an even use of every code, stated directly, and
  cheap. The soft assignment is ``softmax(-d / (balance_temperature * mean d))`` over the
  squared distances ``d`` of a residual to the level's codewords.

``fit(item_emb, collaborative=...)`` needs the collaborative vectors; ``transform`` uses only
the encoder and codebooks, so a fitted LETTER codes new (cold) items from text alone, and its
saved state is the RQ-VAE's (the projection is a training aid, not saved).
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from genrec.semantic_ids._kmeans import sq_dist
from genrec.semantic_ids.rqvae import RQVAEConfig, RQVAENet, RQVAETokenizer

__all__ = ["LETTERConfig", "LETTERTokenizer", "balance_loss"]


class LETTERConfig(RQVAEConfig):
    """RQ-VAE settings plus the collaborative-alignment and code-balance terms."""

    kind: Literal["letter"] = "letter"  # type: ignore[assignment]
    collab_weight: float = Field(0.1, ge=0)
    """Weight ``alpha`` of the collaborative alignment (InfoNCE) term; 0 turns it off."""
    temperature: float = Field(0.1, gt=0)
    """Temperature of the alignment InfoNCE."""
    balance_weight: float = Field(0.1, ge=0)
    """Weight of the code-balance term (KL of mean code usage to uniform, per level)."""
    balance_temperature: float = Field(0.1, gt=0)
    """Softness of the assignment used by the balance term, relative to the mean distance."""


def balance_loss(residuals: list[torch.Tensor], codebooks: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Mean over levels of ``KL(mean soft code usage || uniform)`` (0 = perfectly even).

    Args:
        residuals: Per level, the residuals that level quantises, ``(B, d)`` each.
        codebooks: ``(L, K, d)``.
        temperature: Softness relative to each residual's mean squared distance.
    """
    total = codebooks.new_zeros(())
    for r, book in zip(residuals, codebooks, strict=True):
        d = sq_dist(r, book)                                           # (B, K)
        p = torch.softmax(-d / (temperature * d.detach().mean(1, keepdim=True) + 1e-12), 1)
        usage = p.mean(0)                                              # (K,)
        total = total + (usage * torch.log(usage * len(book) + 1e-12)).sum()
    return total / max(1, len(residuals))


class LETTERTokenizer(RQVAETokenizer):
    """LETTER tokenizer: ``fit(item_emb, collaborative=cf) -> self``, ``transform(item_emb)``.

    Attributes:
        codebooks_: Codewords per level ``(L, K, d)``.
        net_: The trained :class:`~genrec.semantic_ids.RQVAENet`.
        history_: Per epoch: loss, its ``recon``, ``align`` and ``balance`` terms, and the
            share of codes used per level.
    """

    config_cls = LETTERConfig  # type: ignore[assignment]
    config: LETTERConfig

    def fit(self, item_emb: np.ndarray | torch.Tensor,
            collaborative: np.ndarray | torch.Tensor | None = None) -> Self:
        """Train on text vectors ``(n, D)`` aligned with collaborative vectors ``(n, D_cf)``.

        Raises:
            ValueError: If ``collaborative_weight > 0`` and no (or mismatched) collaborative
                vectors are given.
        """
        x = torch.as_tensor(np.asarray(item_emb), dtype=torch.float32)
        if self.config.collab_weight > 0:
            if collaborative is None:
                raise ValueError("the letter tokenizer aligns codes with collaborative item "
                                 "vectors: fit(item_emb, collaborative=...) (TIGER passes "
                                 "them), or set collab_weight: 0")
            cf = torch.as_tensor(np.asarray(collaborative), dtype=torch.float32)
            if cf.ndim != 2 or len(cf) != len(x):
                raise ValueError(f"collaborative vectors {tuple(cf.shape)} do not match the "
                                 f"{len(x)} item vectors")
        else:
            cf = torch.zeros(len(x), 1)
        self._cf = cf
        self._has_cf = cf.norm(dim=1) > 0                              # cold items: no vector
        try:
            return self._fit(x)
        finally:
            del self._cf, self._has_cf

    def _extra_module(self, net: RQVAENet) -> nn.Module | None:
        return nn.Linear(self._cf.shape[1], self.config.latent_dim)

    def _step_loss(self, net: RQVAENet, extra: nn.Module | None, x: torch.Tensor,
                   rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        xb = x[rows]
        z = net.encoder(xb)                                            # (B, d)
        quantised, _, quant_loss, residuals = net.quantise(z, c.beta)
        recon = net.decoder(z + (quantised - z).detach())              # straight-through
        rec = ((recon - xb) ** 2).sum(-1).mean()
        loss = rec + quant_loss
        terms = {"recon": rec.detach()}
        keep = self._has_cf[rows]
        if c.collab_weight > 0 and int(keep.sum()) > 1 and extra is not None:
            # The codewords' sum, with straight-through gradients to the encoder as well.
            q = F.normalize((quantised + z - z.detach())[keep], dim=-1)  # (B', d)
            h = F.normalize(extra(self._cf[rows][keep]), dim=-1)        # (B', d)
            logits = q @ h.T / c.temperature                           # (B', B')
            align = F.cross_entropy(logits, torch.arange(len(q)))
            loss = loss + c.collab_weight * align
            terms["align"] = align.detach()
        if c.balance_weight > 0:
            bal = balance_loss(residuals, net.codebooks, c.balance_temperature)
            loss = loss + c.balance_weight * bal
            terms["balance"] = bal.detach()
        return loss, terms
