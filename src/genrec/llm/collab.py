"""Collaborative retrieval for LLM prompts (CFRAG-style: similar users, then their relevant items).

After CFRAG (Shi et al., SIGIR 2025, "Retrieval Augmented Generation with Collaborative
Filtering for Personalized Text Generation"): for a user, retrieve the users most similar to
them, then from those users' histories the items most relevant to the user's recent history,
and add them to the prompt as context. Here, over the training interactions only:

1. **Similar users**: cosine similarity of IDF-weighted binary history vectors (a rare shared
   item says more than a bestseller), one sparse product per batch of users; the user's own
   training row is never their own neighbour.
2. **Their items**: every item in the neighbours' *training* histories and not in the user's
   history gets the neighbour-similarity mass ``cf(i) = sum_v sim(u, v) [i in H_v]``, scaled
   by its relevance to the user's ``recent`` items, ``rel(i) = sum_j cos(i, j)`` (item-item
   cosine over the training matrix, normalised to ``[0, 1]`` per user):
   ``score(i) = cf(i) * (1 + relevance * rel(i))``. ``relevance=0`` is plain user-based CF.

``fit(train)`` indexes the training interactions; ``retrieve(histories)`` is batched and
vectorised (no per-user Python loop). Only the index's rows are ever read as neighbour
histories, so a user's held-out valid or test item can only appear in the context when a
neighbour has it in their *training* history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import NotFittedError

__all__ = ["CollabConfig", "CollabContext", "CollabRetriever"]


class CollabConfig(BaseModel):
    """Collaborative retrieval settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    neighbours: int = Field(20, ge=1)
    """Similar users retrieved per user."""
    items: int = Field(10, ge=1)
    """Context items returned per user."""
    recent: int = Field(10, ge=1)
    """Most recent history items the relevance of a neighbour's item is measured against."""
    relevance: float = Field(1.0, ge=0)
    """Weight of the relevance to the recent history (0: plain user-based CF)."""
    idf: bool = True
    """Weight shared items by ``log(n_users / df)`` in the user similarity."""
    batch_size: int = Field(512, ge=1)
    """Users scored per sparse product."""


@dataclass
class CollabContext:
    """What was retrieved for a batch of users (rows align with the query).

    Attributes:
        neighbours: Dense ids of the similar users, most similar first, ``(B, n)``; -1 pads.
        similarity: Their cosine similarity, ``(B, n)``; 0 pads.
        items: Context items, best first, ``(B, m)``; -1 pads.
        support: Number of neighbours who have each context item, ``(B, m)``.
    """

    neighbours: np.ndarray
    similarity: np.ndarray
    items: np.ndarray
    support: np.ndarray

    def row(self, r: int) -> list[int]:
        """Context items of row ``r`` (padding dropped)."""
        return [int(i) for i in self.items[r] if i >= 0]


def _normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ m)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest finite-positive scores per row, best first; -1 pads."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.full((scores.shape[0], 0), -1, dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    idx[np.take_along_axis(vals, order, axis=1) <= 0] = -1
    return idx


def _pick(nb: np.ndarray, weights: np.ndarray, n_users: int) -> sp.csr_matrix:
    """``(B, n_users)`` matrix holding ``weights`` at each row's neighbours (``nb``, -1 pads)."""
    valid = nb >= 0
    return sp.csr_matrix((weights[valid].astype(np.float32), nb[valid],
                          np.concatenate([[0], np.cumsum(valid.sum(1))])),
                         shape=(len(nb), n_users))


