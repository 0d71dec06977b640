"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal transformer over the user's item sequence. This version uses pre-LayerNorm blocks,
``scaled_dot_product_attention`` and tied input/output item embeddings, and by default trains
with full-softmax cross-entropy over all items at every position instead of the paper's
one-negative BCE ("SASRec with CE", Klenitskiy & Vasilev, RecSys 2023), which is what makes
it a strong baseline.

Item text (``item_text``; ``genrec run`` passes the item features through
``FitContext.items``):

- ``none``: learned ID embeddings.
- ``init``: ID embeddings initialised from the items' text embeddings (their top ``dim``
  principal components, scaled to the usual N(0, 0.02) spread), then trained as usual (shared
  with every sequential model: :mod:`genrec.models._sequential`).
- ``adaptor``: no ID embeddings at all: an item's vector is a small MLP over its frozen text
  embedding, so items never seen in training (cold items) are ranked from their text.

Large catalogues (``sparse_embeddings``): with a sampled loss each step reads only the batch's
items, its targets and the negatives, yet a dense item-table gradient and a dense AdamW update
cost ``O(items)`` per step. With sparse embeddings the table's gradient holds only the rows read
and a lazy Adam (:class:`torch.optim.SparseAdam`, plus decoupled weight decay on the touched
rows) updates just those rows; the rest of the network keeps AdamW.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

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
    use_sparse_embeddings,
)

__all__ = ["SASRecConfig", "SASRecNet", "SASRec"]

_log = logging.getLogger(__name__)


class SASRecConfig(SequentialConfig):
    """SASRec hyperparameters (defaults suit the Amazon 2014 datasets)."""

    kind: Literal["sasrec"] = "sasrec"
    dim: int = Field(64, ge=1)
    """Width of item/position embeddings and of every block."""
    n_layers: int = Field(2, ge=1)
    """Transformer blocks."""
    n_heads: int = Field(1, ge=1)
    """Attention heads; must divide ``dim``."""
    dropout: float = Field(0.3, ge=0, lt=1)
    """Dropout on embeddings, attention weights and block outputs (0.2-0.5 all work on
    Beauty; lower converges in fewer epochs)."""
    text_modes: ClassVar[tuple[str, ...]] = ("none", "init", "adaptor")
    """SASRec also has ``item_text: adaptor`` (see the module docstring)."""
    sparse_embeddings: Literal["auto"] | bool = "auto"
    """Train the item table with sparse gradients and a lazy Adam that updates only the rows a
    step read, so a step costs O(batch) instead of O(items). Needs a sampled loss
    (sampled_softmax, bce, bpr; ce scores every item and refuses true) and ID embeddings
    (item_text none or init). Weight decay reaches the table lazily: only touched rows are
    decayed, by the same factor AdamW would apply. auto: on with a sampled loss from 50,000
    items (smaller catalogues train exactly as before). Under torchrun it falls back to dense
    with a warning."""

    @model_validator(mode="after")
    def _heads(self) -> SASRecConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide dim ({self.dim})")
        if self.sparse_embeddings is True and self.loss == "ce":
            raise ValueError("sparse_embeddings: true needs a sampled loss (sampled_softmax, "
                             "bce or bpr): loss ce scores every item, so its gradient covers "
                             "the whole item table")
        if self.sparse_embeddings is True and self.item_text == "adaptor":
            raise ValueError("sparse_embeddings: true needs an item embedding table; "
                             "item_text: adaptor computes item vectors from text")
        return self


