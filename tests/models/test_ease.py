"""EASE: the contract plus the closed form recomputed with numpy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.data.interactions import Histories
from genrec.models.ease import EASE
from genrec.testing import RecommenderContract, random_dataset, tiny_dataset


class TestEASE(RecommenderContract):
    model_cls = EASE
    params = {"l2": 2.0}


def _closed_form(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck (2019), eq. 8: ``B = I - P diagMat(1 / diag(P))`` with ``P = (X^T X + l2 I)^-1``."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("l2", [0.5, 2.0, 500.0])
def test_weights_equal_closed_form(l2: float) -> None:
    train = tiny_dataset().interactions
    model = EASE(l2=l2).fit(train)
    expected = _closed_form(train.to_csr().toarray().astype(np.float64), l2)
    assert model.weights_.dtype == torch.float32
    np.testing.assert_allclose(model.weights_.numpy(), expected, atol=1e-4, rtol=1e-4)
    assert np.all(np.diag(model.weights_.numpy()) == 0)


def test_weights_equal_closed_form_on_random_data() -> None:
    train = random_dataset(n_users=60, n_items=40, seed=5).interactions
    model = EASE(l2=10.0).fit(train)
    expected = _closed_form(train.to_csr().toarray().astype(np.float64), 10.0)
    np.testing.assert_allclose(model.weights_.numpy(), expected, atol=1e-4)


def test_scores_are_history_times_weights() -> None:
    train = tiny_dataset().interactions
    model = EASE(l2=2.0).fit(train)
    b = _closed_form(train.to_csr().toarray().astype(np.float64), 2.0)
    batch = Histories.from_lists([[0, 3], [], [5, 5, 8]], n_items=10)
    expected = np.stack([b[0] + b[3], np.zeros(10), b[5] + b[8]])
    np.testing.assert_allclose(model.score(batch).numpy(), expected, atol=1e-4)
