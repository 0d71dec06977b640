"""Batched evaluation: score a chunk of users, mask, top-k, compare with the targets.

No per-user Python loop: each chunk is a handful of tensor operations, and at most one
``(chunk, n_items)`` block exists at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

import numpy as np
import torch
from rich.progress import track

from genrec.data.interactions import EvalSet, Histories
from genrec.evaluation.metrics import METRICS
from genrec.evaluation.protocol import Protocol
from genrec.models.ranking import rank

__all__ = ["EvalResult", "evaluate", "sample_users", "Scorer"]

_log = logging.getLogger(__name__)


class Scorer(TypingProtocol):
    """Anything with the model ``score`` method."""

    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor: ...


@dataclass
class EvalResult:
    """Per-user metrics of one model on one evaluation set.

    Attributes:
        users: Dense ids of the evaluated users, shape ``(U,)``.
        per_user: ``"ndcg@10"`` -> values per user, shape ``(U,)``.
        seconds: Wall time of the evaluation.
        top_items: The top-``max(cutoffs)`` items per user, shape ``(U, K)``; ``-1`` where
            fewer than ``K`` candidates remain (seen or non-sampled items are never listed).
    """

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    seconds: float = 0.0
    top_items: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.int64))

    def summary(self) -> dict[str, float]:
        """Mean of every metric over users."""
        return {k: float(v.mean()) if len(v) else 0.0 for k, v in self.per_user.items()}


def _sample_negatives(forbidden: torch.Tensor, n: int, weights: torch.Tensor | None,
                      gen: torch.Generator) -> torch.Tensor:
    """Per row, ``n`` distinct items outside ``forbidden`` (uniform, or by ``weights``).

    Gumbel top-k: sampling without replacement, vectorised over the whole chunk.
    """
    u = torch.rand(forbidden.shape, generator=gen, device=forbidden.device).clamp_(1e-12, 1.0)
    keys = -torch.log(-torch.log(u))
    if weights is not None:
        keys = keys + torch.log(weights.clamp(min=1e-12))
    keys[forbidden] = float("-inf")
    top = torch.topk(keys, min(n, forbidden.shape[1]), dim=1)
    # Rows with fewer than n allowed items: the surplus picks are forbidden ones; drop them.
    return torch.where(torch.isfinite(top.values), top.indices, -1)


def sample_users(data: EvalSet, protocol: Protocol) -> EvalSet:
    """The protocol's ``eval_users`` users of ``data``, drawn with its seed (kept in their
    order); ``data`` itself when every user is to be evaluated."""
    n = protocol.eval_users
    if n is None or n >= len(data):
        return data
    # Its own stream: the sample depends on the seed and the set's size only, not on the
    # model, so every model of a run is evaluated on the same users.
    rows = np.sort(np.random.default_rng([protocol.seed, 7, len(data)])
                   .choice(len(data), n, replace=False))
    return data.take(rows)


def evaluate(model: Scorer, data: EvalSet, protocol: Protocol, *,
             item_popularity: np.ndarray | None = None, batch_size: int = 2048,
             keep_top_items: bool = False, progress: bool = False) -> EvalResult:
    """Evaluate ``model`` on ``data`` under ``protocol``.

    Args:
        model: Anything with ``score(histories) -> (B, n_items)``.
        data: Histories and targets.
        protocol: Candidates, seen-item exclusion, cutoffs, metrics, history length, seed.
        item_popularity: Training counts per item (popularity-sampled negatives only).
        batch_size: Users per chunk.
        keep_top_items: Also return each user's top-K list.
        progress: Show a progress bar.

    Returns:
        Per-user metrics (of the protocol's sampled users when ``protocol.eval_users`` is set).

    Memory: at most one ``(batch_size, n_items)`` score block (plus a boolean target mask of
    that shape, and the model's own per-chunk working set) exists at a time, whatever the
    number of users.
    """
    start = time.perf_counter()
    data = sample_users(data, protocol)
    kmax = max(protocol.cutoffs)
    n_items = data.histories.n_items
    gen = torch.Generator().manual_seed(protocol.seed)
    weights = None
    if protocol.candidates == "sampled" and protocol.negative_sampling == "popularity":
        if item_popularity is None:
            raise ValueError("popularity-sampled negatives need item_popularity")
        weights = torch.as_tensor(item_popularity, dtype=torch.float32)
    chunks: dict[str, list[torch.Tensor]] = {
        f"{m}@{k}": [] for m in protocol.metrics for k in protocol.cutoffs}
    tops: list[np.ndarray] = []
    bounds = range(0, len(data), batch_size)
    if progress:
        bounds = track(bounds, description="evaluating", total=len(bounds), transient=True)
    with torch.no_grad():
        for lo in bounds:
            part = data.slice(lo, min(lo + batch_size, len(data)))
            hist = part.histories
            scores = model.score(hist.truncate(protocol.max_history_length)).float()  # (B, I)
            dev = scores.device
            b = len(part)
            rows = torch.from_numpy(np.repeat(np.arange(b), np.diff(part.target_indptr))).to(dev)
            target = torch.zeros((b, n_items), dtype=torch.bool, device=dev)       # (B, I)
            target[rows, torch.from_numpy(part.target_items).to(dev)] = True
            allow = None
            if protocol.candidates == "sampled":
                forbidden = target.clone()
                h_rows = np.repeat(np.arange(b), hist.lengths)
                forbidden[torch.from_numpy(h_rows).to(dev), torch.from_numpy(hist.items).to(dev)] = True
                neg = _sample_negatives(forbidden.cpu(), protocol.n_negatives,
                                        weights, gen).to(dev)                     # (B, N)
                allow = target.clone()
                valid = neg >= 0
                allow[torch.arange(b, device=dev).repeat_interleave(valid.sum(1)), neg[valid]] = True
            # A target that is also in the history cannot be recommended; it stays a target.
            top_items, _ = rank(scores, hist, kmax, exclude_seen=protocol.exclude_seen,
                                allow=allow)                                   # (B, K)
            hits = target.gather(1, top_items.clamp(min=0)).double()               # (B, K)
            hits[top_items < 0] = 0.0
            n_rel = torch.from_numpy(np.diff(part.target_indptr)).to(dev)
            for m in protocol.metrics:
                for c in protocol.cutoffs:
                    chunks[f"{m}@{c}"].append(METRICS[m](hits, n_rel, c).cpu())
            if keep_top_items:  # masked (-inf) positions are not recommendations: -1
                tops.append(top_items.cpu().numpy())
    per_user = {name: torch.cat(v).numpy() if v else np.zeros(0) for name, v in chunks.items()}
    seconds = time.perf_counter() - start
    _log.info("evaluated %d users in %.2fs", len(data), seconds)
    top_items = np.concatenate(tops) if tops else np.empty((0, 0), dtype=np.int64)
    return EvalResult(data.histories.users, per_user, seconds, top_items)
