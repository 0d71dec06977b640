"""Beyond-accuracy metrics over recommendation lists.

Every function takes ``top_items`` of shape ``(U, K')`` as returned by
``evaluate(..., keep_top_items=True)``: item ids ranked best first, ``-1`` where a list is
shorter than ``K'``. ``k`` truncates the lists (``k <= K'``). Per-user metrics return one value
per user (so they can be bootstrapped and tested like accuracy metrics); list-set metrics
return one float.

Coverage, Gini, average popularity and tail percentage follow RecBole
(``recbole/evaluator/metrics.py``: ``ItemCoverage``, ``GiniIndex``, ``AveragePopularity``,
``TailPercentage``) and agree with it on full lists; with ``-1`` padding the padded slots are
simply not recommendations.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from genrec._arrays import member_of

__all__ = [
    "catalog_coverage", "exposure_counts", "gini", "gini_index", "lorenz_curve",
    "average_popularity", "tail_items", "tail_percentage", "long_tail_share", "novelty",
    "category_matrix", "intra_list_diversity", "personalization", "serendipity", "hit_matrix",
]

_log = logging.getLogger(__name__)

_PAIR_BUDGET = 1 << 24
"""Floats per chunk in the pairwise-diversity kernels (about 64 MB in float32)."""


def _lists(top_items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns and their validity mask."""
    top = np.asarray(top_items)
    if top.ndim != 2:
        raise ValueError(f"top_items must be 2-D (users, K), got shape {top.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if top.shape[0] and k > top.shape[1]:
        raise ValueError(f"k={k} exceeds the list length {top.shape[1]}")
    top = top[:, :k]
    return top, top >= 0


def _per_user_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the valid slots of each row; 0 for an empty list."""
    n = valid.sum(1)
    total = np.where(valid, values, 0.0).sum(1)
    return np.divide(total, n, out=np.zeros(len(n)), where=n > 0)


def catalog_coverage(top_items: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-``k`` list.

    RecBole ``ItemCoverage@K``: ``|union of lists| / n_items``. (RecBole's ``n_items``
    counts its padding id as well; pass ``n_items + 1`` to reproduce its numbers exactly.)

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        n_items: Catalogue size.
        k: Cutoff.

    Returns:
        Coverage in ``[0, 1]``.
    """
    top, valid = _lists(top_items, k)
    return float(len(np.unique(top[valid]))) / n_items


def exposure_counts(top_items: np.ndarray, n_items: int, k: int, *,
                    weighting: str = "uniform") -> np.ndarray:
    """How often each item is recommended in the top ``k``.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        n_items: Catalogue size.
        k: Cutoff.
        weighting: ``"uniform"`` counts every slot once; ``"log"`` weights rank ``r``
            (0-based) by ``1 / log2(r + 2)``, the usual position-based exposure model.

    Returns:
        Exposure per item, shape ``(n_items,)``, float64.

    Raises:
        ValueError: For an unknown weighting.
    """
    top, valid = _lists(top_items, k)
    if weighting == "uniform":
        w = np.ones(top.shape[1])
    elif weighting == "log":
        w = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    else:
        raise ValueError(f"weighting must be 'uniform' or 'log', got {weighting!r}")
    weights = np.broadcast_to(w, top.shape)[valid]
    return np.bincount(top[valid], weights=weights, minlength=n_items).astype(np.float64)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of a non-negative distribution (0 = equal, towards 1 = concentrated).

    ``sum_i (2i - n - 1) x_(i) / (n sum x)`` with ``x`` sorted ascending, ``i = 1..n``.

    Args:
        values: Non-negative values, e.g. exposure per item (zeros included).

    Returns:
        The coefficient; 0 for an all-zero input.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def gini_index(top_items: np.ndarray, n_items: int, k: int) -> float:
    """Gini index of item exposure in the top-``k`` lists (RecBole ``GiniIndex@K``).

    RecBole sorts the counts of the recommended items ascending, gives them ranks
    ``n_items - m + 1 .. n_items`` (never-recommended items have count 0 and the lower ranks)
    and divides by the number of recommendations and ``n_items``: this is :func:`gini` of
    the exposure vector over the whole catalogue.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        n_items: Catalogue size.
        k: Cutoff.

    Returns:
        Gini index in ``[0, 1)``; lower means exposure is spread more evenly.
    """
    return gini(exposure_counts(top_items, n_items, k))


def lorenz_curve(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve: cumulative share of items (ascending) vs cumulative share of the total.

    Args:
        values: Non-negative values per item, e.g. exposure counts.

    Returns:
        ``(x, y)``, both of length ``n + 1`` and starting at 0.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    total = x.sum()
    y = np.concatenate([[0.0], np.cumsum(x) / total if total > 0 else np.zeros(len(x))])
    return np.linspace(0.0, 1.0, len(x) + 1), y


def average_popularity(top_items: np.ndarray, item_counts: np.ndarray, k: int) -> np.ndarray:
    """Mean training popularity of the recommended items, per user.

    RecBole ``AveragePopularity@K`` is the mean over users of
    ``sum_{i in R_u} phi(i) / |R_u|`` with ``phi(i)`` the item's number of training
    interactions.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        item_counts: Training interactions per item, shape ``(n_items,)``.
        k: Cutoff.

    Returns:
        Per-user average popularity, shape ``(U,)``.
    """
    top, valid = _lists(top_items, k)
    counts = np.asarray(item_counts, dtype=np.float64)
    return _per_user_mean(counts[np.where(valid, top, 0)], valid)


def tail_items(item_counts: np.ndarray, tail_ratio: float = 0.1, *,
               include_unseen: bool = False) -> np.ndarray:
    """Long-tail item mask, following RecBole ``TailPercentage``.

    With ``tail_ratio > 1`` the tail is every item with at most ``tail_ratio`` training
    interactions. With ``0 < tail_ratio <= 1`` it is the ``max(int(n * tail_ratio), 1)`` least
    popular items, ties broken by item id (RecBole sorts by ``(count, id)``).

    RecBole only knows the items of its training counter, so by default items without
    training interactions are never tail and do not count in ``n``. ``include_unseen=True``
    ranks the whole catalogue instead (the APLT convention: the tail is everything that is
    not head).

    Args:
        item_counts: Training interactions per item, shape ``(n_items,)``.
        tail_ratio: Share of items (``<= 1``) or count threshold (``> 1``).
        include_unseen: Whether items with zero training interactions take part.

    Returns:
        Boolean mask, shape ``(n_items,)``.

    Raises:
        ValueError: For a non-positive ``tail_ratio``.
    """
    if tail_ratio <= 0:
        raise ValueError(f"tail_ratio must be positive, got {tail_ratio}")
    counts = np.asarray(item_counts)
    pool = np.ones(len(counts), dtype=bool) if include_unseen else counts > 0
    mask = np.zeros(len(counts), dtype=bool)
    if tail_ratio > 1:
        mask[pool & (counts <= tail_ratio)] = True
        return mask
    ids = np.flatnonzero(pool)
    order = ids[np.lexsort((ids, counts[ids]))]
    cut = max(int(len(ids) * tail_ratio), 1)
    mask[order[:cut]] = True
    return mask


def tail_percentage(top_items: np.ndarray, item_counts: np.ndarray, k: int,
                    tail_ratio: float = 0.1, *, include_unseen: bool = False) -> np.ndarray:
    """Share of long-tail items in each user's top ``k`` (RecBole ``TailPercentage@K``).

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        item_counts: Training interactions per item.
        k: Cutoff.
        tail_ratio: See :func:`tail_items` (RecBole's default is 0.1).
        include_unseen: See :func:`tail_items`.

    Returns:
        Per-user tail share, shape ``(U,)``.
    """
    top, valid = _lists(top_items, k)
    tail = tail_items(item_counts, tail_ratio, include_unseen=include_unseen)
    return _per_user_mean(tail[np.where(valid, top, 0)].astype(np.float64), valid)


def long_tail_share(top_items: np.ndarray, item_counts: np.ndarray, k: int,
                    head_ratio: float = 0.2) -> np.ndarray:
    """APLT: share of each list outside the head (the top ``head_ratio`` items by popularity).

    This is :func:`tail_percentage` with ``tail_ratio = 1 - head_ratio`` over the whole
    catalogue, so items never seen in training are tail.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        item_counts: Training interactions per item.
        k: Cutoff.
        head_ratio: Share of the catalogue that is head (0.2 by default).

    Returns:
        Per-user long-tail share, shape ``(U,)``.

    Raises:
        ValueError: If ``head_ratio`` is not in ``(0, 1)``.
    """
    if not 0 < head_ratio < 1:
        raise ValueError(f"head_ratio must be in (0, 1), got {head_ratio}")
    return tail_percentage(top_items, item_counts, k, 1.0 - head_ratio, include_unseen=True)


def novelty(top_items: np.ndarray, item_counts: np.ndarray, k: int, n_users: int) -> np.ndarray:
    """Mean self-information ``-log2 p(i)`` of the recommended items, per user.

    ``p(i) = count_i / n_users`` is the share of users who interacted with the item in
    training (Zhou et al., 2010). Items never seen in training count as seen once, the
    largest finite self-information.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        item_counts: Training users (or interactions, for deduplicated data) per item.
        k: Cutoff.
        n_users: Number of training users.

    Returns:
        Per-user novelty in bits, shape ``(U,)``.
    """
    top, valid = _lists(top_items, k)
    p = np.clip(np.maximum(np.asarray(item_counts, dtype=np.float64), 1.0) / n_users, None, 1.0)
    info = -np.log2(p)
    return _per_user_mean(info[np.where(valid, top, 0)], valid)


def category_matrix(items: pl.DataFrame, column: str, n_items: int
                    ) -> tuple[sp.csr_matrix, list[str]]:
    """Multi-hot item x category matrix from a feature column.

    Args:
        items: Item feature table with a dense ``item`` column.
        column: A ``list[str]`` column (``categories``, ``genres``) or a string column.
        n_items: Catalogue size (items missing from the table get no category).

    Returns:
        ``(matrix, vocabulary)``: a binary CSR matrix of shape ``(n_items, C)`` and the
        category names in column order.

    Raises:
        ValueError: If the column is absent.
    """
    if column not in items.columns:
        raise ValueError(f"item table has no column {column!r}; columns: {items.columns}")
    col = items[column]
    frame = items.select("item", col.alias("c"))
    if not isinstance(col.dtype, pl.List):
        frame = frame.with_columns(pl.concat_list(pl.col("c")))
    pairs = frame.explode("c").drop_nulls("c").unique(maintain_order=True)
    vocab = pairs["c"].unique(maintain_order=True).to_list()
    codes = pairs["c"].replace_strict(vocab, list(range(len(vocab))), return_dtype=pl.Int64)
    m = sp.csr_matrix((np.ones(pairs.height, dtype=np.float32),
                       (pairs["item"].to_numpy(), codes.to_numpy())),
                      shape=(n_items, len(vocab)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m, vocab


def _pair_mean(sim: torch.Tensor, valid: torch.Tensor, pair_ok: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Mean of ``sim`` over pairs ``i < j`` of valid slots, per row; 0 for fewer than 2."""
    k = sim.shape[1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    pairs = valid[:, :, None] & valid[:, None, :] & upper                   # (B, K, K)
    if pair_ok is not None:
        pairs &= pair_ok
    n = pairs.sum((1, 2))
    total = torch.where(pairs, sim, torch.zeros_like(sim)).sum((1, 2))
    return torch.where(n > 0, total / n.clamp(min=1), torch.zeros_like(total))


def intra_list_diversity(top_items: np.ndarray, k: int, *,
                         categories: sp.spmatrix | None = None,
                         embeddings: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Mean pairwise dissimilarity of the items within each list.

    Give exactly one of ``categories`` (Jaccard distance of category sets) or
    ``embeddings`` (cosine distance of item vectors, e.g. text embeddings). Pairs of items
    that both have no category are skipped; a list with fewer than two comparable items
    scores 0.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        k: Cutoff.
        categories: Binary item x category matrix (see :func:`category_matrix`).
        embeddings: Item vectors, shape ``(n_items, D)``.

    Returns:
        Per-user diversity in ``[0, 1]`` (Jaccard) or ``[0, 2]`` (cosine), shape ``(U,)``.

    Raises:
        ValueError: Unless exactly one of ``categories`` and ``embeddings`` is given.
    """
    if (categories is None) == (embeddings is None):
        raise ValueError("give exactly one of categories and embeddings")
    top, valid = _lists(top_items, k)
    out = np.zeros(len(top))
    cats = feats = None
    if categories is not None:
        cats = sp.csr_matrix(categories, dtype=np.float32)
        width = max(1, cats.shape[1])
    else:
        feats = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        feats = torch.nn.functional.normalize(feats, dim=1)
        width = max(1, feats.shape[1])
    step = max(1, _PAIR_BUDGET // (k * width))
    for lo in range(0, len(top), step):
        idx = np.where(valid[lo:lo + step], top[lo:lo + step], 0)
        ok = torch.from_numpy(valid[lo:lo + step])
        if cats is not None:
            # Densify only this chunk's rows: the full item x category matrix may be large.
            x = torch.from_numpy(cats[idx.ravel()].toarray()).view(*idx.shape, -1)  # (B, K, C)
        else:
            x = feats[torch.from_numpy(idx)]                                # (B, K, D)
        dot = torch.bmm(x, x.transpose(1, 2))                               # (B, K, K)
        if cats is not None:
            size = x.sum(2)                                                 # (B, K)
            union = size[:, :, None] + size[:, None, :] - dot
            dist = torch.where(union > 0, 1.0 - dot / union.clamp(min=1e-12), 0.0)
            out[lo:lo + step] = _pair_mean(dist, ok, union > 0).numpy()
        else:
            out[lo:lo + step] = _pair_mean(1.0 - dot, ok).numpy()
    return out


def personalization(top_items: np.ndarray, k: int) -> float:
    """``1 - mean pairwise overlap`` of the users' top-``k`` lists.

    The overlap of two lists is ``|L_u & L_v| / k``. Summed over all ordered pairs it equals
    ``sum_i c_i (c_i - 1)`` where ``c_i`` is the number of lists holding item ``i``, so the
    exact mean over all ``U (U - 1) / 2`` pairs costs ``O(U k)``: no pair sampling needed.
    Lists are assumed free of repeats (true for ranked top-k lists).

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        k: Cutoff.

    Returns:
        Personalisation in ``[0, 1]``: 1 when no two users share an item, 0 when every
        user gets the same list. 0 for fewer than two users.
    """
    top, valid = _lists(top_items, k)
    n_users = len(top)
    if n_users < 2:
        return 0.0
    c = np.bincount(top[valid]).astype(np.float64)
    shared = float(np.sum(c * (c - 1)))
    return 1.0 - shared / (n_users * (n_users - 1) * k)


def _row_membership(top: np.ndarray, valid: np.ndarray, indptr: np.ndarray,
                    items: np.ndarray) -> np.ndarray:
    """``out[u, r]``: whether ``top[u, r]`` is among row ``u``'s items of a CSR item set."""
    n = int(max(top.max(initial=0), items.max(initial=0))) + 1
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    keys = rows * n + items
    probe = np.arange(len(top), dtype=np.int64)[:, None] * n + np.where(valid, top, 0)
    return member_of(probe, keys) & valid


def hit_matrix(top_items: np.ndarray, target_indptr: np.ndarray, target_items: np.ndarray,
               k: int) -> np.ndarray:
    """``hits[u, r]``: whether user ``u``'s item at rank ``r`` is relevant.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        target_indptr: Row pointers of the relevant items, shape ``(U + 1,)``.
        target_items: Relevant items, concatenated.
        k: Cutoff.

    Returns:
        Boolean array, shape ``(U, k)`` (the input of the ranking metrics).
    """
    top, valid = _lists(top_items, k)
    return _row_membership(top, valid, target_indptr, target_items)


def serendipity(top_items: np.ndarray, baseline_top: np.ndarray, target_indptr: np.ndarray,
                target_items: np.ndarray, k: int) -> np.ndarray:
    """Share of each top-``k`` list that is relevant and not in the baseline's top ``k``.

    The baseline is usually most-popular, so serendipitous items are relevant items an
    obvious recommender would not have shown (Ge et al., 2010, with ``1/k`` normalisation).

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        baseline_top: The baseline's lists for the same users, shape ``(U, K'')``.
        target_indptr: Row pointers of the relevant items, shape ``(U + 1,)``.
        target_items: Relevant items, concatenated.
        k: Cutoff.

    Returns:
        Per-user serendipity in ``[0, 1]``, shape ``(U,)``.

    Raises:
        ValueError: If the two list sets cover different numbers of users.
    """
    top, valid = _lists(top_items, k)
    base, base_valid = _lists(baseline_top, k)
    if len(top) != len(base) or len(top) != len(target_indptr) - 1:
        raise ValueError("top_items, baseline_top and the targets must cover the same users")
    relevant = _row_membership(top, valid, target_indptr, target_items)
    b_lengths = base_valid.sum(1)
    b_indptr = np.concatenate([[0], np.cumsum(b_lengths)])
    obvious = _row_membership(top, valid, b_indptr, base[base_valid])
    return (relevant & ~obvious).sum(1) / k
