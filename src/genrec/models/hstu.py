"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024, "Actions Speak
Louder than Words: Trillion-Parameter Sequential Transducers for Generative Recommendations").

Each HSTU layer replaces the transformer's attention + feed-forward pair by one block with
*pointwise aggregated* attention (no softmax)::

    U, V, Q, K = split(SiLU(f1(LayerNorm(X))))
    A = SiLU(Q K^T + rab) / n        (causal; n = max_len, the padded sequence length)
    Y = f2(LayerNorm(A V) * U) + X

``rab`` is a learned relative attention bias per layer and head, indexed by the distance
between query and key positions, bucketed T5-style (exact for small distances, logarithmic
beyond). The paper adds a second bias on bucketed *time* gaps; the datasets here are
position-only sequences (MovieLens timestamps tie within a session), so there are no time
buckets. As in the reference implementation, ``Q K^T`` is not scaled and a learned absolute
position embedding is added to the ``sqrt(dim)``-scaled item embedding.

Training is next-item prediction at every position, as for SASRec
(:class:`~genrec.models._sequential.SequentialRecommender`).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from genrec.models._sequential import (
    SequentialConfig,
    SequentialNet,
    SequentialRecommender,
    log_proposal,
    next_item_loss,
)

__all__ = ["HSTU", "HSTUConfig", "HSTUNet", "relative_buckets"]

_log = logging.getLogger(__name__)


class HSTUConfig(SequentialConfig):
    """HSTU hyperparameters (defaults: the paper's MovieLens-1M model).

    The paper trains with sampled softmax (128 negatives, cosine similarity / 0.05); the
    default here is full-softmax cross-entropy with dot-product scores, which on MovieLens-1M
    learned faster per epoch (valid NDCG@10 0.126 vs 0.085 after 7 epochs, against
    ``loss="sampled_softmax", temperature=0.05``). On Yelp sampled softmax made epochs 2-3x
    cheaper but stopped lower (test NDCG@10 0.0215 with 4,096 negatives vs 0.0242; BENCHMARKS.md).
    Both are one config change away.
    """

    kind: Literal["hstu"] = "hstu"
    max_len: int = Field(200, ge=1)
    """Most recent items the model reads (paper: 200 on MovieLens-1M, 50 suits Amazon)."""
    dim: int = Field(50, ge=1)
    """Width of the item embeddings and of every layer (paper: 50)."""
    n_layers: int = Field(2, ge=1)
    """HSTU layers (paper: 2; "HSTU-large": 8 layers, 2 heads)."""
    n_heads: int = Field(1, ge=1)
    """Attention heads; must divide ``dim`` (paper: 1)."""
    dropout: float = Field(0.2, ge=0, lt=1)
    """Dropout on the input embeddings and before each layer's output projection ``f2``
    (paper: 0.2)."""
    n_buckets: int = Field(32, ge=1)
    """Relative-position buckets of ``rab``: distances below ``n_buckets // 2`` get their own
    bucket, longer ones share logarithmically wider buckets up to ``max_len``."""
    temperature: float | None = Field(None, gt=0)
    """None scores items by the dot product of output state and item embedding; a number
    scores by their cosine similarity divided by it (the paper's setup uses 0.05, with
    sampled softmax)."""

    @model_validator(mode="after")
    def _heads(self) -> HSTUConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide dim ({self.dim})")
        return self


