"""Synthetic clustered item vectors for tokenizer tests."""

from __future__ import annotations

import numpy as np


def clustered(n_clusters: int = 6, per: int = 40, dim: int = 16, spread: float = 0.05,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_clusters * per`` points around well-separated centres, and their cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 3.0
    labels = np.repeat(np.arange(n_clusters), per)
    x = centres[labels] + rng.normal(size=(len(labels), dim)) * spread
    return x.astype(np.float32), labels
