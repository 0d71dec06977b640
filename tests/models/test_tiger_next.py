"""TIGER's second-generation switches on ML-100K: MTGRec multi-identifier pre-training and
its curriculum, LETTER-style tokenizer inside TIGER, and cold-item fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec.data.interactions import Interactions
from genrec.data.recipes import load_dataset
from genrec.data.splits import SplitConfig, split
from genrec.models.base import FitContext
from genrec.models.mtgrec import MultiIDConfig, MultiIDTask, curriculum_update, probe_examples
from genrec.models.tiger import TIGER, TIGERConfig, training_examples
from genrec.semantic_ids import RQKMeansConfig
from genrec.training import TrainConfig

TRAIN = TrainConfig(epochs=1, batch_size=256, lr=3e-3, device="cpu", progress=False)
SMALL = {"item_vectors": "text", "text": {"encoder": "hashing:64", "cache": False}, "dim": 32,
         "n_heads": 2, "ff_dim": 64, "n_layers": 1, "max_len": 5, "beam_size": 20,
         "exclude_history": True, "train": TRAIN,
         "tokenizer": RQKMeansConfig(n_levels=2, codebook_size=16, n_iter=10)}



@pytest.fixture(scope="module")
def ml100k(data_dir: Path):
    """ML-100K under the cold-start split (10% of items never in training); the training
    part cut to 200 users so that fits take seconds."""
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    sp = split(ds, SplitConfig(cold_items=0.1))
    train = Interactions(sp.train.frame.filter(pl.col("user") < 200), ds.n_users, ds.n_items)
    return ds, sp, train


def test_curriculum_weights_stay_on_the_simplex_and_follow_influence() -> None:
    w = torch.full((3,), 1 / 3)
    new = curriculum_update(w, torch.tensor([2.0, 0.0, -2.0]), step_size=1.0, floor=0.1)
    assert torch.isclose(new.sum(), torch.tensor(1.0)) and (new > 0).all()
    assert new[0] > w[0] > new[2] and new[0] > new[1] > new[2]
    for _ in range(50):                                # repeated: the floor keeps every group
        new = curriculum_update(new, torch.tensor([2.0, 0.0, -2.0]), 1.0, 0.1)
    assert new.min() >= 0.1 / 3 - 1e-6 and torch.isclose(new.sum(), torch.tensor(1.0))
    # Equal influences leave the weights alone (up to the floor's pull to uniform).
    same = curriculum_update(torch.tensor([0.5, 0.3, 0.2]), torch.ones(3), 1.0, 0.0)
    torch.testing.assert_close(same, torch.tensor([0.5, 0.3, 0.2]))


@pytest.mark.slow
def test_multi_identifier_pipeline(ml100k, tmp_path: Path) -> None:
    ds, _, train = ml100k
    cfg = SMALL | {"multi_id": MultiIDConfig(groups=3, pretrain_epochs=1, update_every=10,
                                             probe_size=64)}
    small = Interactions(train.frame.filter(pl.col("user") < 80), ds.n_users, ds.n_items)
    model = TIGER(**cfg).fit(small, FitContext(items=ds.items, progress=False))
    # Pre-training then fine-tuning; the curriculum ran and its weights are a distribution.
    assert len(model.pretrain_result_.history) == 1 and len(model.train_result_.history) == 1
    assert model.curriculum_ and all(abs(sum(r["weights"]) - 1) < 1e-5
                                     for r in model.curriculum_)
    # The network's vocabulary covers every group; decoding uses group 0 (= plain TIGER's).
    plain = TIGER(**SMALL).fit_semantic_ids(train, FitContext(items=ds.items))
    np.testing.assert_array_equal(model.codes_, plain.codes_)
    assert all(a >= b for a, b in zip(model.net_vocab_, model.semantic_ids_.vocab_sizes_,
                                      strict=True))
    hist = train.histories().slice(0, 50)
    res = model.generate(hist)
    assert ((res.items >= 0) & (res.items < ds.n_items)).all()
    model.save(tmp_path / "m")
    back = TIGER.load(tmp_path / "m")
    torch.testing.assert_close(back.score(hist), model.score(hist))


def test_sequences_are_tokenized_per_group_and_influence_prefers_the_probe_identifier(
        ml100k) -> None:
    ds, _, train = ml100k
    model = TIGER(**SMALL).fit_semantic_ids(train, FitContext(items=ds.items))
    torch.manual_seed(0)
    model.net_vocab_ = list(model.semantic_ids_.vocab_sizes_)
    net = model._build_net()
    codes0 = torch.from_numpy(model.codes_)
    # Group 1: group 0 again; group 2: the same codes dealt to other items (an identifier
    # unrelated to the data and to the probe, which is tokenized with group 0).
    perm = torch.from_numpy(np.random.default_rng(0).permutation(ds.n_items))
    codes = torch.stack([codes0, codes0, codes0[perm]])               # (3, I, C)
    seq, target = training_examples(train, 5)
    task = MultiIDTask(net, codes, MultiIDConfig(groups=3), probe_examples(train, 5, 128))
    for g in (0, 2):                                    # each row's history in group g's codes
        tokens = task.group_tokens[g][seq[:64]]                        # (64, M, C)
        real = seq[:64] > 0
        torch.testing.assert_close(tokens[real], codes[g][seq[:64][real] - 1] + net.offsets)
        assert (tokens[~real] == 0).all()
    task.eval()                                         # no dropout: gradients are exact
    infl = task.influences(seq[:512], target[:512])
    torch.testing.assert_close(infl[0], infl[1])       # same data, same influence
    assert infl[0] > infl[2], infl                     # the probe's identifier helps it more
    w = curriculum_update(task.weights, infl, 1.0, 0.1)
    assert w[0] > w[2] and torch.isclose(w.sum(), torch.tensor(1.0))


@pytest.mark.slow
def test_cold_fusion_returns_catalogue_items_including_cold_ones(ml100k) -> None:
    ds, sp, train = ml100k
    model = TIGER(**SMALL).fit(train, FitContext(items=ds.items, progress=False))
    assert model.cold_[sp.cold_items].all()             # held-out items have no interaction
    hist = sp.test_set().histories.slice(0, 100)
    fused = TIGER(**(SMALL | {"cold_items": "prefix", "cold_weight": 0.5}))
    fused.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    for m in (model, fused):
        rec = m.recommend(hist, k=10)
        assert ((rec.items >= 0) & (rec.items < ds.n_items)).all()   # 0 invalid items
    plain_cold = np.isin(model.recommend(hist, k=10).items, sp.cold_items).sum()
    fused_cold = np.isin(fused.recommend(hist, k=10).items, sp.cold_items).sum()
    assert fused_cold > plain_cold and fused_cold > 0
    # Fusion only adds items or raises a cold beam item's score; warm items keep theirs.
    a, b = model.score(hist), fused.score(hist)
    beam = torch.isfinite(a)
    assert (b[beam] >= a[beam]).all()
    warm = beam & ~torch.from_numpy(model.cold_)[None]
    torch.testing.assert_close(b[warm], a[warm])
    with pytest.raises(ValueError, match="decoding: beam"):
        TIGERConfig(cold_items="prefix", decoding="exact")


@pytest.mark.slow
def test_letter_tokenizer_inside_tiger(ml100k) -> None:
    ds, _, train = ml100k
    tok = {"kind": "letter", "n_levels": 2, "codebook_size": 16, "latent_dim": 16,
           "hidden_dims": [32], "epochs": 2, "batch_size": 512}
    model = TIGER(**(SMALL | {"tokenizer": tok, "collaborative_dim": 16}))
    model.fit_semantic_ids(train, FitContext(items=ds.items))
    assert model.codes_.shape == (ds.n_items, 3)
    assert {"align", "balance"} <= set(model.tokenizer_.history_[-1])
    with pytest.raises(ValueError, match="semantic_ids"):
        TIGERConfig(multi_id={"groups": 2}, semantic_ids="somewhere")


def test_exclude_history_holds_for_cold_fused_items() -> None:
    # The cold-prefix search does not ban history items; fused cold items of the history
    # once kept finite scores although exclude_history promises -inf.
    from genrec.data.interactions import Histories
    from genrec.testing import random_dataset

    ds = random_dataset(n_users=40, n_items=30, seed=2)
    n_items = 36  # items 30..35 never occur in training: cold, reachable through their text
    train = Interactions(ds.interactions.frame, ds.n_users, n_items)
    items = pl.DataFrame({"item": np.arange(n_items),
                          "title": [f"thing {i % 7} kind {i % 5} number {i}"
                                    for i in range(n_items)]})
    m = TIGER(item_vectors="text", text={"encoder": "hashing:32", "cache": False}, dim=16,
              n_heads=2, ff_dim=32, n_layers=1, max_len=5, beam_size=8,
              train={"epochs": 1, "device": "cpu", "progress": False, "batch_size": 32},
              tokenizer={"kind": "rqkmeans", "n_levels": 2, "codebook_size": 4},
              cold_items="prefix", exclude_history=True).fit(
                  train, FitContext(items=items, progress=False))
    cold = np.flatnonzero(m.cold_).tolist()
    assert cold
    history = [0, 1, *cold]
    s = m.score(Histories.from_lists([history], n_items))
    assert torch.isinf(s[0, history]).all() and torch.isfinite(s[0]).any()
