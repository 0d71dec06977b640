"""HSTU: the contract, causality, pointwise attention by hand, relative buckets, learning."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from genrec.data.interactions import Dataset, Histories
from genrec.models.hstu import HSTU, HSTUConfig, HSTUNet, relative_buckets
from genrec.testing import RecommenderContract, tiny_dataset
from genrec.training import TrainConfig


class TestHSTU(RecommenderContract):
    model_cls = HSTU
    params: ClassVar[dict[str, Any]] = {"dim": 16, "max_len": 6, "n_heads": 2, "n_buckets": 4,
              "train": TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False)}


def net(n_layers: int = 2, temperature: float | None = None) -> HSTUNet:
    torch.manual_seed(0)
    return HSTUNet(n_items=10, max_len=6, dim=16, n_layers=n_layers, n_heads=2, dropout=0.0,
                   n_buckets=4, temperature=temperature, loss="ce", n_negatives=4,
                   logq=torch.zeros(10)).eval()


def test_defaults_are_the_papers_ml1m_model() -> None:
    cfg = HSTUConfig()
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.max_len, cfg.dropout, cfg.train.lr) == (
        50, 2, 1, 200, 0.2, 1e-3)


def test_attention_is_causal() -> None:
    model = net()
    seq = torch.tensor([[0, 0, 3, 5, 2, 7]])
    for t in range(2, 6):  # change the item at t: positions before t do not move
        changed = seq.clone()
        changed[0, t] = 9
        h1, _ = model(seq)
        h2, _ = model(changed)
        torch.testing.assert_close(h1[:, :t], h2[:, :t], rtol=0, atol=0)
        assert not torch.allclose(h1[:, t:], h2[:, t:])


def test_left_padding_is_ignored() -> None:
    model = net()
    padded, _ = model(torch.tensor([[0, 0, 0, 4, 1, 8]]))
    short, _ = model(torch.tensor([[4, 1, 8]]))           # same items, no padding
    torch.testing.assert_close(padded[:, -3:], short, rtol=1e-6, atol=1e-6)
    empty, _ = model(torch.zeros(2, 6, dtype=torch.long))  # no items at all: no NaN
    assert torch.isfinite(empty).all()


def test_one_layer_matches_a_hand_computed_forward() -> None:
    """Pointwise aggregated attention, one head, written out position by position."""
    torch.manual_seed(1)
    dim, max_len = 4, 5
    model = HSTUNet(n_items=6, max_len=max_len, dim=dim, n_layers=1, n_heads=1, dropout=0.0,
                    n_buckets=3, temperature=None, loss="ce", n_negatives=2,
                    logq=torch.zeros(6)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every term matters
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    seq = torch.tensor([[0, 3, 1, 5, 2]])
    hidden, _ = model(seq)

    w = {k: v.detach().double() for k, v in model.state_dict().items()}

    def ln(v: torch.Tensor, name: str) -> torch.Tensor:
        v = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
        return v * w[f"{name}.weight"] + w[f"{name}.bias"]

    def silu(v: torch.Tensor) -> torch.Tensor:
        return v / (1 + torch.exp(-v))

    x = [w["item_emb.weight"][i] * math.sqrt(dim) + w["pos_emb.weight"][t]
         for t, i in enumerate(seq[0].tolist())]
    uvqk = [silu(w["layers.0.f1.weight"] @ ln(xt, "layers.0.ln_in") + w["layers.0.f1.bias"])
            for xt in x]
    u, v, q, k = ([h[j * dim:(j + 1) * dim] for h in uvqk] for j in range(4))
    buckets = relative_buckets(max_len, 3)
    out = []
    for i in range(max_len):
        av = torch.zeros(dim, dtype=torch.float64)
        for j in range(i + 1):  # causal, and padding keys (item 0) are skipped
            if seq[0, j] == 0:
                continue
            rab = w["layers.0.rab.weight"][buckets[i, j], 0]
            av += silu(q[i] @ k[j] + rab) / max_len * v[j]  # no softmax anywhere
        gated = ln(av, "layers.0.ln_attn") * u[i]
        y = x[i] + w["layers.0.f2.weight"] @ gated + w["layers.0.f2.bias"]
        out.append(ln(y, "ln_f"))
    expected = torch.stack(out)[None].float()
    # Position 0 is padding: its state is never read.
    torch.testing.assert_close(hidden[:, 1:], expected[:, 1:], rtol=1e-4, atol=1e-4)


def test_attention_weights_are_not_normalised() -> None:
    """Two identical keys: a softmax would give each half the weight of a single key, so
    ``A V`` would not change; pointwise weights do not depend on the other keys, so it
    doubles."""
    model = net(n_layers=1)
    layer = model.layers[0]
    with torch.no_grad():  # make the two keys identical: no position information at all
        layer.rab.weight.zero_()
        model.pos_emb.weight.zero_()
    captured: list[torch.Tensor] = []
    hook = layer.ln_attn.register_forward_hook(lambda m, a, o: captured.append(a[0]))
    model(torch.tensor([[0, 0, 0, 0, 0, 3]]))
    model(torch.tensor([[0, 0, 0, 0, 3, 3]]))
    hook.remove()
    one, two = captured[0][0, -1], captured[1][0, -1]                  # A V at the last item
    assert one.abs().max() > 1e-6
    torch.testing.assert_close(two, 2 * one)


def test_relative_buckets() -> None:
    b = relative_buckets(200, 32)
    assert b.shape == (200, 200) and b.min() == 0 and b.max() == 31
    assert b[5, 5] == 0 and b[5, 0] == 5 and b[15, 0] == 15          # exact below 16
    assert b[0, 5] == 0                                              # future: masked anyway
    diag = torch.stack([b[d, 0] for d in range(200)])
    assert (diag.diff() >= 0).all()                                  # monotone in distance
    assert b[16, 0] == 16 and b[150, 0] == 30 and b[199, 0] == 31  # log-spaced
    # Toeplitz: the bucket depends on the distance only.
    assert torch.equal(b[10:, :-10].diagonal(), torch.full((190,), b[10, 0].item()))
    assert relative_buckets(4, 32).max() == 3                        # short: all exact


def test_cosine_scores_with_temperature() -> None:
    model = net(temperature=0.1)
    seq = torch.tensor([[0, 2, 3, 4, 5, 6]])
    scores = model.score(seq)
    assert scores.abs().max() <= 1 / 0.1 + 1e-4
    hidden, _ = model(seq)
    items = F.normalize(model.item_emb.weight[1:], dim=-1)
    torch.testing.assert_close(scores, hidden[:, -1] @ items.T)


@pytest.mark.parametrize("params", [{"loss": "sampled_softmax", "temperature": 0.05},
                                    {"loss": "bce"}])
def test_other_losses_train(params: dict) -> None:
    train = tiny_dataset().interactions
    model = HSTU(dim=8, max_len=5, n_negatives=4, **params,
                 train={"epochs": 2, "batch_size": 4, "device": "cpu", "progress": False})
    model.fit(train)
    assert all(np.isfinite([r["loss"] for r in model.train_result_.history]))
    assert torch.isfinite(model.score(train.histories())).all()


def test_learns_next_item_of_a_cycle() -> None:
    users = [f"u{u}" for u in range(24) for _ in range(6)]
    items = [f"i{(u + t) % 8}" for u in range(24) for t in range(6)]
    ds = Dataset.from_raw("cycle", pl.DataFrame({"user": users, "item": items}))
    model = HSTU(dim=16, max_len=6, n_layers=1, dropout=0.0,
                 train={"epochs": 40, "batch_size": 24, "lr": 1e-2, "device": "cpu",
                        "progress": False})
    model.fit(ds.interactions)
    raw = [[f"i{i}" for i in (2, 3, 4)], [f"i{i}" for i in (6, 7)]]
    hist = Histories.from_lists([list(ds.item_map.to_index(h)) for h in raw], ds.n_items)
    top = model.recommend(hist, k=1, exclude_seen=False).items[:, 0]
    assert ds.item_map.to_raw(top) == ["i5", "i0"]


def test_heads_must_divide_dim() -> None:
    with pytest.raises(ValueError, match="divide"):
        HSTUConfig(dim=10, n_heads=3)
