"""SimpleX: a simple and strong baseline for collaborative filtering (Mao et al., CIKM 2021).

The user tower mixes the user's own embedding with an aggregate of their history::

    p_u = g * e_u + (1 - g) * W mean(e_j for j in history(u))

and the score is the cosine ``cos(p_u, e_i)``. Training uses the cosine contrastive loss
(CCL) with many uniform negatives ``N``::

    L = (1 - cos(p_u, e_i)) + w / |N| * sum_(j in N) max(0, cos(p_u, e_j) - m)

where the margin ``m`` ignores negatives that are already dissimilar enough and ``w``
balances the two terms. Here ``N`` is one uniform draw per batch, shared by its rows (the
paper draws per interaction); a negative that is one of a row's training items is ignored
for that row. Mean pooling is the paper's default aggregator. When a training
row ``(u, i)`` is scored, ``i`` itself is left out of ``u``'s history mean, so the model is
trained as it is used: at test time the target is never in the history.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from genrec.data.interactions import Histories, Interactions
from genrec.models.bprmf import (
    FactorConfig,
    FactorRecommender,
    embedding_l2,
    is_positive,
    positive_keys,
)

__all__ = ["SimpleX", "SimpleXConfig", "SimpleXNet", "cosine_contrastive_loss", "history_mean",
           "user_tower"]

_log = logging.getLogger(__name__)


class SimpleXConfig(FactorConfig):
    """SimpleX hyperparameters."""

    kind: Literal["simplex"] = "simplex"
    n_negatives: int = Field(500, ge=1)
    """Uniform negatives per batch, shared by its rows (CCL wants many; the paper uses
    100-1000 per interaction). A negative that is one of a row's training items is ignored."""
    margin: float = Field(0.8, ge=-1, le=1)
    """CCL margin ``m``: negatives with cosine below it cost nothing."""
    negative_weight: float = Field(10.0, ge=0)
    """CCL weight ``w`` of the mean negative term."""
    gate: float = Field(0.5, ge=0, le=1)
    """Weight ``g`` of the user embedding against the history aggregate in the user tower."""
    history_len: int = Field(50, ge=1)
    """Most recent history items the tower averages."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the user tower during training."""
    l2: float = Field(1e-5, ge=0)
    """Weight of the L2 penalty on the embeddings of each batch (mean squared norm / 2)."""


def cosine_contrastive_loss(pos_cos: torch.Tensor, neg_cos: torch.Tensor, margin: float,
                            negative_weight: float) -> torch.Tensor:
    """The CCL loss.

    Args:
        pos_cos: Cosine of each row's positive, shape ``(N,)``.
        neg_cos: Cosines of its negatives, shape ``(N, M)``.
        margin: ``m``.
        negative_weight: ``w``.

    Returns:
        Scalar: mean over rows of ``relu(1 - pos) + w * mean_j relu(neg_j - m)``.
    """
    pos_term = torch.relu(1.0 - pos_cos)                                   # (N,)
    neg_term = torch.relu(neg_cos - margin).mean(dim=1)                    # (N,)
    return (pos_term + negative_weight * neg_term).mean()


def history_mean(history: torch.Tensor, item_emb: torch.Tensor,
                 leave_out: torch.Tensor | None = None) -> torch.Tensor:
    """Mean embedding of each row's history items (zeros for an empty history).

    Args:
        history: Item ids shifted by 1, 0 = padding, shape ``(B, L)``.
        item_emb: Item embeddings, shape ``(I, D)``.
        leave_out: Per row, an item ``(B,)`` to exclude from the mean (one occurrence) if
            it is in the history: the training target, which the tower must not see.

    Returns:
        Shape ``(B, D)``.
    """
    table = F.pad(item_emb, (0, 0, 1, 0))                                  # (I + 1, D), row 0 = 0
    total = table[history].sum(1)                                          # (B, D)
    count = (history > 0).sum(1)                                           # (B,)
    if leave_out is not None:
        inside = (history == leave_out[:, None] + 1).any(1)                # (B,)
        total = total - inside[:, None] * item_emb[leave_out]
        count = count - inside.long()
    return total / count.clamp(min=1)[:, None]


def user_tower(user_emb: torch.Tensor, history_mean: torch.Tensor, proj: torch.Tensor,
               gate: float) -> torch.Tensor:
    """``g * e_u + (1 - g) * W h`` for rows of user embeddings and history means ``(B, D)``."""
    return gate * user_emb + (1.0 - gate) * history_mean @ proj.T


