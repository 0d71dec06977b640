"""GRU4Rec: the contract, left padding, causality, and learning."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from genrec.data.interactions import Dataset, Histories
from genrec.models.gru4rec import GRU4Rec, GRU4RecNet
from genrec.testing import RecommenderContract, tiny_dataset
from genrec.training import TrainConfig


class TestGRU4Rec(RecommenderContract):
    model_cls = GRU4Rec
    params = {"dim": 16, "max_len": 6,
              "train": TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False)}


def net(n_layers: int = 1) -> GRU4RecNet:
    torch.manual_seed(0)
    return GRU4RecNet(n_items=10, dim=8, n_layers=n_layers, dropout=0.0, loss="ce",
                      n_negatives=4, logq=torch.zeros(10)).eval()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_gru_starts_at_the_first_real_item(n_layers: int) -> None:
    model = net(n_layers)
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7]])
    hidden, _ = model(seq)
    for row, items in enumerate(seq):
        real = items[items > 0]
        expected, _ = model.gru(model.item_emb(real)[None])        # no padding at all
        torch.testing.assert_close(hidden[row, len(items) - len(real):], expected[0])
        assert (hidden[row, : len(items) - len(real)] == 0).all()


def test_states_are_causal() -> None:
    seq = torch.tensor([[0, 2, 3, 4, 5]])
    changed = torch.tensor([[0, 2, 3, 4, 9]])
    torch.testing.assert_close(net()(seq)[0][:, :-1], net()(changed)[0][:, :-1])


@pytest.mark.parametrize("loss", ["sampled_softmax", "bce"])
def test_other_losses_train(loss: str) -> None:
    train = tiny_dataset().interactions
    model = GRU4Rec(dim=8, max_len=5, loss=loss, n_negatives=4,
                    train={"epochs": 2, "batch_size": 4, "device": "cpu", "progress": False})
    assert torch.isfinite(model.fit(train).score(train.histories())).all()


def test_learns_next_item_of_a_cycle() -> None:
    users = [f"u{u}" for u in range(24) for _ in range(6)]
    items = [f"i{(u + t) % 8}" for u in range(24) for t in range(6)]
    ds = Dataset.from_raw("cycle", pl.DataFrame({"user": users, "item": items}))
    model = GRU4Rec(dim=16, max_len=6, dropout=0.0,
                    train={"epochs": 60, "batch_size": 24, "lr": 2e-2, "device": "cpu",
                           "progress": False})
    model.fit(ds.interactions)
    raw = [[f"i{i}" for i in (2, 3, 4)], [f"i{i}" for i in (6, 7)]]
    hist = Histories.from_lists([list(ds.item_map.to_index(h)) for h in raw], ds.n_items)
    top = model.recommend(hist, k=1, exclude_seen=False).items[:, 0]
    assert ds.item_map.to_raw(top) == ["i5", "i0"]


def test_an_empty_history_scores_the_same_alone_or_in_a_batch() -> None:
    # An empty row once read back the padding's zero state when batched with longer rows but
    # the GRU's one-step output when scored alone, so cold users depended on the batch.
    m = GRU4Rec(dim=8, max_len=5, train={"epochs": 1, "device": "cpu", "progress": False}
                ).fit(tiny_dataset().interactions)
    h = Histories.from_lists([[], [0, 1, 2]], n_items=10)
    both, alone = m.score(h), m.score(h.slice(0, 1))
    assert torch.allclose(both[0], alone[0], atol=1e-6)
    many = m.score(Histories.from_lists([[]] * 300 + [[0, 1, 2]], n_items=10))
    assert torch.allclose(many[0], many[299], atol=1e-6) and many[0].abs().sum() > 0
