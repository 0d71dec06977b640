"""BPR-MF: matrix factorisation trained with Bayesian personalised ranking (Rendle et al., 2009).

Each user ``u`` and item ``i`` has a ``D``-dimensional embedding; the score is ``e_u . e_i``.
Every training row is an observed ``(user, item)`` pair, contrasted with ``n_negatives`` items
drawn uniformly among the user's unobserved items: ``-log sigmoid(s_ui - s_uj)``, plus an L2
penalty on the embeddings the batch touched.

This module also holds what the collaborative-filtering models (BPR-MF, LightGCN, SimpleX)
share: :class:`FactorConfig`, the negative sampler :func:`sample_negatives` and the wrapper
:class:`FactorRecommender`, which trains a net on the ``(user, item)`` rows with
:func:`genrec.training.train`, early-stops on the validation metric and answers users it
never trained ("cold" users) from their history.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Literal, TypeVar, cast

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender
from genrec.training import losses
from genrec.training.loop import TrainConfig

__all__ = [
    "BPRMF",
    "BPRMFConfig",
    "BPRMFNet",
    "FactorConfig",
    "FactorRecommender",
    "FactorTrainConfig",
    "embedding_l2",
    "is_positive",
    "positive_keys",
    "sample_negatives",
]

_log = logging.getLogger(__name__)


class FactorTrainConfig(TrainConfig):
    """:class:`~genrec.training.TrainConfig` with defaults for pairwise collaborative filtering.

    One training row is one interaction, so batches are much larger than for sequence models.
    """

    batch_size: int = Field(2048, ge=1)
    """Interactions per optimizer step (the LightGCN paper's 2048)."""
    lr: float = Field(5e-3, gt=0)
    """Peak learning rate of AdamW. The LightGCN paper's 1e-3 needs hundreds of epochs; 5e-3
    gets BPR-MF and LightGCN to their best Amazon Beauty validation NDCG in about 40."""


class FactorConfig(ModelConfig):
    """Settings BPR-MF, LightGCN and SimpleX share."""

    dim: int = Field(64, ge=1)
    """Width of the user and item embeddings."""
    n_negatives: int = Field(1, ge=1)
    """Negatives drawn per training interaction, uniformly among the user's unobserved items."""
    l2: float = Field(1e-4, ge=0)
    """Weight of the L2 penalty on the embeddings of each batch (mean squared norm / 2)."""
    cold_users: Literal["fold_in", "zeros"] = "fold_in"
    """Answer for users without a trained embedding (an id beyond the training users, or a
    user with no training interaction): fold_in builds their vector from their history
    items (BPR-MF, LightGCN: the mean item embedding; SimpleX: the tower without the user
    embedding); zeros gives them all-zero scores."""
    train: FactorTrainConfig = Field(default_factory=FactorTrainConfig)
    """Optimisation, early stopping, checkpoints and device."""


def positive_keys(x: sp.csr_matrix) -> torch.Tensor:
    """Sorted keys ``user * n_items + item`` of the nonzeros of ``x`` ``(U, I)``, shape ``(P,)``."""
    coo = x.tocoo()
    keys = coo.row.astype(np.int64) * x.shape[1] + coo.col.astype(np.int64)
    return torch.from_numpy(np.sort(keys))


def is_positive(users: torch.Tensor, items: torch.Tensor, n_items: int,
                keys: torch.Tensor) -> torch.Tensor:
    """True where ``items`` is a training positive of ``users`` (broadcast shapes).

    Args:
        users: User ids, e.g. shape ``(B, 1)``.
        items: Item ids, e.g. shape ``(B, M)`` or ``(1, M)``.
        n_items: Catalogue size.
        keys: Sorted ``user * n_items + item`` of the training positives.

    Returns:
        Boolean tensor of the broadcast shape.
    """
    k = users * n_items + items
    if len(keys) == 0:
        return torch.zeros_like(k, dtype=torch.bool)
    return keys[torch.searchsorted(keys, k).clamp_(max=len(keys) - 1)] == k


def sample_negatives(users: torch.Tensor, n: int, n_items: int, keys: torch.Tensor, *,
                     rounds: int = 3) -> torch.Tensor:
    """Uniform negatives per user, redrawn where they hit a training positive.

    The draws use torch's global generator, which :func:`genrec.training.train` seeds from
    the fit context's seed and saves in every checkpoint: the negatives are a function of the seed
    and the position in training, and a resumed run draws exactly the ones it would have.

    Args:
        users: User ids, shape ``(B,)``.
        n: Negatives per user ``M``.
        n_items: Catalogue size.
        keys: Sorted ``user * n_items + item`` of the training positives (:func:`positive_keys`).
        rounds: Redraws of the items that hit a positive; a hit surviving all rounds (a user
            who has seen most of the catalogue) is kept, so the loop stays bounded.

    Returns:
        Item ids, shape ``(B, M)``.
    """
    neg = torch.randint(0, n_items, (len(users), n), device=users.device)        # (B, M)
    if len(keys) == 0:
        return neg
    for _ in range(rounds):
        hit = is_positive(users[:, None], neg, n_items, keys)                     # (B, M)
        n_hit = int(hit.sum())
        if n_hit == 0:
            break
        neg[hit] = torch.randint(0, n_items, (n_hit,), device=users.device)
    return neg


def embedding_l2(*embeddings: torch.Tensor) -> torch.Tensor:
    """Sum over the tensors of the mean squared L2 norm of their rows, halved.

    Each argument has shape ``(..., D)``; a ``(B, M, D)`` block of negatives counts as much as
    a ``(B, D)`` block of positives, whatever ``M``.
    """
    return sum(e.pow(2).sum(-1).mean() for e in embeddings) / 2  # type: ignore[return-value]


F = TypeVar("F", bound=FactorConfig)


class FactorRecommender(Recommender[F]):
    """Wrapper of a net trained on ``(user, item)`` rows and scored by ``user_emb_ . item_emb_``.

    Subclasses build the net and export the scoring tensors from it; this class owns training,
    validation, cold users, scoring and persistence. Known users (trained ids with at least
    one training interaction) are scored with their learned vector, whatever history the
    batch carries: the leave-one-out protocol hands the test users their train + valid items
    and, as is standard for matrix factorisation, the extra item does not change the vector.
    """

    @abstractmethod
    def _build_net(self, train: Interactions, x: sp.csr_matrix) -> nn.Module:
        """A freshly initialised net for ``train``, whose binary matrix is ``x`` ``(U, I)``."""

    @abstractmethod
    def _export(self) -> None:
        """Set the scoring tensors (``user_emb_``, ``item_emb_``, ...) from ``net_``."""

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        cfg = self.config
        torch.manual_seed(ctx.seed)  # initialisation
        x = train.to_csr()                                                 # (U, I) binary
        coo = x.tocoo()
        rows = (torch.from_numpy(coo.row.astype(np.int64)),               # (P,) users
                torch.from_numpy(coo.col.astype(np.int64)))               # (P,) items
        self.trained_users_ = torch.from_numpy(np.diff(x.indptr) > 0)     # (U,)
        self.net_ = self._build_net(train, x)
        _log.info("%s: %d interactions, %d users, %d items, %d parameters", type(self).__name__,
                  len(rows[0]), train.n_users, train.n_items,
                  sum(p.numel() for p in self.net_.parameters()))
        self.train_result_ = self._train_net(self.net_, rows, train, ctx, cfg.train,
                                             before_validate=self._export)
        self._export()  # from the best weights, which the loop restored

    # -- scoring ----------------------------------------------------------------------------
    def _known(self, users: np.ndarray) -> torch.Tensor:
        """True for users with a trained embedding, shape ``(B,)``."""
        ids = torch.as_tensor(users, dtype=torch.long)
        inside = (ids >= 0) & (ids < self.n_users_)  # -1: an anonymous (history-only) user
        known = torch.zeros(len(ids), dtype=torch.bool)
        known[inside] = self.trained_users_[ids[inside]]
        return known

    def _fold_in(self, histories: Histories, item_emb: torch.Tensor) -> torch.Tensor:
        """Mean embedding of each history's items (zeros for an empty history), ``(B, D)``."""
        x = histories.to_csr()                                             # (B, I) binary
        n = np.asarray(x.sum(axis=1)).ravel()
        x = sp.diags(1.0 / np.maximum(n, 1.0)) @ x
        return torch.from_numpy(np.asarray(x @ item_emb.numpy(), dtype=np.float32))

    def _user_vectors(self, histories: Histories) -> torch.Tensor:
        """Learned vectors of known users; fold-in or zeros for the others, ``(B, D)``."""
        known = self._known(histories.users)
        if self.config.cold_users == "fold_in" and not bool(known.all()):
            out = self._fold_in(histories, self.item_emb_)
        else:
            out = torch.zeros(len(histories), self.item_emb_.shape[1])
        users = torch.as_tensor(histories.users, dtype=torch.long)
        out[known] = self.user_emb_[users[known]]
        return out

    def _score(self, histories: Histories) -> torch.Tensor:
        return self._user_vectors(histories) @ self.item_emb_.T            # (B, I)

    def query_vectors(self, histories: Histories) -> torch.Tensor:
        """User vectors ``(B, D)``: ``score = query_vectors @ item_vectors().T``."""
        self._require_fitted()
        return self._user_vectors(histories)

    def item_vectors(self) -> torch.Tensor:
        """Item vectors ``(I, D)``."""
        self._require_fitted()
        return self.item_emb_

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_emb": self.user_emb_, "item_emb": self.item_emb_,
                "trained_users": self.trained_users_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.user_emb_ = state["user_emb"]
        self.item_emb_ = state["item_emb"]
        self.trained_users_ = state["trained_users"]


# -- BPR-MF ---------------------------------------------------------------------------------
class BPRMFConfig(FactorConfig):
    """BPR-MF hyperparameters."""

    kind: Literal["bprmf"] = "bprmf"
    l2: float = Field(1e-2, ge=0)
    """Weight of the L2 penalty on the embeddings of each batch (mean squared norm / 2).
    Without the smoothing of propagation, BPR-MF overfits Amazon Beauty within a few epochs
    at 1e-4 and 1e-3 (validation NDCG@10 0.017-0.018); 1e-2 reaches 0.023 and more."""


class BPRMFNet(nn.Module):
    """User and item embeddings scored by their dot product, trained with the BPR loss.

    Args:
        n_users: Users ``U``.
        n_items: Items ``I``.
        dim: Embedding width ``D``.
        n_negatives: Negatives per training row ``M``.
        l2: Weight of the batch L2 penalty.
        keys: Sorted training keys ``user * I + item`` (:func:`positive_keys`).
    """

    keys: torch.Tensor

    def __init__(self, n_users: int, n_items: int, dim: int, n_negatives: int, l2: float,
                 keys: torch.Tensor) -> None:
        super().__init__()
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.n_negatives = n_negatives
        self.l2 = l2
        self.register_buffer("keys", keys, persistent=False)

    def forward(self, users: torch.Tensor,
                items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive scores ``(B,)`` of the rows ``(users, items)`` and the batch loss."""
        neg = sample_negatives(users, self.n_negatives, self.item_emb.num_embeddings,
                               self.keys)                                  # (B, M)
        u = self.user_emb(users)                                           # (B, D)
        p = self.item_emb(items)                                           # (B, D)
        n = self.item_emb(neg)                                             # (B, M, D)
        pos = (u * p).sum(-1)                                              # (B,)
        neg_scores = (u[:, None] * n).sum(-1)                              # (B, M)
        loss = losses.bpr(pos, neg_scores) + self.l2 * embedding_l2(u, p, n)
        return pos, loss


class BPRMF(FactorRecommender[BPRMFConfig]):
    """BPR matrix factorisation.

    Cold users (see :attr:`FactorConfig.cold_users`) are folded in as the mean embedding of
    their history items, so their score for item ``i`` is the mean similarity ``e_j . e_i``
    over their items ``j``; with an empty history (or ``cold_users="zeros"``) every score is 0.
    """

    config_cls = BPRMFConfig

    def _build_net(self, train: Interactions, x: sp.csr_matrix) -> BPRMFNet:
        c = self.config
        return BPRMFNet(x.shape[0], x.shape[1], c.dim, c.n_negatives, c.l2, positive_keys(x))

    def _export(self) -> None:
        net = cast(BPRMFNet, self.net_)
        self.user_emb_ = net.user_emb.weight.detach().cpu().clone()        # (U, D)
        self.item_emb_ = net.item_emb.weight.detach().cpu().clone()        # (I, D)