def relative_buckets(max_len: int, n_buckets: int) -> torch.Tensor:
    """Bucket of the distance ``i - j`` from key ``j`` to query ``i`` (future keys: bucket 0).

    Args:
        max_len: Sequence length ``L``.
        n_buckets: Number of buckets ``NB``.

    Returns:
        Long tensor ``(L, L)`` with values in ``[0, NB)``.
    """
    pos = torch.arange(max_len)
    dist = (pos[:, None] - pos[None, :]).clamp(min=0)                  # (L, L)
    exact = max(1, n_buckets // 2)
    if max_len <= exact or n_buckets <= exact:  # every distance fits in its own bucket
        return dist.clamp(max=n_buckets - 1)
    scale = (n_buckets - exact) / math.log(max_len / exact)
    log_bucket = exact + (torch.log(dist.clamp(min=exact) / exact) * scale).long()
    return torch.where(dist < exact, dist, log_bucket.clamp(max=n_buckets - 1))


class HSTULayer(nn.Module):
    """One HSTU layer: pointwise aggregated attention gated by ``U``, with a residual.

    Args:
        dim: Model width ``D``.
        n_heads: Heads ``H``.
        dropout: Dropout before ``f2``.
        n_buckets: Relative-position buckets.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, n_buckets: int) -> None:
        super().__init__()
        self.ln_in = nn.LayerNorm(dim)
        self.f1 = nn.Linear(dim, 4 * dim)
        self.rab = nn.Embedding(n_buckets, n_heads)
        self.ln_attn = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.f2 = nn.Linear(dim, dim)
        self.n_heads = n_heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor, buckets: torch.Tensor,
                n: int) -> torch.Tensor:
        """``x`` ``(B, L, D)``; ``mask`` ``(B, 1, L, L)`` in ``x``'s dtype, 1 where a query
        may read a key, else 0 (the net builds it once for all its layers); ``buckets``
        ``(L, L)``; ``n`` the attention's normaliser."""
        b, length, dim = x.shape
        u, v, q, k = F.silu(self.f1(self.ln_in(x))).split(dim, dim=2)  # (B, L, D) each
        q, k, v = (t.view(b, length, self.n_heads, dim // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))                                 # (B, H, L, D/H)
        rab = self.rab(buckets).permute(2, 0, 1)                       # (H, L, L)
        # Pointwise: each weight is SiLU of its own logit, divided by a constant; no softmax
        # normalises over keys, so the sum of weights carries how much history is relevant.
        # In place where autograd allows (matmul and SiLU keep their inputs, not outputs):
        # the (B, H, L, L) block is the layer's largest, and every copy of it costs.
        attn = F.silu((q @ k.transpose(-2, -1)).add_(rab))             # (B, H, L, L)
        attn = attn.div_(n).mul_(mask)
        y = (attn @ v).transpose(1, 2).reshape(b, length, dim)         # (B, L, D)
        return x + self.f2(self.drop(self.ln_attn(y) * u))


class HSTUNet(SequentialNet):
    """The HSTU network.

    Args:
        n_items: Catalogue size ``I``; the embedding has ``I + 1`` rows, row 0 is padding.
        max_len: Sequence length ``L`` (position table, ``rab`` buckets, attention normaliser).
        dim: Model width ``D``.
        n_layers: HSTU layers.
        n_heads: Heads.
        dropout: Dropout rate.
        n_buckets: Relative-position buckets.
        temperature: None for dot-product scores, else cosine similarity / temperature.
        loss: Training loss name.
        n_negatives: Sampled-softmax negatives.
        logq: Log-probabilities of the negative sampler, shape ``(I,)``.
    """

    padding_invariant = True

    def __init__(self, n_items: int, max_len: int, dim: int, n_layers: int, n_heads: int,
                 dropout: float, n_buckets: int, temperature: float | None, loss: str,
                 n_negatives: int, logq: torch.Tensor) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(HSTULayer(dim, n_heads, dropout, n_buckets)
                                    for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)
        self.temperature = temperature
        self.loss = loss
        self.n_negatives = n_negatives
        self.register_buffer("logq", logq, persistent=False)
        self.register_buffer("buckets", relative_buckets(max_len, n_buckets), persistent=False)
        self.init_weights()

    def output_items(self) -> torch.Tensor:
        """Item vectors the output states are scored against, padding row first, ``(I+1, D)``."""
        emb = self.item_emb.weight
        return emb if self.temperature is None else F.normalize(emb, dim=-1)

    def forward(self, seq: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output states of ``seq`` and, given ``targets`` (both ``(B, L)``, ``L <= max_len``),
        the loss. ``state . output_items()[i + 1]`` is the score of item ``i``."""
        length, max_len = seq.shape[1], self.pos_emb.num_embeddings
        dim = self.item_emb.embedding_dim
        # Positions count back from the most recent item (always at max_len - 1), so a
        # sequence shorter than max_len reads like the same sequence with more left padding.
        pos = torch.arange(max_len - length, max_len, device=seq.device)
        x = self.drop(self.item_emb(seq) * math.sqrt(dim) + self.pos_emb(pos))  # (B, L, D)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # In x's dtype once, not per layer (benchmarks/hstu_layers.py).
        mask = (causal & (seq > 0)[:, None, :])[:, None].to(x.dtype)   # (B, 1, L, L)
        buckets = self.buckets[-length:, -length:]                     # (L, L)
        for layer in self.layers:
            x = layer(x, mask, buckets, max_len)
        hidden = self.ln_f(x)                                          # (B, L, D)
        if self.temperature is not None:
            hidden = F.normalize(hidden, dim=-1) / self.temperature
        if targets is None:
            return hidden, None
        return hidden, next_item_loss(hidden, targets, self.output_items(), loss=self.loss,
                                      n_negatives=self.n_negatives, logq=self.logq)

    def output_table(self) -> torch.Tensor:
        """The output item vectors without the padding row, ``(I, D)``."""
        return self.output_items()[1:]


class HSTU(SequentialRecommender[HSTUConfig]):
    """HSTU recommender: trains :class:`HSTUNet` on each user's next-item sequence."""

    config_cls = HSTUConfig

    def _build_net(self, item_counts: np.ndarray | None) -> HSTUNet:
        c = self.config
        return HSTUNet(self.n_items_, c.max_len, c.dim, c.n_layers, c.n_heads, c.dropout,
                       c.n_buckets, c.temperature, c.loss, c.n_negatives,
                       log_proposal(item_counts, self.n_items_))
