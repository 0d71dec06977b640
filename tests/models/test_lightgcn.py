"""LightGCN: the contract, the normalised adjacency, propagation, scoring and learning."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from genrec.data.interactions import Histories
from genrec.models.bprmf import FactorTrainConfig, positive_keys
from genrec.models.lightgcn import LightGCN, LightGCNNet, normalized_adjacency
from genrec.testing import RecommenderContract, tiny_dataset

TINY_TRAIN = {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}



class TestLightGCN(RecommenderContract):
    model_cls = LightGCN
    params = {"dim": 8, "n_layers": 2, "train": FactorTrainConfig(**TINY_TRAIN)}


def dense_adjacency(x: np.ndarray) -> np.ndarray:
    """``D^-1/2 A D^-1/2`` computed densely, the textbook way."""
    n_users, n_items = x.shape
    a = np.zeros((n_users + n_items, n_users + n_items))
    a[:n_users, n_users:] = x
    a[n_users:, :n_users] = x.T
    deg = a.sum(1)
    d = np.diag(np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0))
    return d @ a @ d


def test_normalized_adjacency_matches_dense() -> None:
    x = tiny_dataset().interactions.to_csr()
    adj = normalized_adjacency(x)
    assert adj.shape == (17, 17) and adj.is_coalesced()
    np.testing.assert_allclose(adj.to_dense().numpy(), dense_adjacency(x.toarray()), atol=1e-7)
    # Symmetric, zero on the user-user and item-item blocks.
    dense = adj.to_dense()
    torch.testing.assert_close(dense, dense.T)
    assert (dense[:7, :7] == 0).all() and (dense[7:, 7:] == 0).all()


def test_isolated_nodes_have_empty_rows() -> None:
    wider = np.zeros((8, 10), dtype=np.float32)         # user 7 and item 9 isolated
    wider[:7, :9] = tiny_dataset().interactions.to_csr().toarray()[:, :9]
    x = sp.csr_matrix(wider)
    dense = normalized_adjacency(x).to_dense().numpy()
    assert np.isfinite(dense).all()
    assert (dense[7] == 0).all() and (dense[8 + 9] == 0).all()
    np.testing.assert_allclose(dense, dense_adjacency(x.toarray()), atol=1e-7)


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_propagation_equals_dense_matmul(n_layers: int) -> None:
    x = tiny_dataset().interactions.to_csr()
    torch.manual_seed(0)
    net = LightGCNNet(7, 10, 4, n_layers, 1, 0.0, normalized_adjacency(x), positive_keys(x))
    a = torch.from_numpy(dense_adjacency(x.toarray())).float()
    e = torch.cat([net.user_emb.weight, net.item_emb.weight]).detach()
    layers = [e]
    for _ in range(n_layers):
        layers.append(a @ layers[-1])
    expected = torch.stack(layers).mean(0)
    users, items = net.propagate()
    torch.testing.assert_close(torch.cat([users, items]).detach(), expected, rtol=1e-5,
                               atol=1e-6)
    # The gradient through the (symmetric) sparse product equals the dense one.
    weights = torch.randn(17, 4)
    (torch.cat([users, items]) * weights).sum().backward()
    e.requires_grad_()
    dense = [e]
    for _ in range(n_layers):
        dense.append(a @ dense[-1])
    (torch.stack(dense).mean(0) * weights).sum().backward()
    torch.testing.assert_close(net.user_emb.weight.grad, e.grad[:7], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.item_emb.weight.grad, e.grad[7:], rtol=1e-5, atol=1e-6)


def test_scores_are_final_embedding_dot_products() -> None:
    train = tiny_dataset().interactions
    model = LightGCN(dim=8, train=TINY_TRAIN).fit(train)
    with torch.no_grad():
        users, items = model.net_.propagate()
    torch.testing.assert_close(model.score(train.histories()), users @ items.T)


def test_cold_users_fold_in_final_item_embeddings() -> None:
    model = LightGCN(dim=8, train=TINY_TRAIN).fit(tiny_dataset().interactions)
    scores = model.score(Histories.from_lists([[0, 6]], n_items=10, users=[50]))
    torch.testing.assert_close(scores[0], model.item_emb_[[0, 6]].mean(0) @ model.item_emb_.T)


def test_loss_decreases_and_ranks_training_items_first() -> None:
    train = tiny_dataset().interactions
    model = LightGCN(dim=8, n_layers=2, l2=0.0, n_negatives=4,
                     train={"epochs": 60, "batch_size": 26, "lr": 0.05, "device": "cpu",
                            "progress": False}).fit(train)
    losses = [r["loss"] for r in model.train_result_.history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    scores = model.score(train.histories()).numpy()
    x = train.to_csr().toarray().astype(bool)
    assert np.mean([scores[u, x[u]].mean() > scores[u, ~x[u]].mean() for u in range(7)]) >= 6 / 7