class CollabRetriever:
    """Similar users and their relevant items, from training interactions only.

    Args:
        config: Settings; defaults to :class:`CollabConfig`.
        **overrides: Fields that replace those of ``config``.
    """

    def __init__(self, config: CollabConfig | None = None, **overrides: Any) -> None:
        merged = (config or CollabConfig()).model_dump() | overrides
        self.config = CollabConfig.model_validate(merged)

    def fit(self, train: Interactions) -> Self:
        """Index the training interactions (the only histories neighbours are read from)."""
        x = train.to_csr().astype(np.float32)                          # (U, I) binary
        df = np.asarray(x.sum(axis=0)).ravel()
        n_users = max(int((np.diff(x.indptr) > 0).sum()), 1)
        w = (np.log(n_users / np.maximum(df, 1)) + 1.0 if self.config.idf
             else np.ones_like(df)).astype(np.float32)
        self.idf_ = w                                                  # (I,)
        self.train_ = x
        self.users_ = _normalize_rows(sp.csr_matrix(x @ sp.diags(w)))  # (U, I) unit rows
        col = np.sqrt(df)
        inv = np.divide(1.0, col, out=np.zeros_like(col), where=col > 0).astype(np.float32)
        self.items_ = sp.csr_matrix(x @ sp.diags(inv))                 # (U, I) unit item columns
        self.n_items_ = x.shape[1]
        self.n_users_ = x.shape[0]
        return self

    def _check(self) -> None:
        if not hasattr(self, "train_"):
            raise NotFittedError(type(self).__name__)

    def retrieve(self, histories: Histories) -> CollabContext:
        """Similar users and context items of every row of ``histories``.

        Args:
            histories: Users (dense ids; -1 for anonymous rows) and their histories, oldest
                first. A known user's own training row is excluded from their neighbours.

        Returns:
            The retrieved context.
        """
        self._check()
        cfg = self.config
        if histories.n_items != self.n_items_:
            raise ValueError(f"histories have {histories.n_items} items, the index "
                             f"{self.n_items_}")
        n, m, b = min(cfg.neighbours, self.n_users_), cfg.items, len(histories)
        out = CollabContext(np.full((b, n), -1, np.int64), np.zeros((b, n), np.float32),
                            np.full((b, m), -1, np.int64), np.zeros((b, m), np.int64))
        for lo in range(0, b, cfg.batch_size):
            hi = min(lo + cfg.batch_size, b)
            self._batch(histories.slice(lo, hi), out, lo)
        return out

    def _batch(self, h: Histories, out: CollabContext, lo: int) -> None:
        cfg = self.config
        seen = h.to_csr()                                              # (B, I) binary
        q = _normalize_rows(sp.csr_matrix(seen @ sp.diags(self.idf_)))
        sim = (q @ self.users_.T).toarray()                            # (B, U)
        rows = np.arange(len(h))
        own = (h.users >= 0) & (h.users < self.n_users_)  # users outside the index: none
        sim[rows[own], h.users[own]] = 0.0                             # never one's own row
        nb = _top(sim, out.neighbours.shape[1])                        # (B, n)
        valid = nb >= 0
        s = np.where(valid, np.take_along_axis(sim, np.maximum(nb, 0), axis=1), 0.0)
        out.neighbours[lo: lo + len(h)] = nb
        out.similarity[lo: lo + len(h)] = s
        cf = (_pick(nb, s, self.n_users_) @ self.train_).toarray()    # (B, I)
        count = (_pick(nb, np.ones_like(s), self.n_users_) @ self.train_).toarray()
        if cfg.relevance > 0:
            recent = h.truncate(cfg.recent).to_csr()                   # (B, I)
            rel = ((recent @ self.items_.T) @ self.items_).toarray()   # (B, I) sum of cosines
            peak = rel.max(axis=1, keepdims=True)
            rel = np.divide(rel, peak, out=np.zeros_like(rel), where=peak > 0)
            cf = cf * (1.0 + cfg.relevance * rel)
        seen = seen.tocoo()
        cf[seen.row, seen.col] = 0.0                                   # never the user's own items
        top = _top(cf, out.items.shape[1])                             # (B, m)
        out.items[lo: lo + len(h)] = top
        out.support[lo: lo + len(h)] = np.where(
            top >= 0, np.take_along_axis(count, np.maximum(top, 0), axis=1), 0).astype(np.int64)

    def retrieve_one(self, history: Sequence[int], user: int = -1) -> list[int]:
        """Context items of one user (``user=-1``: anonymous, no row excluded)."""
        h = Histories.from_lists([[int(i) for i in history]], self.n_items_, users=[int(user)])
        return self.retrieve(h).row(0)

    def neighbour_support(self, histories: Histories, items: np.ndarray) -> np.ndarray:
        """How many of each user's neighbours have each of ``items`` (``(B, k)``, -1 = 0)."""
        nb = self.retrieve(histories).neighbours                      # (B, n), -1 pads
        count = sp.csr_matrix(_pick(nb, np.ones(nb.shape), self.n_users_) @ self.train_)
        out = np.zeros(items.shape, dtype=np.int64)
        r, c = np.nonzero(items >= 0)
        out[r, c] = np.asarray(count[r, items[r, c]]).ravel().astype(np.int64)
        return out
