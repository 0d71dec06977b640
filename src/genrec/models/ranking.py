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
    """A boolean mask broadcastable to ``like`` ``(B, I)``, on its device.

    Raises:
        ValueError: If ``mask`` is not boolean, or not of shape ``(I,)`` or ``(B, I)`` (an
            array of item ids is not a mask).
    """
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=like.device)
    if m.dtype != torch.bool or tuple(m.shape) not in ((like.shape[1],), tuple(like.shape)):
        raise ValueError(f"block/allow must be a boolean mask of shape ({like.shape[1]},) or "
                         f"{tuple(like.shape)}, got dtype {m.dtype} and shape {tuple(m.shape)} "
                         "(for item ids, set those entries of a boolean mask)")
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
    # preferred popular items, and look better than chance. Equal scores are ranked in a
    # fixed pseudo-random order of the items instead. Only rows with a tie among their
    # k + 1 best scores can rank differently, so the others keep the plain top-k.
    n_items = scores.shape[1]
    k = min(k, n_items)
    top = torch.topk(scores, min(k + 1, n_items), dim=1)
    values, items = top.values[:, :k], top.indices[:, :k]
    head = top.values
    tied = ((head[:, 1:] == head[:, :-1]) & torch.isfinite(head[:, 1:])).any(dim=1)
    if k and bool(tied.any()):
        if bool(tied.all()):  # Pop, ItemKNN: every row; no copy of the block
            items, values = _rank_tied(scores, items, values, k)
        else:
            rows = tied.nonzero().squeeze(1)
            values, items = values.clone(), items.clone()
            items[rows], values[rows] = _rank_tied(scores.index_select(0, rows), items[rows],
                                                  values[rows], k)
    items = torch.where(torch.isfinite(values), items, -1)
    return items, values


def _rank_tied(scores: torch.Tensor, top_items: torch.Tensor, top_values: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items of rows with ties, ties in the fixed order of :func:`_tie_order`.

    The items scoring above the k-th best score ``t`` are all in ``top_items``; the rest of
    the k are the items scoring exactly ``t`` that come first in the tie order, found with one
    comparison and one top-k over the tie positions (no copy of the permuted block). The k
    winners are then sorted by score, then tie position.
    """
    pos = _tie_position(scores.shape[1], scores.device)
    threshold = top_values[:, -1:]
    at = torch.where(scores == threshold, pos, pos.new_tensor(scores.shape[1]))
    first = torch.topk(at, k, dim=1, largest=False)
    above = top_values > threshold
    cand_items = torch.cat([top_items, first.indices], dim=1)
    valid = torch.cat([above, first.values < scores.shape[1]], dim=1)
    cand_values = torch.cat([top_values, threshold.expand(-1, k)], dim=1)
    cand_values = cand_values.masked_fill(~valid, _NEG)
    cand_pos = torch.where(valid, pos[cand_items], scores.shape[1])
    by_pos = torch.sort(cand_pos, dim=1, stable=True).indices
    by_value = torch.sort(cand_values.gather(1, by_pos), dim=1, descending=True, stable=True)
    order = by_pos.gather(1, by_value.indices[:, :k])
    return cand_items.gather(1, order), by_value.values[:, :k]


_TIE_SEED = 20240229
"""Seed of the tie order (fixed: every model, run and seed breaks ties the same way)."""


@functools.lru_cache(maxsize=8)
def _tie_order(n_items: int, device: torch.device) -> torch.Tensor:
    """A fixed pseudo-random permutation of ``n_items`` item ids: the order ties are ranked in."""
    g = torch.Generator().manual_seed(_TIE_SEED)
    return torch.randperm(n_items, generator=g).to(device)


@functools.lru_cache(maxsize=8)
def _tie_position(n_items: int, device: torch.device) -> torch.Tensor:
    """Each item's place in :func:`_tie_order` (int32; ``n_items`` marks "not tied")."""
    perm = _tie_order(n_items, device)
    pos = torch.empty(n_items, dtype=torch.int32, device=device)
    pos[perm] = torch.arange(n_items, dtype=torch.int32, device=device)
    return pos
