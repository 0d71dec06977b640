"""The torch net behind SVD++ and the text-aware regressor (trained by
:func:`genrec.training.train` through ``Recommender._train_net``).

``r_ui ~ mu + b_u + b_i + w . t_i + (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j) . (q_i + W t_i)``

- SVD++ (Koren 2008): the implicit term over ``N(u)``, the items ``u`` rated in training;
  no text.
- Text-aware: ``t_i`` is the frozen MiniLM embedding of item ``i``'s text; ``W`` and ``w``
  map it into the factor space and to a bias, so items with few ratings borrow from similar
  texts. The implicit term is optional.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from genrec.data.interactions import Interactions
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.base import RatingModel, known, rating_triples
from genrec.training.loop import TrainConfig

__all__ = ["NetRatingConfig", "NetRatingModel", "RatingNet", "RatingTrainConfig"]


class RatingNet(nn.Module):
    """Biased factor model with optional implicit (SVD++) and item-text terms.

    Args:
        n_users: Users ``U``.
        n_items: Items ``I``.
        dim: Factor width ``K``.
        mu: Global mean rating.
        reg: Weight of the L2 penalty (mean over the batch of the squared norms used).
        init_std: Standard deviation of the initial factors.
        implicit: ``(indptr (U+1,), indices (nnz,))`` of the training items per user, or None.
        text: Item text embeddings ``(I, T)``, or None.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, mu: float, reg: float,
                 init_std: float = 0.05, implicit: tuple[torch.Tensor, torch.Tensor] | None = None,
                 text: torch.Tensor | None = None) -> None:
        super().__init__()
        self.reg = reg
        self.register_buffer("mu", torch.tensor([mu], dtype=torch.float32))
        self.bu = nn.Parameter(torch.zeros(n_users))
        self.bi = nn.Parameter(torch.zeros(n_items))
        self.p = nn.Parameter(torch.randn(n_users, dim) * init_std)
        self.q = nn.Parameter(torch.randn(n_items, dim) * init_std)
        self.has_implicit = implicit is not None
        if implicit is not None:
            indptr, indices = implicit
            self.register_buffer("indptr", indptr.long())
            self.register_buffer("indices", indices.long())
            self.y = nn.Parameter(torch.randn(n_items, dim) * init_std)
        self.has_text = text is not None
        if text is not None:
            self.register_buffer("text", text.float())
            self.text_proj = nn.Linear(text.shape[1], dim, bias=False)
            self.text_bias = nn.Linear(text.shape[1], 1, bias=False)
            nn.init.zeros_(self.text_proj.weight)
            nn.init.zeros_(self.text_bias.weight)

    def _implicit(self, users: torch.Tensor) -> torch.Tensor:
        """``|N(u)|^-1/2 sum_{j in N(u)} y_j`` per user, ``(B, K)`` (zeros for no items)."""
        start, stop = self.indptr[users], self.indptr[users + 1]
        lengths = stop - start                                             # (B,)
        offsets = torch.cumsum(lengths, 0) - lengths                       # (B,)
        flat = torch.arange(int(lengths.sum()), device=users.device)
        flat = flat - offsets.repeat_interleave(lengths) + start.repeat_interleave(lengths)
        summed = F.embedding_bag(self.indices[flat], self.y, offsets, mode="sum")  # (B, K)
        return summed * lengths.clamp(min=1).float().rsqrt()[:, None]

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``p_u`` plus the implicit term, ``(B, K)``."""
        vec = self.p[users]
        return vec + self._implicit(users) if self.has_implicit else vec

    def item_vectors(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q_i + W t_i, b_i + w . t_i)``: ``(N, K)`` and ``(N,)``."""
        vec, bias = self.q[items], self.bi[items]
        if self.has_text:
            t = self.text[items]                                           # (N, T)
            vec = vec + self.text_proj(t)
            bias = bias + self.text_bias(t).squeeze(1)
        return vec, bias

    def forward(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        uv = self.user_vectors(users)                                      # (B, K)
        iv, ib = self.item_vectors(items)                                  # (B, K), (B,)
        pred = self.mu + self.bu[users] + ib + (uv * iv).sum(1)
        penalty = (uv.square().sum(1) + iv.square().sum(1) + self.bu[users].square()
                   + ib.square()).mean()
        return pred, F.mse_loss(pred, ratings) + self.reg * penalty


class RatingTrainConfig(TrainConfig):
    """:class:`~genrec.training.TrainConfig` with defaults for rating regression (one row is
    one rating; early stopping on minus the validation RMSE)."""

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(3e-3, gt=0)
    patience: int | None = Field(5, ge=1)
    grad_clip: float | None = Field(None, gt=0)


class NetRatingConfig(ModelConfig):
    """Settings SVD++ and the text-aware regressor share."""

    dim: int = Field(64, ge=1)
    """Factor width."""
    reg: float = Field(0.05, ge=0)
    """Weight of the L2 penalty on the factors and biases used by each batch."""
    init_std: float = Field(0.05, gt=0)
    """Standard deviation of the initial factors."""
    train: RatingTrainConfig = Field(default_factory=RatingTrainConfig)


NC = TypeVar("NC", bound=NetRatingConfig)


class NetRatingModel(RatingModel[NC]):
    """A :class:`RatingModel` over a :class:`RatingNet`; subclasses say which terms it has."""

    def _implicit(self, train: Interactions) -> bool:
        raise NotImplementedError

    def _text(self, train: Interactions, ctx: FitContext) -> torch.Tensor | None:
        return None

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        cfg = self.config
        u, i, r = rating_triples(train)
        implicit = None
        if self._implicit(train):
            x = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u.numpy(), i.numpy())),
                              shape=(train.n_users, train.n_items))
            x.sum_duplicates()
            implicit = (torch.from_numpy(x.indptr.astype(np.int64)),
                        torch.from_numpy(x.indices.astype(np.int64)))
        text = self._text(train, ctx)
        torch.manual_seed(ctx.seed)  # initialisation
        self.net_ = RatingNet(train.n_users, train.n_items, cfg.dim, float(r.double().mean()),
                              cfg.reg, cfg.init_std, implicit=implicit, text=text)
        self.train_result_ = self._train_net(self.net_, (u, i, r), train, ctx, cfg.train)
        self.net_.eval()

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        net = self.net_
        dev = net.mu.device
        ku, u = known(users.to(dev), len(net.bu))
        ki, i = known(items.to(dev), len(net.bi))
        iv, ib = net.item_vectors(i)
        dot = (net.user_vectors(u) * iv).sum(1)
        return (net.mu + torch.where(ku, net.bu[u], 0.0) + torch.where(ki, ib, 0.0)
                + torch.where(ku & ki, dot, 0.0))

    def _state(self) -> dict[str, torch.Tensor]:
        return dict(self.net_.state_dict())

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        n_users, dim = state["p"].shape
        implicit = (state["indptr"], state["indices"]) if "indptr" in state else None
        self.net_ = RatingNet(n_users, len(state["q"]), dim, float(state["mu"]), self.config.reg,
                              implicit=implicit, text=state.get("text"))
        self.net_.load_state_dict(state)
        self.net_.eval()
