"""Biased matrix factorisation for explicit ratings (Koren, Bell & Volinsky 2009; Surprise's
``SVD``): ``r_ui ~ mu + b_u + b_i + p_u . q_i``.

Two solvers, both vectorised (no loop over ratings in Python):

- ``sgd``: Surprise's update rule, applied to a mini-batch of ratings at once with
  ``index_add_`` (``e = r - r_hat``; ``b_u += lr (e - reg b_u)``; ``p_u += lr (e q_i -
  reg p_u)``; ...). With small batches this is Funk's SGD up to the order of updates inside a
  batch. It is its own loop rather than :func:`genrec.training.train`, because the method *is*
  plain per-rating SGD with L2 shrinkage, not AdamW on a mean loss.
- ``als``: alternating ridge regressions with per-user / per-item weighted regularisation
  (ALS-WR, Zhou et al. 2008); each half-step solves all users (items) at once:
  the normal matrices are one sparse product ``M @ (x x^T)`` and one batched solve.

With a validation callback in the fit context (the rating glue passes minus the RMSE on a
hold-out of the training part) the epoch with the best validation score is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from genrec.data.interactions import Interactions
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.base import BestEpoch, RatingModel, known, rating_triples

__all__ = ["BiasedMF", "BiasedMFConfig"]

_log = logging.getLogger(__name__)


class BiasedMFConfig(ModelConfig):
    """Biased MF; the defaults were selected on a hold-out of ML-100K's u1.base
    (``benchmarks/autorec_select.py``, see BENCHMARKS.md)."""

    kind: Literal["biased_mf"] = "biased_mf"
    solver: Literal["sgd", "als"] = "sgd"
    """``sgd`` (Surprise-style) or ``als`` (weighted-lambda ALS)."""
    factors: int = Field(200, ge=1)
    """Latent dimension."""
    epochs: int = Field(60, ge=1)
    """SGD epochs or ALS sweeps."""
    lr: float = Field(0.01, gt=0)
    """SGD learning rate."""
    reg: float = Field(0.1, ge=0)
    """L2 shrinkage of factors (SGD: per update; ALS: times the rating count)."""
    reg_bias: float | None = Field(None, ge=0)
    """Shrinkage of the biases; None uses ``reg`` (ALS: 0.05 is a good value)."""
    batch_size: int = Field(64, ge=1)
    """Ratings per SGD step."""
    init_std: float = Field(0.1, gt=0)
    """Standard deviation of the initial factors."""
    patience: int | None = Field(None, ge=1)
    """With a validation callback: stop after this many epochs without improvement."""


def _csr(m: sp.csr_matrix) -> torch.Tensor:
    m = m.tocsr()
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data.astype(np.float32)), m.shape)


class BiasedMF(RatingModel[BiasedMFConfig]):
    """Biased matrix factorisation (SGD or ALS)."""

    config_cls = BiasedMFConfig

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        u, i, r = rating_triples(train)
        c = self.config
        g = torch.Generator().manual_seed(ctx.seed)
        self.mu_ = r.double().mean().float().reshape(1)
        self.p_ = torch.randn(train.n_users, c.factors, generator=g) * c.init_std
        self.q_ = torch.randn(train.n_items, c.factors, generator=g) * c.init_std
        # A user or item with no training rating keeps a zero vector (SGD never updates its
        # row): its predictions are the biases alone, not noise from the initialisation.
        self.p_[torch.bincount(u, minlength=train.n_users) == 0] = 0.0
        self.q_[torch.bincount(i, minlength=train.n_items) == 0] = 0.0
        self.bu_ = torch.zeros(train.n_users)
        self.bi_ = torch.zeros(train.n_items)
        als = self._als_sweep(u, i, r, train) if c.solver == "als" else None
        keeper = BestEpoch(c.patience)
        self.epochs_run_ = 0
        for epoch in range(c.epochs):
            if als is None:
                self._sgd_epoch(u, i, r, g)
            else:
                als()
            self.epochs_run_ = epoch + 1
            if ctx.validate is not None and keeper.update(epoch + 1, float(ctx.validate(self)),
                                                          self._state):
                break
        if keeper.state is not None:
            self._load_state(keeper.state)
            self.best_epoch_ = keeper.best_epoch

    def _sgd_epoch(self, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor,
                   g: torch.Generator) -> None:
        c = self.config
        reg_b = c.reg if c.reg_bias is None else c.reg_bias
        mu = float(self.mu_)
        P, Q, bu, bi = self.p_, self.q_, self.bu_, self.bi_
        perm = torch.randperm(len(u), generator=g)
        for s in range(0, len(u), c.batch_size):
            b = perm[s:s + c.batch_size]
            uu, ii, rr = u[b], i[b], r[b]
            pu, qi = P[uu], Q[ii]                                     # (b, k)
            e = rr - (mu + bu[uu] + bi[ii] + (pu * qi).sum(1))        # (b,)
            bu.index_add_(0, uu, c.lr * (e - reg_b * bu[uu]))
            bi.index_add_(0, ii, c.lr * (e - reg_b * bi[ii]))
            P.index_add_(0, uu, c.lr * (e[:, None] * qi - c.reg * pu))
            Q.index_add_(0, ii, c.lr * (e[:, None] * pu - c.reg * qi))

    def _als_sweep(self, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor,
                   train: Interactions) -> Callable[[], None]:
        c = self.config
        reg_b = 0.05 if c.reg_bias is None else c.reg_bias
        nu, ni = train.n_users, train.n_items
        un, inn, rc = u.numpy(), i.numpy(), (r - self.mu_).numpy()
        ones = np.ones(len(un), dtype=np.float32)
        m = sp.csr_matrix((ones, (un, inn)), shape=(nu, ni))
        res = sp.csr_matrix((rc, (un, inn)), shape=(nu, ni))
        mu_, ru_, mi_, ri_ = _csr(m), _csr(res), _csr(m.T), _csr(res.T)
        cu = torch.bincount(u, minlength=nu).float().clamp(min=1)
        ci = torch.bincount(i, minlength=ni).float().clamp(min=1)
        reg = torch.full((c.factors + 1,), c.reg)
        reg[-1] = reg_b

        def solve(mask: torch.Tensor, resid: torch.Tensor, f: torch.Tensor, fb: torch.Tensor,
                  cnt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # Features [f, 1] of the other side; target r - mu - (other side's bias).
            x = torch.cat([f, torch.ones(len(f), 1)], 1)                 # (n_other, k+1)
            kk = x.shape[1]
            outer = (x[:, :, None] * x[:, None, :]).reshape(len(f), kk * kk)
            gram = (mask @ outer).reshape(-1, kk, kk)                    # (n, k+1, k+1)
            rhs = resid @ x - mask @ (fb[:, None] * x)                   # (n, k+1)
            gram = gram + torch.diag_embed(reg[None, :] * cnt[:, None])
            sol = torch.linalg.solve(gram, rhs)
            return sol[:, :-1].contiguous(), sol[:, -1].contiguous()

        def sweep() -> None:
            self.p_, self.bu_ = solve(mu_, ru_, self.q_, self.bi_, cu)
            self.q_, self.bi_ = solve(mi_, ri_, self.p_, self.bu_, ci)

        return sweep

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        # mu + b_u + b_i + p_u . q_i; unknown users or items contribute zero terms.
        ku, u = known(users, len(self.bu_))
        ki, i = known(items, len(self.bi_))
        dot = (self.p_[u] * self.q_[i]).sum(1)                         # (N,)
        return (self.mu_ + torch.where(ku, self.bu_[u], 0.0) + torch.where(ki, self.bi_[i], 0.0)
                + torch.where(ku & ki, dot, 0.0))

    def _state(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu_, "bu": self.bu_, "bi": self.bi_, "p": self.p_, "q": self.q_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.mu_, self.bu_, self.bi_ = state["mu"], state["bu"], state["bi"]
        self.p_, self.q_ = state["p"], state["q"]