class SelfAttention(nn.Module):
    """Multi-head self-attention; the boolean ``mask`` decides who sees whom (SASRec passes a
    causal mask over real items, BERT4Rec a bidirectional one)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)
        self.n_heads = n_heads
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False
                ) -> torch.Tensor:
        """Attention output ``(B, L, D)``, or ``(B, 1, D)`` for the last position only."""
        b, _, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)                        # (B, L, D) each
        if last_only:
            q, mask = q[:, -1:], mask[..., -1:, :]
        q, k, v = (t.view(b, t.shape[1], self.n_heads, dim // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))                                 # (B, H, L, D/H)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, q.shape[2], dim)              # (B, L or 1, D)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block with the paper's point-wise feed-forward (width ``dim``)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False
                ) -> torch.Tensor:
        """``(B, L, D)``; with ``last_only`` just the last position, ``(B, 1, D)``."""
        a = self.attn(self.ln_1(x), mask, last_only)
        x = (x[:, -1:] if last_only else x) + a
        return x + self.mlp(self.ln_2(x))


class SASRecNet(SequentialNet):
    """The SASRec network.

    Args:
        n_items: Catalogue size ``I``; embeddings have ``I + 1`` rows, row 0 is padding.
        max_len: Sequence length ``L`` (size of the position table).
        dim: Model width ``D``.
        n_layers: Transformer blocks.
        n_heads: Attention heads.
        dropout: Dropout rate.
        loss: Training loss name.
        n_negatives: Sampled-softmax negatives.
        logq: Log-probabilities of the negative sampler, shape ``(I,)``.
        text: Item text embeddings ``(I, T)`` for ``item_text: adaptor`` (``init`` fills
            ``item_emb`` after construction, in ``SequentialRecommender._new_net``).
        item_text: ``none``, ``init`` or ``adaptor``.
        sparse: Training reads the item table with sparse-gradient lookups (sampled losses
            and an ID table only).
    """

    def __init__(self, n_items: int, max_len: int, dim: int, n_layers: int, n_heads: int,
                 dropout: float, loss: str, n_negatives: int, logq: torch.Tensor,
                 text: torch.Tensor | None = None, item_text: str = "none",
                 sparse: bool = False) -> None:
        super().__init__()
        if sparse and (loss == "ce" or item_text == "adaptor"):
            raise ValueError("sparse item gradients need a sampled loss and an ID table")
        self.sparse = sparse
        self.item_text = item_text
        # In adaptor mode the table is only padding (its row 0 stays zero); items come from text.
        self.item_emb = nn.Embedding(1 if item_text == "adaptor" else n_items + 1, dim,
                                     padding_idx=0)
        if item_text == "adaptor":
            assert text is not None
            self.register_buffer("text", text.float())                 # (I, T), frozen
            self.adaptor = nn.Sequential(nn.Linear(text.shape[1], 2 * dim), nn.GELU(),
                                         nn.Linear(2 * dim, dim))
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)
        self.loss = loss
        self.n_negatives = n_negatives
        self.register_buffer("logq", logq, persistent=False)
        self.init_weights()  # item_text init: SequentialRecommender._new_net fills item_emb

    def item_table(self) -> torch.Tensor:
        """Item vectors with the padding row first, ``(I + 1, D)``."""
        if self.item_text != "adaptor":
            return self.item_emb.weight
        return torch.cat([self.item_emb.weight, self.adaptor(self.text)])  # row 0 = 0

    padding_invariant = True

    def forward(self, seq: torch.Tensor, targets: torch.Tensor | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states of ``seq`` and, given ``targets`` (both ``(B, L)``, ``L <= max_len``),
        the loss. ``last_only`` (no targets) computes the last block at the last position
        only and returns ``(B, 1, D)``: all that scoring needs."""
        length, max_len = seq.shape[1], self.pos_emb.num_embeddings
        # Positions count back from the most recent item (always at max_len - 1), so a
        # sequence shorter than max_len reads like the same sequence with more left padding.
        pos = torch.arange(max_len - length, max_len, device=seq.device)
        table = self.item_table()                                      # (I + 1, D)
        if self.sparse and self.training:  # gradient rows: only the items in the batch
            # No padding_idx: as with table[seq], row 0 learns the padding positions' input.
            items = F.embedding(seq, table, sparse=True)               # (B, L, D)
        else:
            items = table[seq]                                         # (B, L, D)
        x = self.drop(items + self.pos_emb(pos))                       # (B, L, D)
        # Position t attends to real items at positions <= t, and always to itself, so the
        # padding rows of a left-padded sequence have a key and never produce NaN.
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = causal & ((seq > 0)[:, None, :] | eye)                  # (B, L, L)
        mask = mask[:, None]                                           # (B, 1, L, L)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only and i == len(self.blocks) - 1)
        hidden = self.ln_f(x)                                          # (B, L or 1, D)
        if targets is None:
            return hidden, None
        return hidden, next_item_loss(hidden, targets, table, loss=self.loss,
                                      n_negatives=self.n_negatives, logq=self.logq,
                                      sparse=self.sparse and self.training)


    def query(self, seq: torch.Tensor) -> torch.Tensor:
        """The last position's state, ``(B, D)`` (scores: ``query @ item_table()[1:].T``)."""
        hidden, _ = self(seq, last_only=True)                          # (B, 1, D)
        return hidden[:, -1]


class SASRec(SequentialRecommender[SASRecConfig]):
    """SASRec recommender: trains :class:`SASRecNet` on each user's next-item sequence.

    Scores are the last position's hidden state dotted with every item embedding.
    """

    config_cls = SASRecConfig

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.text_emb_ = state.get("net.text")  # adaptor: the frozen text table is saved
        super()._load_state(state)

    def _build_net(self, item_counts: np.ndarray | None) -> SASRecNet:
        c = self.config
        # Sparse item gradients only matter for training (item_counts is None when loading).
        sparse = item_counts is not None and c.item_text != "adaptor" and use_sparse_embeddings(
            c.sparse_embeddings, c.loss, self.n_items_, "SASRec")
        if sparse:
            _log.info("SASRec: sparse item-table gradients, lazy Adam on %d item rows",
                      self.n_items_)
        return SASRecNet(self.n_items_, c.max_len, c.dim, c.n_layers, c.n_heads, c.dropout,
                         c.loss, c.n_negatives, log_proposal(item_counts, self.n_items_),
                         text=getattr(self, "text_emb_", None), item_text=c.item_text,
                         sparse=sparse)
