"""Item-based k-nearest-neighbours with shrunk cosine similarity (Sarwar et al., 2001).

``sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)``; each item keeps its ``k``
most similar items; a user's score for item ``j`` sums the similarities of ``j``'s
neighbours that are in the user's history.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender

__all__ = ["ItemKNNConfig", "ItemKNN"]


class ItemKNNConfig(ModelConfig):
    """ItemKNN hyperparameters."""

    kind: Literal["itemknn"] = "itemknn"
    k: int = Field(100, ge=1)
    """Neighbours kept per item."""
    shrink: float = Field(10.0, ge=0)
    """Added to the cosine denominator; damps similarities supported by few users."""
    chunk_size: int = Field(2048, ge=1)
    """Items per chunk when selecting neighbours (bounds memory to chunk x n_items)."""


class ItemKNN(Recommender[ItemKNNConfig]):
    """Item-item collaborative filtering with a sparse top-k similarity matrix."""

    config_cls = ItemKNNConfig

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        x = train.to_csr()                                          # (U, I)
        co = (x.T @ x).tocsr().astype(np.float32)                   # (I, I) co-occurrence
        norms = np.sqrt(co.diagonal())
        n = co.shape[0]
        k = min(self.config.k, n - 1) if n > 1 else 1
        rows, cols, vals = [], [], []
        for lo in range(0, n, self.config.chunk_size):
            hi = min(lo + self.config.chunk_size, n)
            block = torch.from_numpy(co[lo:hi].toarray())             # (C, I)
            denom = torch.from_numpy(np.outer(norms[lo:hi], norms)) + self.config.shrink
            sim = block / denom.clamp(min=1e-12).float()
            sim[torch.arange(hi - lo), torch.arange(lo, hi)] = 0.0  # no self-similarity
            top = torch.topk(sim, k, dim=1)
            keep = top.values > 0
            rows.append(np.repeat(np.arange(lo, hi), keep.sum(1).numpy()))
            cols.append(top.indices[keep].numpy())
            vals.append(top.values[keep].numpy())
        # Row j holds j's neighbours i; scoring needs W[i, j], i.e. the transpose.
        nbrs = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n, n), dtype=np.float32)
        self.similarity_ = nbrs.T.tocsr()                           # (I, I) sparse

    def _score(self, histories: Histories) -> torch.Tensor:
        return torch.from_numpy((histories.to_csr() @ self.similarity_).toarray())  # (B, I)

    def _state(self) -> dict[str, torch.Tensor]:
        s = self.similarity_
        return {"indptr": torch.from_numpy(s.indptr.astype(np.int64)),
                "indices": torch.from_numpy(s.indices.astype(np.int64)),
                "data": torch.from_numpy(s.data)}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        n = self.n_items_
        self.similarity_ = sp.csr_matrix(
            (state["data"].numpy(), state["indices"].numpy(), state["indptr"].numpy()), shape=(n, n))
