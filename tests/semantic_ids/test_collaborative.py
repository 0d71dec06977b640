"""Collaborative item vectors: shape, determinism, and co-consumed items lying close."""

from __future__ import annotations

import numpy as np
import polars as pl

from genrec.data.interactions import Dataset
from genrec.semantic_ids import collaborative_item_vectors
from genrec.testing import random_dataset, tiny_dataset


def test_shape_cap_and_determinism() -> None:
    train = tiny_dataset().interactions
    v = collaborative_item_vectors(train, dim=64)
    assert v.shape == (10, 6) and v.dtype == np.float32       # capped at min(7, 10) - 1
    np.testing.assert_array_equal(collaborative_item_vectors(train, dim=64), v)
    big = random_dataset(n_users=300, n_items=80, seed=1).interactions
    np.testing.assert_array_equal(collaborative_item_vectors(big, 8),
                                  collaborative_item_vectors(big, 8))


def test_items_bought_together_are_neighbours() -> None:
    # Two communities: users 0-19 take items a0-a4, users 20-39 take items b0-b4.
    users = [f"u{u}" for u in range(40) for _ in range(5)]
    items = [f"{'a' if u < 20 else 'b'}{(u + t) % 5}" for u in range(40) for t in range(5)]
    ds = Dataset.from_raw("two", pl.DataFrame({"user": users, "item": items}))
    v = collaborative_item_vectors(ds.interactions, dim=4)
    group = np.array([raw[0] for raw in ds.item_map.raw.to_list()])
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = sims[group[:, None] == group[None]].mean()
    other = sims[group[:, None] != group[None]].mean()
    assert same > other + 0.5
