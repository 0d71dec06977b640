"""BERT4Rec: the contract, cloze masking and loss positions, [MASK] at inference, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from genrec.data.interactions import Dataset, Histories
from genrec.data.splits import split
from genrec.evaluation.protocol import Protocol
from genrec.models.base import FitContext
from genrec.models.bert4rec import BERT4Rec, BERT4RecConfig, BERT4RecNet, ClozeTask, cloze_mask
from genrec.runs.experiment import validation_callback
from genrec.testing import RecommenderContract, crashing, random_dataset, tiny_dataset
from genrec.training import TrainConfig, load_checkpoint


class TestBERT4Rec(RecommenderContract):
    model_cls = BERT4Rec
    params: ClassVar[dict[str, Any]] = {"dim": 16, "max_len": 6, "n_heads": 2,
              "train": TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False)}


def net(dropout: float = 0.0) -> BERT4RecNet:
    torch.manual_seed(0)
    return BERT4RecNet(n_items=10, max_len=6, dim=16, n_layers=2, n_heads=2, dropout=dropout,
                       loss="ce", n_negatives=4, logq=torch.zeros(10)).eval()


# -- masking ---------------------------------------------------------------------------------
def test_mask_rate_and_targets() -> None:
    torch.manual_seed(3)
    seq = torch.randint(1, 11, (400, 50))
    seq[:, :10] = 0                                                    # left padding
    inputs, targets = cloze_mask(seq, 0.2, mask_id=11)
    masked = inputs == 11
    assert not masked[:, :10].any(), "padding is never masked"
    assert abs(masked[:, 10:].float().mean().item() - 0.2) < 0.01
    assert torch.equal(targets[masked], seq[masked])                  # the original items
    assert (targets[~masked] == 0).all()                              # nothing else is a target
    assert torch.equal(inputs[~masked], seq[~masked])                 # the rest is unchanged


def test_a_row_without_a_mask_gets_its_last_item_masked() -> None:
    seq = torch.tensor([[0, 0, 4, 5, 6], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    inputs, targets = cloze_mask(seq, 1e-9, mask_id=11)
    assert torch.equal(inputs, torch.tensor([[0, 0, 4, 5, 11], [1, 2, 3, 4, 11],
                                             [0, 0, 0, 0, 0]]))
    assert torch.equal(targets, torch.tensor([[0, 0, 0, 0, 6], [0, 0, 0, 0, 5],
                                              [0, 0, 0, 0, 0]]))


def test_loss_is_cross_entropy_at_the_masked_positions_only() -> None:
    model = net()
    task = ClozeTask(model, mask_prob=0.4)
    seq = torch.tensor([[0, 2, 3, 4, 5, 6], [1, 9, 8, 7, 6, 5], [0, 0, 0, 3, 1, 2]])
    torch.manual_seed(5)
    inputs, targets = cloze_mask(seq, 0.4, model.mask_id)
    torch.manual_seed(5)
    hidden, loss = task(seq)                                           # the same masks
    keep = targets > 0
    assert 0 < keep.sum() < (seq > 0).sum()
    # Full softmax over the 10 items: neither padding nor [MASK] is a candidate.
    logits = hidden[keep] @ model.item_emb.weight[1:11].T             # (N, I)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets[keep] - 1))
    # Unmasked positions get no gradient from the loss.
    hidden, loss = model(inputs, targets)
    hidden.retain_grad()
    loss.backward()
    assert (hidden.grad[~keep] == 0).all() and (hidden.grad[keep] != 0).any()


# -- the network -------------------------------------------------------------------------------
def test_attention_is_bidirectional_and_ignores_padding() -> None:
    model = net()
    seq = torch.tensor([[0, 0, 3, 5, 2, 7]])
    changed = seq.clone()
    changed[0, -1] = 9
    h1, _ = model(seq)
    h2, _ = model(changed)
    assert not torch.allclose(h1[:, 2], h2[:, 2]), "earlier positions see later items"
    padded, _ = model(torch.tensor([[0, 0, 0, 4, 1, 8]]))
    short, _ = model(torch.tensor([[4, 1, 8]]))
    torch.testing.assert_close(padded[:, -3:], short, rtol=1e-6, atol=1e-6)


def test_scoring_appends_mask_after_the_truncated_history() -> None:
    train = tiny_dataset().interactions
    model = BERT4Rec(dim=8, max_len=4, train={"epochs": 1, "device": "cpu",
                                             "progress": False}).fit(train)
    seen: list[torch.Tensor] = []
    hook = model.net_.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    hist = train.histories()
    scores = model.score(hist)
    hook.remove()
    expected_input = torch.cat([hist.padded(3) + 0, torch.full((len(hist), 1), 11)], dim=1)
    assert torch.equal(seen[0], expected_input)                       # last 3 items + [MASK]
    hidden, _ = model.net_(expected_input)
    torch.testing.assert_close(scores, hidden[:, -1] @ model.net_.item_emb.weight[1:11].T)
    assert scores.shape == (len(hist), 10)


# -- training ----------------------------------------------------------------------------------
def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    sp = split(random_dataset(n_users=30, n_items=20, min_len=3, max_len=10, seed=1))
    valid = sp.valid_set()
    validate = validation_callback(valid, Protocol())
    params = {"dim": 16, "max_len": 8, "n_layers": 1, "n_heads": 2, "dropout": 0.2,
              "train": {"epochs": 3, "batch_size": 8, "device": "cpu", "progress": False}}
    straight = BERT4Rec(**params).fit(
        sp.train, FitContext(validate=validate, checkpoint_dir=tmp_path / "straight"))

    with pytest.raises(KeyboardInterrupt):
        BERT4Rec(**params).fit(sp.train, FitContext(validate=crashing(validate, 2),
                                                    checkpoint_dir=tmp_path / "crashed"))
    assert load_checkpoint(tmp_path / "crashed").meta["epoch"] == 1

    torch.manual_seed(12345)  # the resumed run must not depend on the global RNG it finds
    resumed = BERT4Rec(**params)
    resumed.fit(sp.train, FitContext(validate=validate, checkpoint_dir=tmp_path / "crashed",
                                     resume=True))
    for key, value in straight.net_.state_dict().items():
        assert torch.equal(resumed.net_.state_dict()[key], value), key
    losses = [r["loss"] for r in straight.train_result_.history]
    assert [r["loss"] for r in resumed.train_result_.history] == losses
    assert torch.equal(resumed.score(valid.histories), straight.score(valid.histories))


def test_learns_next_item_of_a_cycle() -> None:
    # Every user walks the cycle 0 -> 1 -> ... -> 7 -> 0 from a different start.
    users = [f"u{u}" for u in range(24) for _ in range(6)]
    items = [f"i{(u + t) % 8}" for u in range(24) for t in range(6)]
    ds = Dataset.from_raw("cycle", pl.DataFrame({"user": users, "item": items}))
    model = BERT4Rec(dim=16, max_len=6, n_layers=1, dropout=0.0, mask_prob=0.3,
                     train={"epochs": 60, "batch_size": 24, "lr": 1e-2, "device": "cpu",
                            "progress": False})
    model.fit(ds.interactions)
    # Full-length histories: unlike causal training, the cloze task never shows the model a
    # short, mostly padded context, so that is not what it is asked here.
    raw = [[f"i{i}" for i in (0, 1, 2, 3, 4)], [f"i{i % 8}" for i in (3, 4, 5, 6, 7)]]
    hist = Histories.from_lists([list(ds.item_map.to_index(h)) for h in raw], ds.n_items)
    top = model.recommend(hist, k=1, exclude_seen=False).items[:, 0]
    assert ds.item_map.to_raw(top) == ["i5", "i0"]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divide"):
        BERT4RecConfig(dim=10, n_heads=3)
    with pytest.raises(ValueError, match="max_len"):
        BERT4RecConfig(max_len=1)
