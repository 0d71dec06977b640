"""SASRec's sparse item-table gradients (``sparse_embeddings``): only the rows a step read are
updated, ``auto`` keeps small catalogues dense and bit-identical, ce refuses, resuming works
with the two optimizers, and on ML-100K it learns as well as the dense update."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from genrec.data.interactions import Interactions
from genrec.data.recipes import load_dataset
from genrec.data.splits import split
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.protocol import Protocol
from genrec.models._sequential import SPARSE_AUTO_MIN_ITEMS
from genrec.models.base import FitContext
from genrec.models.pop import Popularity
from genrec.models.sasrec import SASRec, SASRecConfig
from genrec.testing import crashing, random_dataset, tiny_dataset
from genrec.training.checkpoint import load_checkpoint

SMALL = {"dim": 16, "max_len": 8, "n_layers": 1, "n_heads": 2, "loss": "sampled_softmax",
         "n_negatives": 8}


def _train(epochs: int, batch_size: int = 8, **kw: Any) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": batch_size, "device": "cpu", "progress": False,
            "patience": None, **kw}


def _steps(model: SASRec, train: Interactions) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fit ``model`` and return, per optimizer step, the item-table weights just before the
    step and the rows its gradient holds (a post-accumulate hook on the table)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    build = model._build_net

    def hooked(counts: np.ndarray | None) -> Any:
        net = build(counts)
        weight = net.item_emb.weight

        def record(p: torch.Tensor) -> None:
            g = p.grad
            rows = (g.coalesce().indices()[0] if g.is_sparse
                    else torch.nonzero(g.abs().sum(1)).flatten())
            seen.append((p.detach().clone(), torch.unique(rows)))

        weight.register_post_accumulate_grad_hook(record)
        return net

    model._build_net = hooked  # type: ignore[method-assign]
    model.fit(train, FitContext(progress=False))
    seen.append((model.net_.item_emb.weight.detach().clone(), torch.empty(0, dtype=torch.long)))
    return seen


def _changed_outside_read_rows(seen: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Rows that some step changed although its gradient did not hold them."""
    bad = 0
    for (before, rows), (after, _) in itertools.pairwise(seen):
        changed = torch.nonzero((before != after).any(1)).flatten()
        bad += int((~torch.isin(changed, rows)).sum())
    return bad


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sparse_step_updates_only_the_rows_it_read(weight_decay: float) -> None:
    train = random_dataset(n_users=40, n_items=300, min_len=3, max_len=10, seed=3).interactions
    model = SASRec(**SMALL, sparse_embeddings=True,
                   train=_train(3, weight_decay=weight_decay))
    seen = _steps(model, train)
    assert model.net_.sparse and len(seen) > 10
    # The gradient is sparse and small: the batch's items, its targets and the negatives.
    n_rows = [len(rows) for _, rows in seen[:-1]]
    assert max(n_rows) <= 8 * 8 + 8 + 8 and min(n_rows) > 0
    assert _changed_outside_read_rows(seen) == 0
    # Rows never read in any step are bit-identical to their initial values.
    read = torch.unique(torch.cat([rows for _, rows in seen]))
    never = torch.ones(301, dtype=torch.bool)
    never[read] = False
    assert never.sum() > 0
    assert torch.equal(seen[0][0][never], seen[-1][0][never])
    # Contrast: the dense AdamW keeps moving rows by momentum (and decay) after they were read.
    dense = SASRec(**SMALL, sparse_embeddings=False, train=_train(3, weight_decay=weight_decay))
    assert _changed_outside_read_rows(_steps(dense, train)) > 0


def test_sparse_gradient_is_sparse_and_equals_the_dense_one() -> None:
    train = tiny_dataset().interactions
    grads = {}
    for sparse in (False, True):
        model = SASRec(**SMALL, sparse_embeddings=sparse, train=_train(1))
        model.n_items_ = train.n_items
        torch.manual_seed(0)
        net = model._build_net(train.item_counts()).train()
        seq = train.histories().padded(9)
        torch.manual_seed(1)  # same dropout and negatives
        _, loss = net(seq[:, :-1], seq[:, 1:])
        loss.backward()
        grads[sparse] = net.item_emb.weight.grad
    assert grads[True].is_sparse and not grads[False].is_sparse
    torch.testing.assert_close(grads[True].to_dense(), grads[False], rtol=1e-5, atol=1e-7)


def test_auto_keeps_small_catalogues_dense_and_bit_identical() -> None:
    train = tiny_dataset().interactions
    fits = {s: SASRec(**SMALL, sparse_embeddings=s, train=_train(2)).fit(train)
            for s in ("auto", False, True)}
    assert not fits["auto"].net_.sparse and fits[True].net_.sparse
    hist = train.histories()
    assert torch.equal(fits["auto"].score(hist), fits[False].score(hist))
    assert not torch.equal(fits[True].score(hist), fits[False].score(hist))


