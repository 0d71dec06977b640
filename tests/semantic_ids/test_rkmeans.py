"""k-means and RQ-KMeans: cluster recovery, residual levels, determinism, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.semantic_ids import (
    NotFittedError,
    RQKMeansConfig,
    RQKMeansTokenizer,
    RQVAEConfig,
    build_tokenizer,
)
from genrec.semantic_ids._kmeans import kmeans

from .conftest import clustered


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when labelings ``a`` and ``b`` group the points identically (up to renaming)."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_kmeans_recovers_separated_clusters() -> None:
    x, labels = clustered()
    centres, assign = kmeans(torch.from_numpy(x), 6, seed=1)
    assert centres.shape == (6, 16)
    assert same_partition(assign.numpy(), labels)


def test_kmeans_with_fewer_points_than_clusters() -> None:
    x = torch.arange(6, dtype=torch.float32).view(3, 2)
    centres, assign = kmeans(x, 5)
    np.testing.assert_array_equal(assign.numpy(), [0, 1, 2])
    torch.testing.assert_close(centres[:3], x)


def test_kmeans_repairs_empty_clusters() -> None:
    # Two tight groups but k=4: every centre still ends up owning at least one point.
    x = torch.tensor([[0.0, 0.0], [0.0, 0.1], [0.1, 0.0], [9.0, 9.0], [9.0, 9.1], [9.1, 9.0]])
    _, assign = kmeans(x, 4, seed=0)
    assert len(torch.unique(assign)) == 4


def test_rqkmeans_first_level_recovers_clusters_and_levels_refine() -> None:
    x, labels = clustered()
    tok = RQKMeansTokenizer(n_levels=3, codebook_size=6, seed=0).fit(x)
    assert tok.codebooks_.shape == (3, 6, 16)
    codes = tok.transform(x)
    assert codes.shape == (len(x), 3) and codes.dtype == np.int64
    assert same_partition(codes[:, 0], labels)
    # Each level explains more of what the previous ones left.
    errors = []
    for levels in (1, 2, 3):
        part = RQKMeansTokenizer(n_levels=levels, codebook_size=6, seed=0).fit(x)
        errors.append(float(((part.reconstruct(x) - x) ** 2).sum(1).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_rqkmeans_transform_of_new_points_and_determinism() -> None:
    x, labels = clustered()
    tok = RQKMeansTokenizer(n_levels=2, codebook_size=6).fit(x)
    near = x[::40] + 0.01  # one fresh point next to each cluster
    np.testing.assert_array_equal(tok.transform(near)[:, 0], tok.transform(x[::40])[:, 0])
    again = RQKMeansTokenizer(n_levels=2, codebook_size=6).fit(x)
    torch.testing.assert_close(again.codebooks_, tok.codebooks_, rtol=0, atol=0)
    other_seed = RQKMeansTokenizer(n_levels=2, codebook_size=6, seed=5).fit(x)
    assert same_partition(other_seed.transform(x)[:, 0], labels)


def test_state_round_trip_and_not_fitted() -> None:
    x, _ = clustered()
    with pytest.raises(NotFittedError):
        RQKMeansTokenizer().transform(x)
    tok = build_tokenizer(RQKMeansConfig(n_levels=2, codebook_size=4)).fit(x)
    assert isinstance(tok, RQKMeansTokenizer)
    back = RQKMeansTokenizer.from_state(tok.config, tok.state())
    np.testing.assert_array_equal(back.transform(x), tok.transform(x))
    assert "codebook_size=4" in repr(back)


def test_rqkmeans_sampled_fit_matches_full_fit_below_the_cap_and_codes_every_item() -> None:
    x, labels = clustered(per=200)
    cfg = {"n_levels": 2, "codebook_size": 6, "n_iter": 20, "seed": 3}
    full = RQKMeansTokenizer(RQKMeansConfig(**cfg, max_train_points=None)).fit(x)
    capped_above = RQKMeansTokenizer(RQKMeansConfig(**cfg, max_train_points=len(x))).fit(x)
    np.testing.assert_array_equal(full.transform(x), capped_above.transform(x))
    torch.testing.assert_close(full.codebooks_, capped_above.codebooks_)

    cap = len(x) // 4
    sampled = RQKMeansTokenizer(RQKMeansConfig(**cfg, max_train_points=cap)).fit(x)
    again = RQKMeansTokenizer(RQKMeansConfig(**cfg, max_train_points=cap)).fit(x)
    torch.testing.assert_close(sampled.codebooks_, again.codebooks_)   # seeded sample
    codes = sampled.transform(x)
    assert codes.shape == (len(x), 2)
    # Level 1 still recovers the separated clusters from a quarter of the items ...
    assert same_partition(codes[:, 0], labels)
    # ... and its centres are k-means of a sample, not of all items.
    assert not torch.allclose(sampled.codebooks_[1], full.codebooks_[1])


@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_transform_in_chunks_gives_the_codes_of_one_block(kind: str) -> None:
    """Coding ``chunk_size`` rows at a time (memory at 1M items) changes no code."""
    x, _ = clustered(per=50)
    extra = {"epochs": 3} if kind == "rqvae" else {"n_iter": 10}
    config = RQVAEConfig if kind == "rqvae" else RQKMeansConfig
    tok = build_tokenizer(config(n_levels=2, codebook_size=4, **extra)).fit(x)
    whole = tok.transform(x, chunk_size=len(x))
    for chunk in (1, 7, 64):
        np.testing.assert_array_equal(tok.transform(x, chunk_size=chunk), whole)
    assert tok.transform(x[:0]).shape == (0, 2)
