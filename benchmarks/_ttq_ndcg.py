"""NDCG@K of one held-out item under full ranking, seen items excluded, in numpy only.

Shared by ``benchmarks/recbole_ttq.py`` (genrec's venv) and ``benchmarks/_recbole_ttq_side.py``
(RecBole's venv), so both sides of the time-to-quality benchmark score RecBole's model with
the definition of genrec's evaluator (``genrec.evaluation.evaluate`` with ``candidates: full``,
``exclude_seen: true``, one target per user): the target's rank is the number of unseen items
scored strictly higher than it; NDCG@K = 1 / log2(rank + 2) when rank < K, else 0; a target
that is also in the history cannot be recommended and scores 0. Ties, which genrec breaks by
``torch.topk`` order, are resolved in the target's favour here (they do not occur with float
scores of trained models; ``recbole_ttq.py`` checks the two agree on genrec's own scores).
Nothing but numpy is imported: the RecBole venv never imports genrec.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ndcg_single_target"]


def ndcg_single_target(scores: np.ndarray, targets: np.ndarray, seen_indptr: np.ndarray,
                       seen_items: np.ndarray, k: int = 10,
                       invalid: np.ndarray | None = None) -> np.ndarray:
    """Per-user NDCG@``k`` of one target item under full ranking with seen items excluded.

    Args:
        scores: ``(U, I)`` scores of every item for each user (any float dtype).
        targets: ``(U,)`` the held-out item of each user (column index into ``scores``).
        seen_indptr: ``(U + 1,)`` CSR row pointers into ``seen_items``.
        seen_items: Items each user has seen (the training history), concatenated.
        k: The cutoff.
        invalid: Columns that are never candidates (e.g. RecBole's padding item 0).

    Returns:
        ``(U,)`` float64 NDCG@``k`` per user.
    """
    s = np.array(scores, dtype=np.float64, copy=True)                      # (U, I)
    n = len(s)
    rows = np.repeat(np.arange(n), np.diff(seen_indptr))
    s[rows, seen_items] = -np.inf
    if invalid is not None:
        s[:, invalid] = -np.inf
    t = s[np.arange(n), targets]                                           # (U,)
    rank = (s > t[:, None]).sum(axis=1)                                    # (U,)
    ok = np.isfinite(t) & (rank < k)
    return np.where(ok, 1.0 / np.log2(rank + 2.0), 0.0)
