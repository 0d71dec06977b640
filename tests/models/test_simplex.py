"""SimpleX: the contract, the CCL loss, the user tower, cold users and learning."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genrec.data.interactions import Histories
from genrec.models.bprmf import FactorTrainConfig
from genrec.models.simplex import SimpleX, cosine_contrastive_loss, history_mean
from genrec.testing import RecommenderContract, tiny_dataset

TINY_TRAIN = {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}



class TestSimpleX(RecommenderContract):
    model_cls = SimpleX
    params = {"dim": 8, "n_negatives": 4, "train": FactorTrainConfig(**TINY_TRAIN)}


def test_ccl_on_hand_inputs() -> None:
    pos = torch.tensor([0.5, 1.0])
    neg = torch.tensor([[0.9, 0.1], [0.95, 0.85]])
    # Row 0: (1 - 0.5) + 2 * mean(0.1, 0) = 0.6; row 1: 0 + 2 * mean(0.15, 0.05) = 0.2.
    loss = cosine_contrastive_loss(pos, neg, margin=0.8, negative_weight=2.0)
    torch.testing.assert_close(loss, torch.tensor(0.4))
    # Negatives under the margin and a perfect positive cost nothing.
    zero = cosine_contrastive_loss(torch.ones(3), torch.full((3, 5), 0.3), 0.5, 10.0)
    assert zero == 0


def test_history_mean_leaves_the_target_out() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    hist = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 0, 0]])  # items 0, 1 (shifted); empty
    torch.testing.assert_close(history_mean(hist, emb),
                               torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]]))
    left = history_mean(hist, emb, leave_out=torch.tensor([1, 2, 0]))
    # Row 0 drops item 1; row 1's item 2 is not in its history; row 2 stays empty.
    torch.testing.assert_close(left, torch.tensor([[1.0, 0.0], [0.5, 1.0], [0.0, 0.0]]))


def test_scores_are_cosines_of_the_user_tower() -> None:
    train = tiny_dataset().interactions
    model = SimpleX(dim=8, n_negatives=4, gate=0.3, train=TINY_TRAIN).fit(train)
    hist = Histories.from_lists([[1, 2, 3]], n_items=10, users=[4])
    mean = model.item_emb_[[1, 2, 3]].mean(0)
    tower = 0.3 * model.user_emb_[4] + 0.7 * model.proj_ @ mean
    expected = F.normalize(tower, dim=0) @ F.normalize(model.item_emb_, dim=1).T
    torch.testing.assert_close(model.score(hist)[0], expected)
    assert model.score(train.histories()).abs().max() <= 1.0 + 1e-6


def test_cold_users_get_the_history_tower_alone() -> None:
    model = SimpleX(dim=8, n_negatives=4, train=TINY_TRAIN).fit(tiny_dataset().interactions)
    cold = Histories.from_lists([[5, 8], []], n_items=10, users=[99, 100])
    scores = model.score(cold)
    tower = model.proj_ @ model.item_emb_[[5, 8]].mean(0)
    torch.testing.assert_close(scores[0], F.normalize(tower, dim=0)
                               @ F.normalize(model.item_emb_, dim=1).T)
    assert (scores[1] == 0).all()
    zeros = SimpleX(dim=8, n_negatives=4, cold_users="zeros",
                    train=TINY_TRAIN).fit(tiny_dataset().interactions)
    assert (zeros.score(cold) == 0).all()


def test_loss_decreases() -> None:
    model = SimpleX(dim=8, n_negatives=8, dropout=0.0, l2=0.0,
                    train={"epochs": 40, "batch_size": 26, "lr": 0.02, "device": "cpu",
                           "progress": False}).fit(tiny_dataset().interactions)
    losses = [r["loss"] for r in model.train_result_.history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
