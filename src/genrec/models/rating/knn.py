"""Item-kNN with baseline (Koren 2010, section 2.2; Surprise's ``KNNBaseline``, item-based,
``pearson_baseline`` similarity).

``r_ui ~ b_ui + sum_{j in N^k_i(u)} s_ij (r_uj - b_uj) / sum_j s_ij`` where ``b_ui = mu + b_u
+ b_i`` (ALS baseline), ``N^k_i(u)`` are the ``k`` items rated by ``u`` most similar to ``i``
(only positive similarities count), and ``s_ij`` is the Pearson correlation of the baseline
residuals over the users who rated both, shrunk by ``(n_ij - 1) / (n_ij - 1 + shrinkage)``.

Vectorised: the similarities are three sparse products (``Z^T Z``, ``(Z o Z)^T M``,
``M^T M``) held as one dense ``(I, I)`` float32 matrix (like EASE: fine up to a few ten
thousand items); prediction takes a ``top-k`` over each chunk of pairs at once.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from genrec.data.interactions import Interactions
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.base import RatingModel, known, rating_triples
from genrec.models.rating.baseline import fit_biases

__all__ = ["KNNBaseline", "KNNBaselineConfig"]


class KNNBaselineConfig(ModelConfig):
    """Item-based kNN on baseline residuals (Surprise ``KNNBaseline`` defaults)."""

    kind: Literal["knn_baseline"] = "knn_baseline"
    k: int = Field(40, ge=1)
    """Neighbours used per prediction (among the items the user rated)."""
    min_k: int = Field(1, ge=1)
    """Fewer usable neighbours than this: predict the baseline alone."""
    shrinkage: float = Field(100.0, ge=0)
    """Shrinkage of the Pearson-baseline similarity towards 0 for few common raters."""
    reg_u: float = Field(15.0, ge=0)
    """Shrinkage of the baseline user biases."""
    reg_i: float = Field(10.0, ge=0)
    """Shrinkage of the baseline item biases."""
    bias_epochs: int = Field(10, ge=1)
    """ALS passes of the baseline."""
    user_based: bool = False
    """Neighbours are users (who rated the item) instead of items (rated by the user); the
    same algorithm on the transposed rating matrix."""
    chunk: int = Field(2048, ge=1)
    """Pairs per prediction chunk (memory: ``chunk x I`` floats, three times)."""


class KNNBaseline(RatingModel[KNNBaselineConfig]):
    """Item-kNN with a baseline predictor."""

    config_cls = KNNBaselineConfig

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        c = self.config
        u, i, r = rating_triples(train)
        nu, ni = train.n_users, train.n_items
        reg_u, reg_i = c.reg_u, c.reg_i
        if c.user_based:  # rows are items from here on: bu_ holds item biases, sim_ users'
            u, i, nu, ni, reg_u, reg_i = i, u, ni, nu, reg_i, reg_u
        mu, self.bu_, self.bi_ = fit_biases(u, i, r, nu, ni, reg_u, reg_i, c.bias_epochs)
        self.mu_ = torch.tensor([mu], dtype=torch.float32)
        resid = (r - (mu + self.bu_[u] + self.bi_[i])).numpy().astype(np.float64)
        un, inn = u.numpy(), i.numpy()
        z = sp.csr_matrix((resid, (un, inn)), shape=(nu, ni))              # (U, I)
        m = sp.csr_matrix((np.ones(len(un)), (un, inn)), shape=(nu, ni))   # (U, I)
        num = (z.T @ z).toarray()                                          # (I, I)
        sq = (z.multiply(z).T @ m).toarray()           # sq[i, j] = sum_{u rated i, j} z_ui^2
        common = (m.T @ m).toarray()                                       # (I, I)
        den = np.sqrt(sq * sq.T)
        sim = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        shrink = np.maximum(common - 1, 0) / (np.maximum(common - 1, 0) + c.shrinkage)
        sim = sim * (shrink if c.shrinkage > 0 else (common > 1))
        self.sim_ = torch.from_numpy(sim.astype(np.float32))
        self.indptr_ = torch.from_numpy(z.indptr.astype(np.int64))
        self.indices_ = torch.from_numpy(z.indices.astype(np.int64))
        self.resid_ = torch.from_numpy(z.data.astype(np.float32))

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.user_based:
            users, items = items, users
        ku, u = known(users, len(self.bu_))
        ki, i = known(items, len(self.bi_))
        base = self.mu_ + torch.where(ku, self.bu_[u], 0.0) + torch.where(ki, self.bi_[i], 0.0)
        ni = len(self.bi_)
        z = sp.csr_matrix((self.resid_.numpy(), self.indices_.numpy(), self.indptr_.numpy()),
                          shape=(len(self.bu_), ni))
        out = []
        for s in range(0, len(u), c.chunk):
            uu, ii = u[s:s + c.chunk], i[s:s + c.chunk]
            rows = z[uu.numpy()]
            zd = torch.from_numpy(rows.toarray().astype(np.float32))        # (C, I)
            rated = torch.zeros_like(zd, dtype=torch.bool)
            rr = np.repeat(np.arange(len(uu)), np.diff(rows.indptr))
            rated[torch.from_numpy(rr), torch.from_numpy(rows.indices.astype(np.int64))] = True
            rated &= (ku[s:s + c.chunk] & ki[s:s + c.chunk])[:, None]
            sims = self.sim_[ii].masked_fill(~rated, -float("inf"))         # (C, I)
            vals, idx = sims.topk(min(c.k, ni), dim=1)                      # (C, k)
            use = vals > 0
            w = torch.where(use, vals, 0.0)
            num = (w * zd.gather(1, idx)).sum(1)
            den = w.sum(1)
            enough = (use.sum(1) >= c.min_k) & (den > 0)
            out.append(torch.where(enough, num / den.clamp(min=1e-12), 0.0))
        adj = torch.cat(out) if out else torch.zeros(0)
        return base + adj

    def _state(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu_, "bu": self.bu_, "bi": self.bi_, "sim": self.sim_,
                "indptr": self.indptr_, "indices": self.indices_, "resid": self.resid_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.mu_, self.bu_, self.bi_ = state["mu"], state["bu"], state["bi"]
        self.sim_, self.indptr_ = state["sim"], state["indptr"]
        self.indices_, self.resid_ = state["indices"], state["resid"]
