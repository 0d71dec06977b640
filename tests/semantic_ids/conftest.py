"""Synthetic clustered item vectors for tokenizer tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Small tensors gain nothing from intra-op threads; on a busy machine they cost 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clustered(n_clusters: int = 6, per: int = 40, dim: int = 16, spread: float = 0.05,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_clusters * per`` points around well-separated centres, and their cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 3.0
    labels = np.repeat(np.arange(n_clusters), per)
    x = centres[labels] + rng.normal(size=(len(labels), dim)) * spread
    return x.astype(np.float32), labels
