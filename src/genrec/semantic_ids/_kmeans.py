"""Vectorised k-means in torch (k-means++ seeding, Lloyd iterations, empty-cluster repair)."""

from __future__ import annotations

import torch

__all__ = ["kmeans", "nearest", "sq_dist"]


def sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(n, k)`` between rows of ``x`` and ``c``."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(1)[None]
    return d.clamp_(min=0.0)


def nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest row of ``c`` for every row of ``x`` (chunked over ``x``)."""
    return torch.cat([sq_dist(part, c).argmin(1) for part in x.split(chunk)]) if len(x) else (
        torch.zeros(0, dtype=torch.long, device=x.device))


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability ~ squared distance."""
    n = len(x)
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    closest = sq_dist(x, x[first : first + 1])[:, 0]                 # (n,)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point already is a centre: duplicates are all that is left
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(closest / total, 1, generator=gen))
        centres.append(x[idx])
        closest = torch.minimum(closest, sq_dist(x, x[idx : idx + 1])[:, 0])
    return torch.stack(centres)                                        # (k, D)


def kmeans(x: torch.Tensor, k: int, *, n_iter: int = 50, seed: int = 0,
           tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` into ``k`` groups.

    Lloyd's algorithm from a k-means++ start. A cluster that empties is moved onto the point
    farthest from its own centre, which it then owns, so in practice every centre keeps a
    point while there are at least ``k`` distinct points. With fewer than ``k`` points every point is its own
    centre and the remaining centres repeat points (they are never nearest, so unused).

    Args:
        x: Points, shape ``(n, D)``, float.
        k: Number of clusters.
        n_iter: Most Lloyd iterations.
        seed: Seed of the k-means++ draw.
        tol: Stop when no centre moves by more than this (squared distance).

    Returns:
        ``(centroids (k, D), labels (n,))``.
    """
    x = x.float()
    n = len(x)
    gen = torch.Generator().manual_seed(seed)
    if n <= k:
        idx = torch.arange(k) % max(n, 1)
        centres = x[idx] if n else torch.zeros(k, x.shape[1])
        return centres.clone(), torch.arange(n)
    centres = _kmeanspp(x, k, gen)
    labels = nearest(x, centres)
    for _ in range(n_iter):
        counts = torch.bincount(labels, minlength=k)                   # (k,)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)      # (k, D)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            own = ((x - new[labels]) ** 2).sum(1)                     # (n,) distance to centre
            far = torch.topk(own, len(empty)).indices
            new[empty] = x[far]
        moved = ((new - centres) ** 2).sum(1).max()
        centres = new
        labels = nearest(x, centres)
        if moved <= tol and not len(empty):
            break
    return centres, labels
