"""Score -> exclude seen -> block / allow -> top-k: written once, used everywhere.

:meth:`Recommender.recommend <genrec.models.base.Recommender.recommend>`, the evaluator,
the HTTP service and batch inference all rank through :func:`rank`, so a filter, a NaN guard
or a tie rule changes in one place for all of them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from genrec.data.interactions import Histories

__all__ = ["rank"]

_NEG = float("-inf")


def _mask(mask: torch.Tensor | np.ndarray | None, like: torch.Tensor) -> torch.Tensor | None:
    """A boolean mask broadcastable to ``like`` ``(B, I)``, on its device."""
    if mask is None:
        return None
    m = torch.as_tensor(mask, dtype=torch.bool, device=like.device)
    return m if m.dim() == 2 else m[None]


def rank(scores: torch.Tensor, histories: Histories | None, k: int, *,
         exclude_seen: bool = True, block: torch.Tensor | np.ndarray | None = None,
         allow: torch.Tensor | np.ndarray | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items of every row of ``scores``, best first.

    Args:
        scores: Scores ``(B, I)``, higher is better; modified in place (masked entries become
            ``-inf``). NaN and ``+inf`` never outrank a real score: they become ``-inf``.
        histories: The rows' users and histories (for ``exclude_seen``).
        k: Items per row (capped at ``I``).
        exclude_seen: Never return an item of the row's history.
        block: Items never returned: a boolean mask ``(I,)`` or ``(B, I)``.
        allow: If given, only these items may be returned: a boolean mask ``(I,)`` or ``(B, I)``.

    Returns:
        ``(items, values)``, each ``(B, min(k, I))``: item ids (``-1`` where fewer than ``k``
        items remain after masking) and their scores (``-inf`` there).
    """
    torch.nan_to_num_(scores, nan=_NEG, posinf=_NEG, neginf=_NEG)
    if exclude_seen and histories is not None and len(histories.items):
        histories.mask_seen(scores)
    if (b := _mask(block, scores)) is not None:
        scores.masked_fill_(b, _NEG)
    if (a := _mask(allow, scores)) is not None:
        scores.masked_fill_(~a, _NEG)
    # Ties: torch.topk settles them in an undocumented order that favours low item ids,
    # which are the popular items (ids follow first appearance), so a model scoring many
    # items alike (Pop, ItemKNN's zero tail, a constant model) would be ranked as if it
    # preferred popular items, and look better than chance. Ranking a fixed pseudo-random
    # permutation of the columns breaks ties in an order unrelated to the ids; untied scores
    # rank exactly as before.
    perm = _tie_order(scores.shape[1], scores.device)
    top = torch.topk(scores[:, perm], min(k, scores.shape[1]), dim=1)
    items = torch.where(torch.isfinite(top.values), perm[top.indices], -1)
    return items, top.values


_TIE_SEED = 20240229
"""Seed of the tie order (fixed: every model, run and seed breaks ties the same way)."""


@functools.lru_cache(maxsize=8)
def _tie_order(n_items: int, device: torch.device) -> torch.Tensor:
    """A fixed pseudo-random permutation of ``n_items`` item ids: the order ties are ranked in."""
    g = torch.Generator().manual_seed(_TIE_SEED)
    return torch.randperm(n_items, generator=g).to(device)
