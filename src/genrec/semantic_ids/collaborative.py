"""Item vectors from interactions alone, for semantic IDs of catalogues without text."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from genrec.data.interactions import Interactions

__all__ = ["collaborative_item_vectors"]


def collaborative_item_vectors(train: Interactions, dim: int = 64) -> np.ndarray:
    """Item factors of a truncated SVD of the cosine-normalised user-item matrix.

    Each item column is scaled to unit norm (so popular items do not dominate), and item
    ``i``'s vector is row ``i`` of ``V * sqrt(S)``. Deterministic: a dense SVD for small
    matrices, ARPACK with a fixed start vector otherwise.

    Args:
        train: Interactions.
        dim: Vector width; capped at ``min(n_users, n_items) - 1``.

    Returns:
        ``(n_items, dim')`` float32 array (items never seen get zero vectors).
    """
    x = train.to_csr().astype(np.float64)                             # (U, I) binary
    norms = np.sqrt(np.asarray(x.sum(0)).ravel())
    x = x @ sp.diags(1.0 / np.maximum(norms, 1.0))
    k = max(1, min(dim, min(x.shape) - 1))
    if x.shape[0] * x.shape[1] <= 4_000_000 or k >= min(x.shape) - 1:
        _, s, vt = np.linalg.svd(x.toarray(), full_matrices=False)
        s, vt = s[:k], vt[:k]
    else:
        v0 = np.full(min(x.shape), 1.0 / np.sqrt(min(x.shape)))
        _, s, vt = svds(x, k=k, v0=v0)
        order = np.argsort(-s)
        s, vt = s[order], vt[order]
    # Fix each component's sign (SVD leaves it free) so refits give identical vectors.
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    return np.ascontiguousarray((vt.T * np.sqrt(s)[None]).astype(np.float32))
