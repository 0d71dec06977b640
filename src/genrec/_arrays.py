"""Array helpers shared by every floor."""

from __future__ import annotations

import numpy as np

__all__ = ["member_of"]


def member_of(probe: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin(probe, keys)`` for integer arrays, by one sort of ``keys`` and a binary search.

    NumPy 2.4's ``np.isin`` and ``np.unique`` on large int64 arrays of wide range (the
    ``row * n_items + item`` keys of per-user item sets) are one to two orders of magnitude
    slower than a sort (``benchmarks/eval_hotpaths.py``); this gives the same answer.

    Args:
        probe: Integers of any shape.
        keys: Integers, any order, repeats allowed.

    Returns:
        Booleans of ``probe``'s shape.
    """
    probe = np.asarray(probe)
    keys = np.sort(np.asarray(keys).ravel())
    if keys.size == 0:
        return np.zeros(probe.shape, dtype=bool)
    at = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
    return keys[at] == probe
