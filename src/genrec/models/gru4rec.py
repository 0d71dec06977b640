"""GRU4Rec: session-based recommendations with recurrent networks (Hidasi et al., ICLR 2016).

A GRU reads the user's item sequence; its state after each item scores the next one against
the (tied) item embeddings. As in RecBole and the "GRU4Rec with CE" comparisons, every user
sequence is one training example and the default loss is full-softmax cross-entropy at every
position, rather than the paper's session-parallel mini-batches with sampled losses.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from genrec.models._sequential import (
    SequentialConfig,
    SequentialNet,
    SequentialRecommender,
    log_proposal,
    next_item_loss,
)

__all__ = ["GRU4RecConfig", "GRU4RecNet", "GRU4Rec"]

_log = logging.getLogger(__name__)


class GRU4RecConfig(SequentialConfig):
    """GRU4Rec hyperparameters."""

    kind: Literal["gru4rec"] = "gru4rec"
    dim: int = Field(64, ge=1)
    """Width of the item embeddings and of the GRU state."""
    n_layers: int = Field(1, ge=1)
    """Stacked GRU layers."""
    dropout: float = Field(0.3, ge=0, lt=1)
    """Dropout on the input embeddings, between GRU layers and on the output states."""


class GRU4RecNet(SequentialNet):
    """The GRU4Rec network.

    Args:
        n_items: Catalogue size ``I``; the embedding has ``I + 1`` rows, row 0 is padding.
        dim: Embedding and state width ``D``.
        n_layers: GRU layers.
        dropout: Dropout rate.
        loss: Training loss name.
        n_negatives: Sampled-softmax negatives.
        logq: Log-probabilities of the negative sampler, shape ``(I,)``.
    """

    padding_invariant = True

    def __init__(self, n_items: int, dim: int, n_layers: int, dropout: float, loss: str,
                 n_negatives: int, logq: torch.Tensor) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, n_layers, batch_first=True,
                          dropout=dropout if n_layers > 1 else 0.0)
        self.loss = loss
        self.n_negatives = n_negatives
        self.register_buffer("logq", logq, persistent=False)
        self.init_weights()  # the GRU keeps torch's own uniform initialisation

    def forward(self, seq: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states of ``seq`` and, given ``targets`` (both ``(B, L)``), the loss."""
        length = seq.shape[1]
        # An empty row runs one step on padding: its length is 1 here too, so the state read
        # back is that step's (the same whether the row is scored alone or in a batch).
        lengths = (seq > 0).sum(1).clamp(min=1)                        # (B,)
        # The GRU must start on the first real item, not on the left padding: move each row
        # to the left (right-padded), pack, run, and move the states back.
        shift = (length - lengths)[:, None]                            # (B, 1)
        cols = torch.arange(length, device=seq.device)[None]           # (1, L)
        right = seq.gather(1, (cols + shift) % length)                 # (B, L) right-padded
        x = self.drop(self.item_emb(right))                            # (B, L, D)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)  # (B, L, D)
        back = ((cols - shift) % length)[..., None].expand(-1, -1, out.shape[-1])
        hidden = self.drop(out.gather(1, back))                        # (B, L, D) left-padded
        if targets is None:
            return hidden, None
        return hidden, next_item_loss(hidden, targets, self.item_emb.weight, loss=self.loss,
                                      n_negatives=self.n_negatives, logq=self.logq)


class GRU4Rec(SequentialRecommender[GRU4RecConfig]):
    """GRU4Rec recommender: trains :class:`GRU4RecNet` on each user's next-item sequence."""

    config_cls = GRU4RecConfig

    def _build_net(self, item_counts: np.ndarray | None) -> GRU4RecNet:
        c = self.config
        return GRU4RecNet(self.n_items_, c.dim, c.n_layers, c.dropout, c.loss, c.n_negatives,
                          log_proposal(item_counts, self.n_items_))