def test_auto_turns_sparse_on_for_large_catalogues_with_a_sampled_loss() -> None:
    n_items = SPARSE_AUTO_MIN_ITEMS
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"user": np.repeat(np.arange(16), 5),
                          "item": rng.integers(0, n_items, 80),
                          "timestamp": np.tile(np.arange(5), 16)})
    train = Interactions(frame.cast({"user": pl.Int32, "item": pl.Int32}), 16, n_items)
    for loss, sparse in (("sampled_softmax", True), ("bpr", True), ("ce", False)):
        model = SASRec(**(SMALL | {"loss": loss}), train=_train(1, batch_size=16)).fit(train)
        assert model.net_.sparse is sparse, loss
    small = Interactions(frame.cast({"user": pl.Int32, "item": pl.Int32}), 16, n_items + 1)
    assert SASRec(**SMALL, train=_train(1, batch_size=16)).fit(small).net_.sparse


def test_full_softmax_refuses_sparse_true() -> None:
    with pytest.raises(ValueError, match="sparse_embeddings: true needs a sampled loss"):
        SASRecConfig(loss="ce", sparse_embeddings=True)
    with pytest.raises(ValueError, match="needs an item embedding table"):
        SASRecConfig(loss="sampled_softmax", item_text="adaptor", sparse_embeddings=True)
    assert SASRecConfig(loss="ce").sparse_embeddings == "auto"  # auto stays dense with ce


def test_torchrun_falls_back_to_dense(monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    model = SASRec(**SMALL, sparse_embeddings=True)
    model.n_items_ = 10
    with caplog.at_level("WARNING"):
        net = model._build_net(np.ones(10))
    assert not net.sparse and "not supported under torchrun" in caplog.text


def test_resume_with_the_sparse_optimizer_equals_uninterrupted_run(tmp_path: Path) -> None:
    sp = split(random_dataset(n_users=30, n_items=60, min_len=3, max_len=10, seed=1))
    valid = sp.valid_set()
    proto = Protocol()

    def validate(model: Any) -> float:
        return evaluate(model, valid, proto).summary()[proto.valid_metric]

    params = SMALL | {"dropout": 0.2, "sparse_embeddings": True,
                      "train": _train(3, weight_decay=0.05)}
    straight = SASRec(**params).fit(
        sp.train, FitContext(validate=validate, checkpoint_dir=tmp_path / "straight",
                             progress=False))
    with pytest.raises(KeyboardInterrupt):
        SASRec(**params).fit(sp.train, FitContext(validate=crashing(validate, 2), progress=False,
                                                  checkpoint_dir=tmp_path / "crashed"))
    ckpt = load_checkpoint(tmp_path / "crashed")
    assert ckpt.meta["epoch"] == 1
    assert len(ckpt.optimizer["param_groups"]) == 3  # AdamW's two groups + the lazy Adam's
    torch.manual_seed(12345)
    resumed = SASRec(**params).fit(sp.train, FitContext(
        validate=validate, checkpoint_dir=tmp_path / "crashed", resume=True, progress=False))
    assert resumed.net_.sparse
    for key, value in straight.net_.state_dict().items():
        assert torch.equal(resumed.net_.state_dict()[key], value), key
    assert ([r["loss"] for r in resumed.train_result_.history]
            == [r["loss"] for r in straight.train_result_.history])
    # A dense run may not resume the sparse run's checkpoint (another experiment).
    with pytest.raises(ValueError, match="sparse_embeddings"):
        SASRec(**(params | {"sparse_embeddings": False})).fit(sp.train, FitContext(
            validate=validate, checkpoint_dir=tmp_path / "crashed", resume=True,
            progress=False))


@pytest.mark.slow
def test_ml100k_sparse_learns_as_well_as_dense(data_dir: Path) -> None:
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    sp = split(ds)
    valid = sp.valid_set()
    proto = Protocol()
    ndcg = {}
    for sparse in (False, True):
        model = SASRec(dim=32, max_len=50, n_layers=1, n_heads=1, dropout=0.2,
                       loss="sampled_softmax", n_negatives=256, sparse_embeddings=sparse,
                       train=_train(20, batch_size=64, lr=3e-3))
        model.fit(sp.train, FitContext(seed=0, progress=False))
        assert model.net_.sparse is sparse
        ndcg[sparse] = evaluate(model, valid, proto).summary()[proto.valid_metric]
    pop = evaluate(Popularity().fit(sp.train), valid, proto).summary()[proto.valid_metric]
    # Measured: dense 0.0789, sparse 0.0822, Pop 0.0342 (valid NDCG@10, 20 epochs).
    assert ndcg[True] > 2 * pop, (ndcg, pop)
    assert abs(ndcg[True] - ndcg[False]) < 0.15 * ndcg[False], (ndcg, pop)
