"""Ranking metrics as pure functions of a hit matrix.

``hits`` has shape ``(B, K)``: ``hits[u, r]`` is 1 when the item ranked ``r`` (0-based) for
user ``u`` is relevant. ``n_rel`` has shape ``(B,)``: the number of relevant items of each
user. Each function returns one value per user, so significance tests can use them.
Definitions follow ranx / TREC (MAP divides by the number of relevant items).
"""

from __future__ import annotations

import torch

__all__ = ["recall_at_k", "precision_at_k", "hit_rate_at_k", "ndcg_at_k", "mrr_at_k", "map_at_k",
           "METRICS", "metric_curve"]


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def recall_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the relevant items found in the top ``k`` (= hit rate for one target)."""
    return hits[:, :k].sum(1) / n_rel.clamp(min=1)


def precision_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the top ``k`` that is relevant."""
    return hits[:, :k].sum(1) / k


def hit_rate_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """1 if any relevant item is in the top ``k``."""
    return (hits[:, :k].sum(1) > 0).double()


def ndcg_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Binary-relevance NDCG: DCG of the top ``k`` over the DCG of a perfect ranking."""
    disc = _discounts(k, hits.device)
    dcg = (hits[:, :k] * disc[: hits[:, :k].shape[1]]).sum(1)
    ideal = torch.cat([torch.zeros(1, device=hits.device, dtype=disc.dtype), disc.cumsum(0)])
    idcg = ideal[n_rel.clamp(max=k).long()]
    return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))


def mrr_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Reciprocal rank of the first relevant item in the top ``k`` (0 if none)."""
    h = hits[:, :k] > 0
    first = h.double().argmax(1)
    return torch.where(h.any(1), 1.0 / (first + 1).double(), torch.zeros_like(first).double())


def map_at_k(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Average precision over the top ``k``, divided by the number of relevant items."""
    h = hits[:, :k]
    ranks = torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype)
    prec = h.cumsum(1) / ranks
    return (prec * h).sum(1) / n_rel.clamp(min=1)


def metric_curve(name: str, hits: torch.Tensor, n_rel: torch.Tensor) -> torch.Tensor:
    """Mean over users of metric ``name`` at every cutoff ``1..K`` at once, shape ``(K,)``.

    Equal to ``[METRICS[name](hits, n_rel, c).mean() for c in 1..K]``; recall, precision,
    hit and NDCG come from running sums over the ranks (one pass), the others from that loop.
    """
    k = hits.shape[1]
    if k == 0:
        return torch.zeros(0, dtype=torch.float64)
    ranks = torch.arange(1, k + 1, device=hits.device)
    found = hits.cumsum(1)                                             # (U, K)
    if name == "recall":
        return (found / n_rel.clamp(min=1)[:, None]).mean(0)
    if name == "precision":
        return (found / ranks).mean(0)
    if name == "hit":
        return (found > 0).double().mean(0)
    if name == "ndcg":
        disc = _discounts(k, hits.device)
        dcg = (hits * disc).cumsum(1)                                  # (U, K)
        ideal = torch.cat([torch.zeros(1, device=hits.device, dtype=disc.dtype),
                           disc.cumsum(0)])
        idcg = ideal[torch.minimum(n_rel.long()[:, None], ranks[None])]  # (U, K)
        return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12),
                           torch.zeros_like(dcg)).mean(0)
    return torch.stack([METRICS[name](hits, n_rel, c).mean() for c in range(1, k + 1)])


METRICS = {
    "recall": recall_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k, "map": map_at_k,
    "precision": precision_at_k, "hit": hit_rate_at_k,
}
"""Metric name -> function; results are keyed ``"<name>@<k>"``."""
