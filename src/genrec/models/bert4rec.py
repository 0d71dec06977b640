"""BERT4Rec: sequential recommendation with a bidirectional transformer (Sun et al., CIKM 2019).

A transformer *without* a causal mask reads the user's item sequence, and is trained on the
cloze task: some items are replaced by a ``[MASK]`` token and the model predicts the original
items at exactly those positions (full-softmax cross-entropy over the catalogue, tied output
embeddings). To recommend, ``[MASK]`` is appended after the history and that position is
scored. Like the paper it replaces masked items by ``[MASK]`` only (no BERT 80/10/10 rule)
and puts a GELU projection before the tied output embeddings; unlike it, it uses pre-LN
blocks and has no per-item output bias.

What differs from :class:`~genrec.models._sequential.SequentialRecommender` (SASRec, GRU4Rec),
whose wrapper it reuses for saving, loading and the net's construction:

- **Training rows** are whole sequences (the last ``max_len`` items), not input/next-item
  pairs; the loop trains a :class:`ClozeTask` around the net, which masks every batch.
- **Ids**: ``0`` is padding, ``1..I`` are the items, ``I + 1`` is ``[MASK]``.
- **Scoring** reads the last ``max_len - 1`` items plus ``[MASK]``.

Masking randomness comes from the global torch RNG, like dropout: the training loop seeds it
from the fit context's seed (plus the process rank) and stores it in every checkpoint, so a resumed
run draws exactly the masks the uninterrupted run would have drawn. (A private
``torch.Generator`` seeded from seed and epoch would need the epoch, which the loop's
``net(*batch)`` contract does not pass, and its state would not be in the checkpoint.)
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from genrec.data.interactions import Histories, Interactions
from genrec.models._sequential import (
    SequentialConfig,
    SequentialNet,
    SequentialRecommender,
    log_proposal,
    next_item_loss,
)
from genrec.models.base import FitContext
from genrec.models.sasrec import SelfAttention

__all__ = ["BERT4Rec", "BERT4RecConfig", "BERT4RecNet", "ClozeTask", "cloze_mask"]

_log = logging.getLogger(__name__)


class BERT4RecConfig(SequentialConfig):
    """BERT4Rec hyperparameters (the paper's, except ``max_len``: use 200 on MovieLens-1M)."""

    kind: Literal["bert4rec"] = "bert4rec"
    dim: int = Field(64, ge=1)
    """Width of item/position embeddings and of every block (paper: 64)."""
    n_layers: int = Field(2, ge=1)
    """Transformer blocks (paper: 2)."""
    n_heads: int = Field(2, ge=1)
    """Attention heads; must divide ``dim`` (paper: 2)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on embeddings, attention weights and block outputs (paper: 0.1)."""
    mask_prob: float = Field(0.2, gt=0, le=1)
    """Probability that each item of a training sequence is replaced by ``[MASK]`` (paper:
    0.2 on MovieLens, 0.4-0.6 on the sparser Amazon and Steam data). A sequence that draws no
    mask gets its most recent item masked, so every row contributes to the loss."""

    @model_validator(mode="after")
    def _check(self) -> BERT4RecConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide dim ({self.dim})")
        if self.max_len < 2:
            raise ValueError("max_len must be >= 2: scoring reads max_len - 1 items + [MASK]")
        return self


def cloze_mask(seq: torch.Tensor, mask_prob: float,
               mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace random items of left-padded sequences by ``[MASK]`` (global torch RNG).

    Args:
        seq: Shifted item ids, 0 = padding, most recent item last, shape ``(B, L)``.
        mask_prob: Probability of masking each real item.
        mask_id: Id of the ``[MASK]`` token.

    Returns:
        ``inputs`` (``seq`` with masked items replaced by ``mask_id``) and ``targets`` (the
        original id at masked positions, 0 elsewhere), both ``(B, L)``.
    """
    real = seq > 0                                                     # (B, L)
    masked = (torch.rand(seq.shape, device=seq.device) < mask_prob) & real
    # A row without a mask adds nothing to the loss: mask its most recent item instead,
    # the position inference scores (the paper adds such "last item masked" samples too).
    unmasked = ~masked.any(dim=1) & real[:, -1]                        # (B,)
    masked[:, -1] |= unmasked
    return seq.masked_fill(masked, mask_id), seq.masked_fill(~masked, 0)


class Block(nn.Module):
    """Pre-LN transformer block with BERT's GELU feed-forward of width ``4 * dim``."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class BERT4RecNet(SequentialNet):
    """The BERT4Rec network.

    Args:
        n_items: Catalogue size ``I``; embeddings have ``I + 2`` rows: padding, the items,
            ``[MASK]``.
        max_len: Sequence length ``L`` (size of the position table).
        dim: Model width ``D``.
        n_layers: Transformer blocks.
        n_heads: Attention heads.
        dropout: Dropout rate.
        loss: Training loss name (at the masked positions).
        n_negatives: Sampled-softmax negatives.
        logq: Log-probabilities of the negative sampler, shape ``(I,)``.
    """

    def __init__(self, n_items: int, max_len: int, dim: int, n_layers: int, n_heads: int,
                 dropout: float, loss: str, n_negatives: int, logq: torch.Tensor) -> None:
        super().__init__()
        self.mask_id = n_items + 1
        self.item_emb = nn.Embedding(n_items + 2, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)
        # The paper's output projection GELU(h W + b) (plus the LayerNorm of its BERT code),
        # before the tied item embeddings.
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.loss = loss
        self.n_negatives = n_negatives
        self.register_buffer("logq", logq, persistent=False)
        self.init_weights()

    def forward(self, seq: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output states of ``seq`` (``(B, L)``, ``L <= max_len``, may contain ``[MASK]``)
        and, given ``targets`` (``(B, L)``, 0 where there is nothing to predict), the loss."""
        length, max_len = seq.shape[1], self.pos_emb.num_embeddings
        # Positions count back from the most recent item (always at max_len - 1), as in SASRec.
        pos = torch.arange(max_len - length, max_len, device=seq.device)
        x = self.drop(self.item_emb(seq) + self.pos_emb(pos))          # (B, L, D)
        # Every position attends to every real item (both directions), and always to itself,
        # so the padding rows of a left-padded sequence have a key and never produce NaN.
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = ((seq > 0)[:, None, :] | eye)[:, None]                  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, mask)
        hidden = self.head(self.ln_f(x))                               # (B, L, D)
        if targets is None:
            return hidden, None
        # The cloze loss is the next-item loss at the masked positions; [MASK] (the last
        # embedding row) is never a target nor a negative.
        return hidden, next_item_loss(hidden, targets, self.item_emb.weight[:-1],
                                      loss=self.loss, n_negatives=self.n_negatives,
                                      logq=self.logq)

    def query(self, seq: torch.Tensor) -> torch.Tensor:
        """The output state at a ``[MASK]`` appended to the history ``seq`` ``(B, L - 1)``,
        ``(B, D)``; ``score`` dots it with every item embedding."""
        mask = torch.full((len(seq), 1), self.mask_id, dtype=seq.dtype, device=seq.device)
        hidden, _ = self(torch.cat([seq, mask], dim=1))                # (B, L, D)
        return hidden[:, -1]

    def output_table(self) -> torch.Tensor:
        """Item embeddings without padding and ``[MASK]``, ``(I, D)``."""
        return self.item_emb.weight[1:-1]


class ClozeTask(nn.Module):
    """What the training loop trains: masks each batch of sequences, then runs the net.

    Args:
        net: The network (its parameters are this module's, under ``net.``).
        mask_prob: Masking probability per item.
    """

    def __init__(self, net: BERT4RecNet, mask_prob: float) -> None:
        super().__init__()
        self.net = net
        self.mask_prob = mask_prob

    def forward(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss of predicting the masked items of ``seq`` ``(B, L)``."""
        inputs, targets = cloze_mask(seq, self.mask_prob, self.net.mask_id)  # (B, L) each
        return self.net(inputs, targets)


class BERT4Rec(SequentialRecommender[BERT4RecConfig]):
    """BERT4Rec recommender: trains :class:`BERT4RecNet` on the cloze task.

    Scores are the output state at a ``[MASK]`` appended to the history, dotted with every
    item embedding.
    """

    config_cls = BERT4RecConfig

    def _build_net(self, item_counts: np.ndarray | None) -> BERT4RecNet:
        c = self.config
        return BERT4RecNet(self.n_items_, c.max_len, c.dim, c.n_layers, c.n_heads, c.dropout,
                           c.loss, c.n_negatives, log_proposal(item_counts, self.n_items_))

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        cfg = self.config
        self.net_ = self._new_net(train, ctx)
        seq = train.histories().padded(cfg.max_len)                    # (U, L)
        seq = seq[(seq > 0).any(dim=1)]                                # users with an item
        _log.info("%s: %d training sequences, %d items, %d parameters", type(self).__name__,
                  len(seq), train.n_items, sum(p.numel() for p in self.net_.parameters()))
        self.train_result_ = self._train_net(ClozeTask(self.net_, cfg.mask_prob), (seq,), train,
                                             ctx, cfg.train)

    def _score(self, histories: Histories) -> torch.Tensor:
        net = self.net_.eval()
        device = next(net.parameters()).device
        seq = histories.padded(self.config.max_len - 1).to(device)    # (B, L - 1): room for mask
        with torch.no_grad():
            return net.score(seq)                                      # (B, I)

    def query_vectors(self, histories: Histories) -> torch.Tensor:
        """``[MASK]`` states ``(B, D)``: ``score = query_vectors @ item_vectors().T``."""
        self._require_fitted()
        net = self.net_.eval()
        device = next(net.parameters()).device
        seq = histories.padded(self.config.max_len - 1).to(device)    # (B, L - 1)
        with torch.no_grad():
            return net.query(seq).cpu()                                # (B, D)