class SimpleXNet(nn.Module):
    """User/item embeddings, the history projection ``W`` and the CCL objective.

    Args:
        n_users: Users ``U``.
        n_items: Items ``I``.
        dim: Embedding width ``D``.
        n_negatives: Negatives per training row ``M``.
        margin: CCL margin.
        negative_weight: CCL negative weight.
        gate: ``g`` of the user tower.
        dropout: Dropout on the user tower.
        l2: Weight of the batch L2 penalty.
        history: Each training user's most recent items, ids shifted by 1, left-padded with 0,
            shape ``(U, L)``.
        keys: Sorted training keys ``user * I + item`` (for the negative sampler).
    """

    history: torch.Tensor
    keys: torch.Tensor

    def __init__(self, n_users: int, n_items: int, dim: int, n_negatives: int, margin: float,
                 negative_weight: float, gate: float, dropout: float, l2: float,
                 history: torch.Tensor, keys: torch.Tensor) -> None:
        super().__init__()
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        self.proj = nn.Linear(dim, dim, bias=False)
        for w in (self.user_emb.weight, self.item_emb.weight, self.proj.weight):
            nn.init.xavier_normal_(w)
        self.drop = nn.Dropout(dropout)
        self.n_negatives = n_negatives
        self.margin = margin
        self.negative_weight = negative_weight
        self.gate = gate
        self.l2 = l2
        self.register_buffer("history", history, persistent=False)
        self.register_buffer("keys", keys, persistent=False)

    def forward(self, users: torch.Tensor,
                items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive cosines ``(B,)`` of the rows ``(users, items)`` and the batch loss."""
        u = self.user_emb(users)                                           # (B, D)
        p = self.item_emb(items)                                           # (B, D)
        mean = history_mean(self.history[users], self.item_emb.weight, leave_out=items)
        tower = user_tower(u, mean, self.proj.weight, self.gate)          # (B, D)
        tower = F.normalize(self.drop(tower), dim=-1)                      # (B, D)
        # One set of uniform negatives shared by the batch: scoring them is a (B, D) x (D, M)
        # product instead of a (B, M, D) gather (measured 1 s per step on CPU for M = 100).
        # Negatives that are a row's training positive are masked out of its loss.
        n_items = self.item_emb.num_embeddings
        neg = torch.randint(0, n_items, (self.n_negatives,), device=users.device)  # (M,)
        n = self.item_emb(neg)                                             # (M, D)
        pos_cos = (tower * F.normalize(p, dim=-1)).sum(-1)                 # (B,)
        neg_cos = tower @ F.normalize(n, dim=-1).T                         # (B, M)
        hit = is_positive(users[:, None], neg[None], n_items, self.keys)   # (B, M)
        neg_cos = neg_cos.masked_fill(hit, -1.0)                           # costs nothing
        loss = cosine_contrastive_loss(pos_cos, neg_cos, self.margin, self.negative_weight)
        return pos_cos, loss + self.l2 * embedding_l2(u, p, n)


class SimpleX(FactorRecommender[SimpleXConfig]):
    """SimpleX recommender: cosine of the user tower and the item embeddings.

    Scoring reads the histories it is given (the latest ``history_len`` items), so the
    tower of a test user includes the validation item. Cold users (see
    :attr:`FactorConfig.cold_users`) get a zero user embedding, i.e. the history part of
    the tower alone (fold_in), or all-zero scores (zeros).
    """

    config_cls = SimpleXConfig

    def _build_net(self, train: Interactions, x: sp.csr_matrix) -> SimpleXNet:
        c = self.config
        history = train.histories().padded(c.history_len)                 # (U, L), ordered
        return SimpleXNet(x.shape[0], x.shape[1], c.dim, c.n_negatives, c.margin,
                          c.negative_weight, c.gate, c.dropout, c.l2, history, positive_keys(x))

    def _export(self) -> None:
        net = cast(SimpleXNet, self.net_)
        self.user_emb_ = net.user_emb.weight.detach().cpu().clone()        # (U, D)
        self.item_emb_ = net.item_emb.weight.detach().cpu().clone()        # (I, D)
        self.proj_ = net.proj.weight.detach().cpu().clone()                # (D, D)

    def _score(self, histories: Histories) -> torch.Tensor:
        return self.query_vectors(histories) @ self.item_vectors().T        # (B, I) cosines

    def query_vectors(self, histories: Histories) -> torch.Tensor:
        """Normalised user towers ``(B, D)`` (zeros for cold users under ``cold_users="zeros"``,
        whose scores are 0): ``score = query_vectors @ item_vectors().T``."""
        self._require_fitted()
        known = self._known(histories.users)
        users = torch.as_tensor(histories.users, dtype=torch.long)
        u = torch.zeros(len(histories), self.user_emb_.shape[1])
        u[known] = self.user_emb_[users[known]]
        mean = history_mean(histories.padded(self.config.history_len), self.item_emb_)
        tower = F.normalize(user_tower(u, mean, self.proj_, self.config.gate), dim=-1)
        if self.config.cold_users == "zeros":
            tower[~known] = 0.0
        return tower

    def item_vectors(self) -> torch.Tensor:
        """Normalised item vectors ``(I, D)`` (scores are cosines)."""
        self._require_fitted()
        return F.normalize(self.item_emb_, dim=-1)

    def _state(self) -> dict[str, torch.Tensor]:
        return super()._state() | {"proj": self.proj_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        super()._load_state(state)
        self.proj_ = state["proj"]

