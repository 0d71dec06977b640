"""Scoring of the sequential models: nets that claim padding invariance really have it, and
the length-sorted, trimmed scoring path returns exactly what one fully padded pass does."""

from __future__ import annotations

import pytest
import torch

from genrec.models.gru4rec import GRU4Rec
from genrec.models.hstu import HSTU
from genrec.models.sasrec import SASRec
from genrec.testing import random_dataset
from genrec.training import TrainConfig

TRAIN = TrainConfig(epochs=1, batch_size=16, device="cpu", progress=False)
MODELS = [(SASRec, {"dim": 16, "n_heads": 2, "max_len": 12}),
          (SASRec, {"dim": 16, "n_heads": 2, "max_len": 12, "n_layers": 3}),
          (HSTU, {"dim": 16, "n_heads": 2, "max_len": 12}),
          (GRU4Rec, {"dim": 16, "max_len": 12})]


@pytest.fixture(scope="module")
def data():
    return random_dataset(n_users=90, n_items=40, min_len=1, max_len=20, seed=4)


@pytest.mark.parametrize(("cls", "params"), MODELS)
def test_trimmed_length_sorted_scoring_equals_one_padded_pass(cls, params, data) -> None:
    torch.manual_seed(0)
    model = cls(**params, train=TRAIN).fit(data.interactions)
    hist = data.interactions.histories()
    net = model.net_.eval()
    assert net.padding_invariant
    with torch.no_grad():
        full = net.score(hist.padded(params["max_len"]))               # every row padded to L
        hidden, _ = net(hist.padded(params["max_len"]))                 # plain forward
    model.score_batch = 7                                              # several ragged batches
    trimmed = model.score(hist)
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)
    # the last-position-only path of SASRec equals the full forward's last position
    table = net.item_table() if hasattr(net, "item_table") else net.item_emb.weight
    if cls is SASRec:
        torch.testing.assert_close(full, hidden[:, -1] @ table[1:].T, rtol=1e-5, atol=1e-5)
