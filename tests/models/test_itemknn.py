"""ItemKNN: the contract plus the shrunk-cosine formula checked by hand and with numpy."""

from __future__ import annotations

import math

import numpy as np
import torch

from genrec.data.interactions import Histories
from genrec.models.itemknn import ItemKNN
from genrec.testing import RecommenderContract, random_dataset, tiny_dataset


class TestItemKNN(RecommenderContract):
    model_cls = ItemKNN
    params = {"k": 3, "shrink": 1.0, "chunk_size": 4}  # several chunks on 10 items


def _dense_similarity(x: np.ndarray, shrink: float) -> np.ndarray:
    """Shrunk cosine of every item pair, float64, zero diagonal."""
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    sim = co / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(sim, 0.0)
    return sim


def test_similarity_of_a_pair_by_hand() -> None:
    # Item 1 is in users {0, 1, 4, 5}, item 2 in {0, 1, 2, 5}: 3 common users.
    # sim(1, 2) = 3 / (sqrt(4) * sqrt(4) + 1) = 0.6, and 1 and 2 are each other's best match.
    model = ItemKNN(k=3, shrink=1.0).fit(tiny_dataset().interactions)
    sim = model.similarity_.toarray()
    assert sim[1, 2] == sim[2, 1]
    assert math.isclose(sim[1, 2], 3 / (2 * 2 + 1), rel_tol=1e-6)
    # Item 6 is in users {2, 6}, item 4 in {1, 3, 6}: sim = 1 / (sqrt(2) sqrt(3) + 1).
    assert math.isclose(sim[4, 6], 1 / (math.sqrt(6) + 1), rel_tol=1e-6)
    assert np.all(np.diag(sim) == 0)


def test_kept_neighbours_are_the_top_k_of_the_formula() -> None:
    train = random_dataset(n_users=30, n_items=25, seed=3).interactions
    k, shrink = 4, 2.5
    model = ItemKNN(k=k, shrink=shrink, chunk_size=7).fit(train)
    dense = _dense_similarity(train.to_csr().toarray().astype(np.float64), shrink)
    # similarity_[i, j] is i's weight as a neighbour of j: column j holds j's neighbours.
    w = model.similarity_.toarray().T  # row j: neighbours of j
    for j in range(train.n_items):
        kept = np.flatnonzero(w[j])
        assert len(kept) == min(k, np.count_nonzero(dense[j]))
        np.testing.assert_allclose(w[j, kept], dense[j, kept], rtol=1e-5)
        # The kept values are the k largest (robust to ties at the boundary).
        np.testing.assert_allclose(np.sort(w[j, kept])[::-1], np.sort(dense[j])[::-1][:len(kept)],
                                   rtol=1e-5)
        assert j not in kept


def test_score_sums_similarities_of_history_items() -> None:
    train = tiny_dataset().interactions
    model = ItemKNN(k=3, shrink=1.0).fit(train)
    w = model.similarity_.toarray()
    scores = model.score(Histories.from_lists([[1, 3], [2, 2, 9]], n_items=10))
    torch.testing.assert_close(scores[0], torch.from_numpy(w[1] + w[3]))
    # A repeated history item counts once (binary user vector).
    torch.testing.assert_close(scores[1], torch.from_numpy(w[2] + w[9]))


def test_k_larger_than_catalogue_keeps_every_positive_similarity() -> None:
    train = tiny_dataset().interactions
    model = ItemKNN(k=100, shrink=0.0).fit(train)
    dense = _dense_similarity(train.to_csr().toarray().astype(np.float64), 0.0)
    np.testing.assert_allclose(model.similarity_.toarray(), dense.T, rtol=1e-6)
