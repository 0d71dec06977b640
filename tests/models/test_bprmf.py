"""BPR-MF: the contract, the negative sampler, learning, cold users and exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext
from genrec.models.bprmf import (
    BPRMF,
    FactorTrainConfig,
    embedding_l2,
    positive_keys,
    sample_negatives,
)
from genrec.testing import RecommenderContract, tiny_dataset

TINY_TRAIN = {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}



class TestBPRMF(RecommenderContract):
    model_cls = BPRMF
    params = {"dim": 8, "train": FactorTrainConfig(**TINY_TRAIN)}


def test_negatives_avoid_positives() -> None:
    # User 0 has seen items 0-3 of 5, user 1 items 1-4: each has one possible negative.
    x = sp.csr_matrix(np.array([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=np.float32))
    torch.manual_seed(0)
    neg = sample_negatives(torch.tensor([0, 1]), 20, 5, positive_keys(x), rounds=50)
    assert neg.shape == (2, 20)
    assert (neg[0] == 4).all() and (neg[1] == 0).all()


def test_negatives_follow_the_seed() -> None:
    keys = positive_keys(tiny_dataset().interactions.to_csr())
    users = torch.arange(7)
    draws = []
    for _ in range(2):
        torch.manual_seed(3)
        draws.append(sample_negatives(users, 4, 10, keys))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


def test_embedding_l2_is_half_mean_squared_norm() -> None:
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])            # squared norms 25, 0
    b = torch.ones(2, 3, 2)                              # squared norm 2 each
    torch.testing.assert_close(embedding_l2(a, b), torch.tensor((12.5 + 2.0) / 2))


def test_loss_decreases() -> None:
    model = BPRMF(dim=8, l2=0.0, train={"epochs": 30, "batch_size": 8, "lr": 0.05,
                                       "device": "cpu", "progress": False})
    model.fit(tiny_dataset().interactions)
    losses = [r["loss"] for r in model.train_result_.history]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_learns_the_training_matrix() -> None:
    train = tiny_dataset().interactions
    model = BPRMF(dim=8, l2=0.0, n_negatives=4,
                  train={"epochs": 60, "batch_size": 26, "lr": 0.05, "device": "cpu",
                         "progress": False}).fit(train)
    scores = model.score(train.histories()).numpy()
    x = train.to_csr().toarray().astype(bool)
    # Every user ranks their own items above the items they have not seen, on average.
    assert all(scores[u, x[u]].mean() > scores[u, ~x[u]].mean() for u in range(7))


def test_known_users_use_their_embedding_whatever_the_history() -> None:
    model = BPRMF(dim=8, train=TINY_TRAIN).fit(tiny_dataset().interactions)
    other = Histories.from_lists([[9], []], n_items=10, users=[2, 2])
    expected = model.user_emb_[2] @ model.item_emb_.T
    torch.testing.assert_close(model.score(other), expected.expand(2, -1))


def test_cold_users_fold_in_their_history() -> None:
    model = BPRMF(dim=8, train=TINY_TRAIN).fit(tiny_dataset().interactions)
    cold = Histories.from_lists([[1, 3], []], n_items=10, users=[7, 100])  # unknown ids
    scores = model.score(cold)
    expected = model.item_emb_[[1, 3]].mean(0) @ model.item_emb_.T
    torch.testing.assert_close(scores[0], expected)
    assert (scores[1] == 0).all()                       # empty history: no signal
    zeros = BPRMF(dim=8, cold_users="zeros", train=TINY_TRAIN).fit(tiny_dataset().interactions)
    assert (zeros.score(cold) == 0).all()


def test_untrained_user_id_is_cold() -> None:
    # An id inside the training id space with no training interaction has no learned vector.
    train = tiny_dataset().interactions
    model = BPRMF(dim=8, train=TINY_TRAIN)
    wider = Interactions(train.frame, train.n_users + 1, train.n_items)
    model.fit(wider)
    assert not bool(model.trained_users_[7])
    scores = model.score(Histories.from_lists([[2]], n_items=10, users=[7]))
    torch.testing.assert_close(scores[0], model.item_emb_[2] @ model.item_emb_.T)


def test_resume_draws_the_same_negatives(tmp_path: Path) -> None:
    train = tiny_dataset().interactions
    cfg = {"epochs": 4, "batch_size": 8, "device": "cpu", "progress": False, "patience": None}
    straight = BPRMF(dim=8, n_negatives=3, train=cfg).fit(train)
    ckpt = tmp_path / "ckpt"
    BPRMF(dim=8, n_negatives=3, train=cfg | {"epochs": 2}).fit(
        train, FitContext(checkpoint_dir=ckpt))
    resumed = BPRMF(dim=8, n_negatives=3, train=cfg).fit(
        train, FitContext(checkpoint_dir=ckpt, resume=True))
    assert len(resumed.train_result_.history) == 4
    hist = train.histories()
    torch.testing.assert_close(resumed.score(hist), straight.score(hist), rtol=0, atol=0)
